//! What a bulk import compares the run with: stored rows as each backend
//! reads them (borrowed, no allocation per row), and the helpers of the
//! comparison.

/// A phone row as the comparison reads it, borrowed from the backend's
/// buffer: no allocation per row or cell.
pub(crate) struct StoredPhone<'a> {
    pub id: crate::model::Id,
    pub mac: &'a str,
    pub tenant_id: crate::model::Id,
    pub family: &'a str,
    pub model: Option<&'a str>,
    pub label: Option<&'a str>,
    pub variables: &'a str,
    pub http_user: Option<&'a str>,
    pub http_password: Option<&'a str>,
}

/// What the comparison reads of phones, in [`StoredPhone`]'s order.
pub(crate) const PHONE_READ: &str =
    "id, mac, tenant_id, family, model, label, variables, http_user, http_password";

/// A line row as the comparison reads it (see [`StoredPhone`]).
pub(crate) struct StoredLine<'a> {
    pub id: crate::model::Id,
    pub phone_id: crate::model::Id,
    pub position: i32,
    pub extension: &'a str,
    pub display_name: &'a str,
    pub auth_user: &'a str,
    pub password: Option<&'a str>,
    pub registrar: &'a str,
    pub proxy: Option<&'a str>,
    pub settings: &'a str,
}

/// What the comparison reads of lines, in [`StoredLine`]'s order.
pub(crate) const LINE_READ: &str =
    "id, phone_id, position, extension, display_name, auth_user, password, registrar, proxy, settings";

/// An index of the run built on first use (`Send`, unlike `LazyCell`
/// behind a reference): a read in the run's own order never needs it.
pub(crate) struct Lazy<K, F> {
    map: Option<foldhash::HashMap<K, usize>>,
    build: Option<F>,
}

impl<K, F: FnOnce() -> foldhash::HashMap<K, usize>> Lazy<K, F> {
    pub(crate) fn new(build: F) -> Self {
        Lazy {
            map: None,
            build: Some(build),
        }
    }

    pub(crate) fn get(&mut self) -> &foldhash::HashMap<K, usize> {
        let build = &mut self.build;
        self.map
            .get_or_insert_with(|| (build.take().expect("built once"))())
    }
}

/// Whether a stored secret is the one given (both absent, or the same seal).
pub(crate) fn same_secret(
    key: &crate::crypto::SecretKey,
    purpose: crate::crypto::Purpose,
    given: Option<&str>,
    stored: Option<&str>,
) -> bool {
    match (given, stored) {
        (None, None) => true,
        (Some(given), Some(stored)) => key.seals_to(purpose, given, stored),
        _ => false,
    }
}

/// The run's index of the phone with stored MAC `mac`: first the guess
/// (the phone at `next`, then the one after), then the map. `None` for a
/// phone not in the run.
pub(crate) fn find<F: FnOnce() -> foldhash::HashMap<crate::model::Mac, usize>>(
    phones: &[&crate::store::PhoneInput],
    macs: &mut Lazy<crate::model::Mac, F>,
    next: usize,
    mac: &str,
) -> Option<usize> {
    let mac: crate::model::Mac = mac.parse().ok()?;
    for guess in [next, next + 1] {
        if phones.get(guess).is_some_and(|p| p.mac == mac) {
            return Some(guess);
        }
    }
    macs.get().get(&mac).copied()
}

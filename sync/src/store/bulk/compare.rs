//! What a bulk import compares the run with: stored rows as each backend
//! reads them (borrowed, no allocation per row), and the helpers of the
//! comparison.

/// A phone row as the comparison reads it, borrowed from the backend's
/// buffer: no allocation per row or cell. Text stays bytes: it is only
/// compared with the run's, so checking it as UTF-8 (a third of the read's
/// decoding) buys nothing; a stored value that is not UTF-8 differs from
/// every run's and is written anew.
pub(crate) struct StoredPhone<'a> {
    pub id: crate::model::Id,
    pub mac: &'a [u8],
    pub tenant_id: crate::model::Id,
    pub family: &'a [u8],
    pub model: Option<&'a [u8]>,
    pub label: Option<&'a [u8]>,
    pub variables: &'a [u8],
    pub http_user: Option<&'a [u8]>,
    pub http_password: Option<&'a [u8]>,
}

/// What the comparison reads of phones, in [`StoredPhone`]'s order.
pub(crate) const PHONE_READ: &str =
    "id, mac, tenant_id, family, model, label, variables, http_user, http_password";

/// A line row as the comparison reads it (see [`StoredPhone`]).
pub(crate) struct StoredLine<'a> {
    pub id: crate::model::Id,
    pub phone_id: crate::model::Id,
    pub position: i32,
    pub extension: &'a [u8],
    pub display_name: &'a [u8],
    pub auth_user: &'a [u8],
    pub password: Option<&'a [u8]>,
    pub registrar: &'a [u8],
    pub proxy: Option<&'a [u8]>,
    pub settings: &'a [u8],
}

/// What the comparison reads of lines, in [`StoredLine`]'s order.
pub(crate) const LINE_READ: &str =
    "id, phone_id, position, extension, display_name, auth_user, password, registrar, proxy, settings";

/// What a backend's read of the stored rows hands the comparison
/// (`comparison.rs`), in this order: every phone, then `PhonesRead`, then
/// every line. A backend that reads both tables at once says `Beside`
/// first, and then offers lines while phones still come. The comparison
/// answers `false` for a row it does not take yet: a line whose phone may
/// come yet, or a phone too far ahead of the lines. The backend offers
/// that row again once the other stream has moved on, and after
/// `PhonesRead` every row is taken; the comparison never refuses both a
/// phone and a line at the same time.
pub(crate) enum Stored<'a> {
    Beside,
    Phone(StoredPhone<'a>),
    PhonesRead,
    Line(StoredLine<'a>),
}

/// A backend's check that the comparison took a row it had to (see
/// [`Stored`]): every row once phones are read, and never none of both.
pub(crate) fn taken(all: bool) -> Result<(), crate::error::SyncError> {
    all.then_some(()).ok_or_else(|| {
        crate::error::SyncError::Invalid(
            "bulk import: the comparison left a stored row it had to take".into(),
        )
    })
}

/// The run's phones in the order of a key, built on first use: a read in
/// the run's own order never needs it. 4 bytes a phone, where a hash map
/// of the keys took 16 to 32 (an import's memory is counted against its
/// file's size).
#[derive(Default)]
pub(crate) struct Sorted {
    order: Option<Vec<u32>>,
}

impl Sorted {
    /// The phone whose key is `key`, among `0..n`; `key_of` is `None` for
    /// phones without one. Keys are distinct.
    pub(crate) fn find<K: Ord>(
        &mut self,
        n: usize,
        key_of: impl Fn(usize) -> Option<K>,
        key: &K,
    ) -> Option<usize> {
        let order = self.order.get_or_insert_with(|| {
            let mut order: Vec<u32> = (0..n as u32)
                .filter(|&i| key_of(i as usize).is_some())
                .collect();
            order.sort_unstable_by_key(|&i| key_of(i as usize));
            order
        });
        order
            .binary_search_by(|&i| key_of(i as usize).as_ref().cmp(&Some(key)))
            .ok()
            .map(|at| order[at] as usize)
    }
}

/// Whether a stored secret is the one given (both absent, or the same seal).
pub(crate) fn same_secret(
    key: &crate::crypto::SecretKey,
    purpose: crate::crypto::Purpose,
    given: Option<&str>,
    stored: Option<&[u8]>,
) -> bool {
    match (given, stored.map(std::str::from_utf8)) {
        (None, None) => true,
        (Some(given), Some(Ok(stored))) => key.seals_to(purpose, given, stored),
        _ => false,
    }
}

/// The run's index of the phone with stored MAC `mac`: first the guess
/// (the phone at `next`, then the one after), then the sorted index.
/// `None` for a phone not in the run.
pub(crate) fn find(
    phones: &crate::store::PhoneBatch,
    macs: &mut Sorted,
    next: usize,
    mac: &[u8],
) -> Option<usize> {
    let mac: crate::model::Mac = std::str::from_utf8(mac).ok()?.parse().ok()?;
    for guess in [next, next + 1] {
        if guess < phones.len() && phones.mac(guess) == mac {
            return Some(guess);
        }
    }
    macs.find(phones.len(), |i| Some(phones.mac(i)), &mac)
}

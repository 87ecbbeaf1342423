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
/// the run's own order never needs it. Memory is counted against the
/// file's size, and time against a file in any order, so the index is the
/// least that serves:
/// - keys already rising through the run (ids a first import gave, MACs of
///   a file in MAC order): nothing, or the phones that have a key (4 bytes
///   each), searched in place;
/// - otherwise each phone's key beside its index (12 bytes a phone for a
///   MAC, 16 for an id), sorted. Sorting bare indexes by a key looked up in
///   the run missed the cache on every comparison: 0.2 s for a million
///   phones in a shuffled file, against ~40 ms for the pairs.
pub(crate) struct Sorted<K> {
    order: Option<Order<K>>,
}

enum Order<K> {
    /// Every phone has a key, rising with its index.
    Run,
    /// The phones with a key, whose keys rise in this order.
    Listed(Vec<u32>),
    Pairs(Vec<(K, u32)>),
}

impl<K> Default for Sorted<K> {
    fn default() -> Self {
        Sorted { order: None }
    }
}

/// The position among `len` sorted keys holding `key`. A key missing
/// sorts first (the index holds only phones with one, so it never is).
fn search<K: Ord>(len: usize, key_at: impl Fn(usize) -> Option<K>, key: &K) -> Option<usize> {
    let (mut low, mut high) = (0, len);
    while low < high {
        let mid = low + (high - low) / 2;
        match key_at(mid).as_ref().cmp(&Some(key)) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

impl<K> Sorted<K> {
    /// Whether the index was needed.
    #[cfg(test)]
    pub(crate) fn is_built(&self) -> bool {
        self.order.is_some()
    }
}

impl<K: Ord + Copy> Sorted<K> {
    /// The phone whose key is `key`, among `0..n`; `key_of` is `None` for
    /// phones without one. Keys are distinct.
    pub(crate) fn find(
        &mut self,
        n: usize,
        key_of: impl Fn(usize) -> Option<K>,
        key: &K,
    ) -> Option<usize> {
        let order = self.order.get_or_insert_with(|| {
            let mut keyed = (0..n).filter_map(|i| key_of(i).map(|k| (k, i)));
            let rising = keyed.next().is_none_or(|first| {
                keyed
                    .try_fold(first.0, |last, (k, _)| (last < k).then_some(k))
                    .is_some()
            });
            let count = (0..n).filter(|&i| key_of(i).is_some()).count();
            match (rising, count == n) {
                (true, true) => Order::Run,
                (true, false) => Order::Listed(
                    (0..n as u32)
                        .filter(|&i| key_of(i as usize).is_some())
                        .collect(),
                ),
                (false, _) => {
                    let mut pairs: Vec<(K, u32)> = (0..n)
                        .filter_map(|i| key_of(i).map(|k| (k, i as u32)))
                        .collect();
                    pairs.sort_unstable_by_key(|pair| pair.0);
                    Order::Pairs(pairs)
                }
            }
        });
        match order {
            Order::Run => search(n, &key_of, key),
            Order::Listed(list) => {
                search(list.len(), |at| key_of(list[at] as usize), key).map(|at| list[at] as usize)
            }
            Order::Pairs(pairs) => {
                search(pairs.len(), |at| Some(pairs[at].0), key).map(|at| pairs[at].1 as usize)
            }
        }
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

/// The run's index of the phone with stored MAC `mac`: first the guesses
/// (the phone at `next`, the one after, then `by_id`), then the sorted
/// index. `None` for a phone not in the run.
pub(crate) fn find(
    phones: &crate::store::PhoneBatch,
    macs: &mut Sorted<crate::model::Mac>,
    next: usize,
    by_id: Option<usize>,
    mac: &[u8],
) -> Option<usize> {
    // Stored MACs are written as `Mac::hex` writes them: a guess compares
    // text, and only a row out of place pays for a parse.
    for guess in [Some(next), Some(next + 1), by_id].into_iter().flatten() {
        if guess < phones.len() && phones.mac(guess).hex() == mac {
            return Some(guess);
        }
    }
    let mac: crate::model::Mac = std::str::from_utf8(mac).ok()?.parse().ok()?;
    macs.find(phones.len(), |i| Some(phones.mac(i)), &mac)
}

#[cfg(test)]
mod tests {
    use super::Sorted;

    /// Every way the index can be built finds each key where it is, and
    /// nothing for a key the run does not hold.
    #[test]
    fn sorted_finds_keys_in_any_order() {
        let rising: Vec<Option<i64>> = (0..100).map(|i| Some(10 * i)).collect();
        let with_gaps: Vec<Option<i64>> =
            (0..100).map(|i| (i % 3 != 0).then_some(10 * i)).collect();
        let shuffled: Vec<Option<i64>> = (0..100i64)
            .map(|i| (i % 7 != 0).then_some((i * 37) % 101))
            .collect();
        for keys in [rising, with_gaps, shuffled] {
            let mut index = Sorted::default();
            for (i, key) in keys.iter().enumerate() {
                if let Some(key) = key {
                    assert_eq!(
                        index.find(keys.len(), |j| keys[j], key),
                        Some(i),
                        "{keys:?}"
                    );
                }
            }
            for absent in [-1, 1_001, 1_000_000] {
                assert_eq!(index.find(keys.len(), |j| keys[j], &absent), None);
            }
        }
    }
}

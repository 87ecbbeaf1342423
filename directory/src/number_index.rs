//! Numbers to whoever has them: exact E.164, and by their last digits
//! (`normalize::suffix`) where a number's own reading cannot be trusted to
//! be whole. Shared by the local directory and the LDAP mirror
//! (`crate::mirror`), so both match a number the same way.

use std::cmp::Ordering;

use crate::cow_map::CowMap;
use crate::normalize::{is_whole, suffix};

#[derive(Clone)]
pub struct NumberIndex<T> {
    suffix_len: usize,
    by_e164: CowMap<Box<str>, Vec<T>>,
    /// Every number by its last digits: for a caller whose own number
    /// has no whole reading (a local number without its area code).
    by_suffix: CowMap<Box<str>, Vec<T>>,
    /// Only numbers with no whole reading, by their last digits: for a
    /// caller whose number is whole. A whole directory number answers
    /// such a caller by its own number only, so `+44 20 7010 1234` never
    /// answers `+1 555 010 1234`, which ends in the same seven digits.
    by_loose_suffix: CowMap<Box<str>, Vec<T>>,
}

/// The keys a number is filed under.
struct Keys<'a> {
    suffix: Option<String>,
    /// It has no whole reading: filed by its last digits for every caller.
    loose: bool,
    e164: Option<&'a str>,
}

impl<T: Clone> NumberIndex<T> {
    pub fn new(suffix_len: usize) -> NumberIndex<T> {
        NumberIndex::with_capacity(suffix_len, 0)
    }

    /// An index sized for about `numbers` numbers.
    pub fn with_capacity(suffix_len: usize, numbers: usize) -> NumberIndex<T> {
        NumberIndex {
            suffix_len: suffix_len.max(4),
            by_e164: CowMap::with_capacity(numbers),
            by_suffix: CowMap::with_capacity(numbers),
            // Most numbers are whole: a small map, resharded as it grows.
            by_loose_suffix: CowMap::with_capacity(0),
        }
    }

    /// Its last digits (of the E.164 form when there is one, else of the
    /// raw spelling), whether that is all that can be trusted of it, and
    /// its E.164.
    fn keys<'a>(&self, raw: &'a str, e164: Option<&'a str>) -> Keys<'a> {
        Keys {
            suffix: suffix(e164.unwrap_or(raw), self.suffix_len),
            loose: !e164.is_some_and(is_whole),
            e164,
        }
    }

    /// Files `item` under a number already normalized (`e164`), or under
    /// the raw spelling's last digits when it would not normalize, after
    /// the items already there.
    pub fn insert(&mut self, raw: &str, e164: Option<&str>, item: T) {
        self.insert_by(raw, e164, item, |_, _| Ordering::Less);
    }

    /// `insert`, placing `item` after every item `order` puts at or before
    /// it, so that items filed in any sequence end up as a build in
    /// `order` would have filed them.
    pub fn insert_by(
        &mut self,
        raw: &str,
        e164: Option<&str>,
        item: T,
        order: impl Fn(&T, &T) -> Ordering,
    ) {
        let keys = self.keys(raw, e164);
        let place = |items: &mut Vec<T>, item: T| {
            let at = items.partition_point(|x| order(x, &item) != Ordering::Greater);
            items.insert(at, item);
        };
        if let Some(s) = keys.suffix {
            if keys.loose {
                place(
                    self.by_loose_suffix
                        .get_or_default(s.clone().into_boxed_str()),
                    item.clone(),
                );
            }
            place(
                self.by_suffix.get_or_default(s.into_boxed_str()),
                item.clone(),
            );
        }
        if let Some(e164) = keys.e164 {
            place(self.by_e164.get_or_default(e164.into()), item);
        }
    }

    /// Takes every item `is` picks off the keys `raw` and `e164` file
    /// under, and the keys left with no item.
    pub fn remove(&mut self, raw: &str, e164: Option<&str>, is: impl Fn(&T) -> bool) {
        let keys = self.keys(raw, e164);
        let keep_rest = |items: &mut Vec<T>| {
            items.retain(|x| !is(x));
            !items.is_empty()
        };
        if let Some(s) = keys.suffix {
            if keys.loose {
                self.by_loose_suffix.edit(s.as_str(), keep_rest);
            }
            self.by_suffix.edit(s.as_str(), keep_rest);
        }
        if let Some(e164) = keys.e164 {
            self.by_e164.edit(e164, keep_rest);
        }
    }

    /// An exact E.164 match wins; otherwise a match by last digits, among
    /// the numbers with no whole reading when the caller's is whole (all
    /// numbers when it is not), counts only when every item under them is
    /// the same one (`same`), since showing the wrong name is worse than
    /// showing none. The flag says "by suffix".
    pub fn find(
        &self,
        e164: Option<&str>,
        raw: &str,
        same: impl Fn(&T, &T) -> bool,
    ) -> Option<(&T, bool)> {
        if let Some(item) = e164
            .and_then(|n| self.by_e164.get(n))
            .and_then(|v| v.first())
        {
            return Some((item, false));
        }
        let key = suffix(e164.unwrap_or(raw), self.suffix_len)?;
        let filed = if e164.is_some_and(is_whole) {
            &self.by_loose_suffix
        } else {
            &self.by_suffix
        };
        match filed.get(key.as_str()).map(Vec::as_slice) {
            Some([first, rest @ ..]) if rest.iter().all(|e| same(first, e)) => Some((first, true)),
            _ => None,
        }
    }

    /// Re-shards after the index grew or shrank fourfold (`CowMap::fit`).
    pub fn fit(&mut self) {
        self.by_e164.fit();
        self.by_suffix.fit();
        self.by_loose_suffix.fit();
    }

    /// Shards this index shares with `other`, and its own shard count.
    #[cfg(test)]
    pub fn shared_with(&self, other: &NumberIndex<T>) -> (usize, usize) {
        (
            self.by_e164.shared_with(&other.by_e164)
                + self.by_suffix.shared_with(&other.by_suffix)
                + self.by_loose_suffix.shared_with(&other.by_loose_suffix),
            self.by_e164.shard_count()
                + self.by_suffix.shard_count()
                + self.by_loose_suffix.shard_count(),
        )
    }

    /// Every key with its items, in key order ("e164:", "loose:" or
    /// "suffix:" first),
    /// for comparing two indexes.
    #[cfg(test)]
    pub fn listing(&self) -> Vec<(String, Vec<T>)> {
        let mut all: Vec<(String, Vec<T>)> = self
            .by_e164
            .iter()
            .map(|(k, v)| (format!("e164:{k}"), v.clone()))
            .chain(
                self.by_suffix
                    .iter()
                    .map(|(k, v)| (format!("suffix:{k}"), v.clone())),
            )
            .chain(
                self.by_loose_suffix
                    .iter()
                    .map(|(k, v)| (format!("loose:{k}"), v.clone())),
            )
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

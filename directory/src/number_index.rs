//! Numbers to whoever has them: exact E.164, and by how a caller's number
//! ends (`normalize::tail_key`). Shared by the local directory and the
//! LDAP mirror (`crate::mirror`), so both match a number the same way.

use std::cmp::Ordering;

use crate::cow_map::CowMap;
use crate::normalize::{digits_of, tail_key};

#[derive(Clone)]
pub struct NumberIndex<T> {
    suffix_len: usize,
    by_e164: CowMap<Box<str>, Vec<T>>,
    by_suffix: CowMap<Box<str>, Vec<T>>,
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
        }
    }

    /// The keys a number is filed under: its tail (`tail_key`: all its
    /// digits if it normalized, else its last ones) and its E.164.
    fn keys<'a>(&self, raw: &'a str, e164: Option<&'a str>) -> (Option<String>, Option<&'a str>) {
        (tail_key(raw, self.suffix_len, e164.is_some()), e164)
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
        let (suffix, e164) = self.keys(raw, e164);
        let place = |items: &mut Vec<T>, item: T| {
            let at = items.partition_point(|x| order(x, &item) != Ordering::Greater);
            items.insert(at, item);
        };
        if let Some(s) = suffix {
            place(
                self.by_suffix.get_or_default(s.into_boxed_str()),
                item.clone(),
            );
        }
        if let Some(e164) = e164 {
            place(self.by_e164.get_or_default(e164.into()), item);
        }
    }

    /// Takes every item `is` picks off the keys `raw` and `e164` file
    /// under, and the keys left with no item.
    pub fn remove(&mut self, raw: &str, e164: Option<&str>, is: impl Fn(&T) -> bool) {
        let (suffix, e164) = self.keys(raw, e164);
        let keep_rest = |items: &mut Vec<T>| {
            items.retain(|x| !is(x));
            !items.is_empty()
        };
        if let Some(s) = suffix {
            self.by_suffix.edit(s.as_str(), keep_rest);
        }
        if let Some(e164) = e164 {
            self.by_e164.edit(e164, keep_rest);
        }
    }

    /// An exact E.164 match wins; otherwise the longest tail key the
    /// caller's number ends in, which counts only when every item under it
    /// is the same one (`same`), since showing the wrong name is worse than
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
        // At most 17 digits (longer numbers are refused), so a handful of
        // probes.
        let digits = digits_of(e164.unwrap_or(raw));
        for len in (self.suffix_len..=digits.len()).rev() {
            match self
                .by_suffix
                .get(&digits[digits.len() - len..])
                .map(Vec::as_slice)
            {
                Some([first, rest @ ..]) if rest.iter().all(|e| same(first, e)) => {
                    return Some((first, true))
                }
                Some(_) => return None,
                None => {}
            }
        }
        None
    }

    /// Re-shards after the index grew or shrank fourfold (`CowMap::fit`).
    pub fn fit(&mut self) {
        self.by_e164.fit();
        self.by_suffix.fit();
    }

    /// Shards this index shares with `other`, and its own shard count.
    #[cfg(test)]
    pub fn shared_with(&self, other: &NumberIndex<T>) -> (usize, usize) {
        (
            self.by_e164.shared_with(&other.by_e164) + self.by_suffix.shared_with(&other.by_suffix),
            self.by_e164.shard_count() + self.by_suffix.shard_count(),
        )
    }

    /// Every key with its items, in key order ("e164:" or "suffix:" first),
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
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

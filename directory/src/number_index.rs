//! Numbers to whoever has them: exact E.164, and by their country code
//! and the last digits of their national number where a number's own
//! reading cannot be trusted to be whole. Shared by the local directory
//! and the LDAP mirror (`crate::mirror`), so both match a number the same
//! way.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use crate::cow_map::CowMap;
use crate::normalize::{country_code, is_whole, region_country_code, suffix};

#[derive(Clone)]
pub struct NumberIndex<T> {
    suffix_len: usize,
    /// The country code of the region national numbers are read in: a
    /// number with no reading is taken to be of it.
    home: u16,
    by_e164: CowMap<Box<str>, Vec<T>>,
    /// Every number by its country code and last digits
    /// ([`suffix_key`]): for a caller whose own number has no whole reading
    /// (a local number without its area code).
    by_suffix: CowMap<Box<str>, Vec<T>>,
    /// Only numbers with no whole reading, by their country code and last
    /// digits: for a caller whose number is whole. A whole directory
    /// number answers such a caller by its own number only, so
    /// `+44 20 7010 1234` never answers `+1 555 010 1234`, which ends in
    /// the same seven digits; a loose one (`736-4321` in a US tenant)
    /// answers only callers of its own country.
    by_loose_suffix: CowMap<Box<str>, Vec<T>>,
}

/// The keys a number is filed under.
struct Keys<'a> {
    suffix: Option<String>,
    /// It has no whole reading: filed by its last digits for every caller.
    loose: bool,
    e164: Option<&'a str>,
}

/// Its suffix key, whether that is all that can be trusted of it, and
/// its E.164.
fn keys<'a>(suffix_len: usize, home: u16, raw: &'a str, e164: Option<&'a str>) -> Keys<'a> {
    Keys {
        suffix: suffix_key(suffix_len, home, raw, e164),
        loose: !e164.is_some_and(is_whole),
        e164,
    }
}

/// The country code and the last `suffix_len` digits of the national
/// number (`1:0101234`), never of the country code: a number whose
/// national number is shorter (a short code such as `116116`, the Faroes'
/// `812345`) has none. A number with no E.164 reading is taken to be of
/// the region's country (`home`), by the last digits of its spelling.
fn suffix_key(suffix_len: usize, home: u16, raw: &str, e164: Option<&str>) -> Option<String> {
    let (code, digits) = match e164 {
        Some(e164) => {
            let (code, national) = country_code(e164)?;
            let national = national.get(national.len().checked_sub(suffix_len)?..)?;
            (code, national.to_string())
        }
        None => (home, suffix(raw, suffix_len)?),
    };
    Some(format!("{code}:{digits}"))
}

/// Items to take off and file, gathered by the key they touch, for
/// `NumberIndex::apply_by`. A number a thousand entries share goes
/// through its items once for all of their changes, not once for each.
pub struct Changes<T> {
    suffix_len: usize,
    home: u16,
    by_e164: HashMap<Box<str>, Change<T>>,
    by_suffix: HashMap<Box<str>, Change<T>>,
    by_loose_suffix: HashMap<Box<str>, Change<T>>,
}

/// One key's changes: what it loses is taken off before what it gains is
/// filed.
struct Change<T> {
    remove: HashSet<T>,
    insert: Vec<T>,
}

impl<T> Default for Change<T> {
    fn default() -> Change<T> {
        Change {
            remove: HashSet::new(),
            insert: Vec::new(),
        }
    }
}

impl<T: Clone + Eq + Hash> Changes<T> {
    /// Takes every copy of `item` off the keys `raw` and `e164` file
    /// under.
    pub fn remove(&mut self, raw: &str, e164: Option<&str>, item: T) {
        self.at(raw, e164, |change| {
            change.remove.insert(item.clone());
        });
    }

    /// Files `item` under a number already normalized (`e164`), or under
    /// the raw spelling's last digits when it would not normalize, where
    /// `apply_by`'s order puts it.
    pub fn insert(&mut self, raw: &str, e164: Option<&str>, item: T) {
        self.at(raw, e164, |change| change.insert.push(item.clone()));
    }

    fn at(&mut self, raw: &str, e164: Option<&str>, mut edit: impl FnMut(&mut Change<T>)) {
        let keys = keys(self.suffix_len, self.home, raw, e164);
        if let Some(s) = keys.suffix {
            if keys.loose {
                edit(self.by_loose_suffix.entry(s.as_str().into()).or_default());
            }
            edit(self.by_suffix.entry(s.into_boxed_str()).or_default());
        }
        if let Some(e164) = keys.e164 {
            edit(self.by_e164.entry(e164.into()).or_default());
        }
    }
}

impl<T: Clone> NumberIndex<T> {
    /// An index of numbers read in `region`.
    pub fn new(suffix_len: usize, region: &str) -> NumberIndex<T> {
        NumberIndex::with_capacity(suffix_len, region, 0)
    }

    /// An index sized for about `numbers` numbers.
    pub fn with_capacity(suffix_len: usize, region: &str, numbers: usize) -> NumberIndex<T> {
        NumberIndex {
            suffix_len: suffix_len.max(4),
            // An unknown region reads no national number: 0 is no country's.
            home: region_country_code(region).unwrap_or(0),
            by_e164: CowMap::with_capacity(numbers),
            by_suffix: CowMap::with_capacity(numbers),
            // Most numbers are whole: a small map, resharded as it grows.
            by_loose_suffix: CowMap::with_capacity(0),
        }
    }

    /// Files `item` under a number already normalized (`e164`), or under
    /// the raw spelling's last digits when it would not normalize, after
    /// the items already there.
    pub fn insert(&mut self, raw: &str, e164: Option<&str>, item: T) {
        let keys = keys(self.suffix_len, self.home, raw, e164);
        if let Some(s) = keys.suffix {
            if keys.loose {
                self.by_loose_suffix
                    .get_or_default(s.clone().into_boxed_str())
                    .push(item.clone());
            }
            self.by_suffix
                .get_or_default(s.into_boxed_str())
                .push(item.clone());
        }
        if let Some(e164) = keys.e164 {
            self.by_e164.get_or_default(e164.into()).push(item);
        }
    }

    /// Changes to gather for `apply_by`.
    pub fn changes(&self) -> Changes<T> {
        Changes {
            suffix_len: self.suffix_len,
            home: self.home,
            by_e164: HashMap::new(),
            by_suffix: HashMap::new(),
            by_loose_suffix: HashMap::new(),
        }
    }

    /// Makes `changes`, each key's removals first, and drops the keys left
    /// with no item. Each item filed goes after every item `order` puts at
    /// or before it (the ones filed together in the sequence they were
    /// gathered), so that items filed in any sequence end up as a build in
    /// `order` would have filed them. Goes through each touched key's
    /// items once.
    pub fn apply_by(&mut self, changes: Changes<T>, order: impl Fn(&T, &T) -> Ordering)
    where
        T: Eq + Hash,
    {
        let maps = [
            (&mut self.by_e164, changes.by_e164),
            (&mut self.by_suffix, changes.by_suffix),
            (&mut self.by_loose_suffix, changes.by_loose_suffix),
        ];
        for (map, changed) in maps {
            for (key, change) in changed {
                apply(map, key, change, &order);
            }
        }
    }

    /// An exact E.164 match wins, with every item under the number in
    /// order (`crate::shared_number` says what several show); otherwise a
    /// match by country code and last digits, among the numbers with no
    /// whole reading when the caller's is whole (all numbers when it is
    /// not), counts only when every item under them is the same one
    /// (`same`), since showing the wrong name is worse than showing none.
    /// The flag says "by suffix".
    pub fn find(
        &self,
        e164: Option<&str>,
        raw: &str,
        same: impl Fn(&T, &T) -> bool,
    ) -> Option<(&[T], bool)> {
        if let Some(items) = e164
            .and_then(|n| self.by_e164.get(n))
            .filter(|v| !v.is_empty())
        {
            return Some((items.as_slice(), false));
        }
        let keys = keys(self.suffix_len, self.home, raw, e164);
        let key = keys.suffix?;
        let filed = if keys.loose {
            &self.by_suffix
        } else {
            &self.by_loose_suffix
        };
        match filed.get(key.as_str()).map(Vec::as_slice) {
            Some([first, rest @ ..]) if rest.iter().all(|e| same(first, e)) => {
                Some((std::slice::from_ref(first), true))
            }
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

fn apply<T: Clone + Eq + Hash>(
    map: &mut CowMap<Box<str>, Vec<T>>,
    key: Box<str>,
    change: Change<T>,
    order: &impl Fn(&T, &T) -> Ordering,
) {
    let Change { remove, mut insert } = change;
    let keep = |x: &T| !remove.contains(x);
    if insert.is_empty() {
        // `edit`, not `get_or_default`: a key already gone stays gone, and
        // its shard shared.
        map.edit(&key, |items| {
            items.retain(keep);
            !items.is_empty()
        });
        return;
    }
    let items = map.get_or_default(key);
    if !remove.is_empty() {
        items.retain(keep);
    }
    // Stable: copies of one item stay in the sequence they were gathered.
    insert.sort_by(order);
    let mut insert = insert.into_iter().peekable();
    let mut merged = Vec::with_capacity(items.len() + insert.len());
    for item in items.drain(..) {
        while let Some(new) = insert.next_if(|new| order(&item, new) == Ordering::Greater) {
            merged.push(new);
        }
        merged.push(item);
    }
    merged.extend(insert);
    *items = merged;
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::cmp::Ordering;
    use std::hash::{Hash, Hasher};

    use super::NumberIndex;

    const LINE: &str = "+15550101234";

    /// Filed after every item at or before it, those filed together in
    /// the sequence they were gathered; a key left empty is gone.
    #[test]
    fn changes_file_as_one_by_one_inserts_would() {
        let by_first = |a: &(u32, char), b: &(u32, char)| a.0.cmp(&b.0);
        let mut index = NumberIndex::new(7, "US");
        for item in [(1, 'a'), (2, 'b'), (2, 'c')] {
            index.insert(LINE, Some(LINE), item);
        }
        index.insert("12", None, (9, 'z'));
        let mut changes = index.changes();
        changes.remove(LINE, Some(LINE), (2, 'b'));
        for item in [(2, 'd'), (1, 'e'), (0, 'f'), (1, 'g'), (3, 'h')] {
            changes.insert(LINE, Some(LINE), item);
        }
        changes.remove("12", None, (9, 'z'));
        changes.remove("+15550109999", Some("+15550109999"), (4, 'x'));
        index.apply_by(changes, by_first);
        let want = vec![
            (0, 'f'),
            (1, 'a'),
            (1, 'e'),
            (1, 'g'),
            (2, 'c'),
            (2, 'd'),
            (3, 'h'),
        ];
        let listing = index.listing();
        let keys: Vec<&str> = listing.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["e164:+15550101234", "suffix:1:0101234"]);
        assert!(
            listing.iter().all(|(_, items)| *items == want),
            "{listing:?}"
        );
    }

    thread_local! {
        /// Times an item was hashed, compared for equality or ordered.
        static STEPS: Cell<usize> = const { Cell::new(0) };
    }

    fn step() {
        STEPS.with(|s| s.set(s.get() + 1));
    }

    #[derive(Clone, Copy, Debug)]
    struct Counted(u32);

    impl PartialEq for Counted {
        fn eq(&self, other: &Counted) -> bool {
            step();
            self.0 == other.0
        }
    }

    impl Eq for Counted {}

    impl Hash for Counted {
        fn hash<H: Hasher>(&self, state: &mut H) {
            step();
            self.0.hash(state);
        }
    }

    fn order(a: &Counted, b: &Counted) -> Ordering {
        step();
        a.0.cmp(&b.0)
    }

    /// Half of what one number holds taken off and filed elsewhere under
    /// it: the work follows the number's items and the changes, not their
    /// product (a pass over the items per item taken off, a shift of the
    /// rest per item filed).
    #[test]
    fn changes_under_one_number_go_through_its_items_once() {
        const ITEMS: u32 = 20_000;
        let mut index = NumberIndex::new(7, "US");
        for n in 0..ITEMS {
            index.insert(LINE, Some(LINE), Counted(2 * n));
        }
        let mut changes = index.changes();
        let mut want: Vec<u32> = Vec::new();
        for n in 0..ITEMS {
            if n % 2 == 0 {
                // Somewhere else among the rest, and odd: a new item.
                let moved = ((n * 7_919) % (2 * ITEMS)) | 1;
                changes.remove(LINE, Some(LINE), Counted(2 * n));
                changes.insert(LINE, Some(LINE), Counted(moved));
                want.push(moved);
            } else {
                want.push(2 * n);
            }
        }
        STEPS.with(|s| s.set(0));
        index.apply_by(changes, order);
        let steps = STEPS.with(Cell::get);
        // Two keys (the number and its last digits) of 20,000 items, 10,000
        // changes each: about 400,000 steps, most in sorting what is filed;
        // 300 million one change at a time.
        assert!(steps < 50 * ITEMS as usize, "{steps} steps");
        want.sort_unstable();
        for (key, items) in index.listing() {
            let got: Vec<u32> = items.iter().map(|c| c.0).collect();
            assert!(got == want, "{key} out of order");
        }
    }
}

#[cfg(test)]
#[path = "number_index_tests.rs"]
mod matching_tests;

//! A hash map split into fixed shards, each behind its own `Arc`. Cloning the
//! map clones 64 pointers; changing an entry copies only its shard. That makes
//! copy-on-write snapshots of a million-row table cheap enough to publish one
//! per change batch, while keeping std's compact `HashMap` layout (a
//! persistent HAMT costs several times the memory per entry and is slower to
//! bulk-build, which is what cold start does).

use std::collections::HashMap as StdHashMap;

/// foldhash: several times faster than SipHash on integer and MAC keys, and
/// still seeded per map, so crafted keys cannot be aimed at a known layout.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// Shards of a map built empty, and the fewest a cold load picks.
const SHARDS: usize = 64;

#[derive(Clone)]
pub struct ShardedMap<K, V> {
    shards: Box<[Arc<HashMap<K, V>>]>,
    len: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::default())).collect(),
            len: 0,
        }
    }
}

/// One seed for the process: a key's shard (and a stamp's slot) never
/// changes while it runs, and differs between runs, so crafted keys cannot
/// be aimed at one shard. foldhash rather than SipHash: this runs several
/// times per request on the hot path.
static STABLE: std::sync::LazyLock<foldhash::fast::RandomState> =
    std::sync::LazyLock::new(Default::default);

/// A hash of `value` that is the same for the whole life of the process.
pub(crate) fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    STABLE.hash_one(value)
}

/// The shard of `key` among `shards` (any count: a multiply, not a modulo).
fn shard_of<K: Hash>(key: &K, shards: usize) -> usize {
    ((u128::from(stable_hash(key)) * shards as u128) >> 64) as usize
}

/// Buckets std's map allocates for `capacity` entries: a power of two that
/// is at most 7/8 full.
fn buckets_for(capacity: usize) -> usize {
    if capacity < 8 {
        return if capacity < 4 { 4 } else { 8 };
    }
    (capacity * 8 / 7).next_power_of_two()
}

/// Each shard's reservation: its share plus four standard deviations of
/// how a hash spreads keys, so no shard of a load rehashes.
fn reservation(entries: usize, shards: usize) -> usize {
    let share = entries.div_ceil(shards);
    if share == 0 {
        0
    } else {
        share + 4 * share.isqrt()
    }
}

/// How many shards a map of about `entries` gets. Tables come in powers of
/// two, so a fixed count leaves them anywhere from 44% to 87% full (48% at
/// a million rows); a count between 64 and 127 can always be found that
/// fills them to about 80%, which for the phone and line tables saves
/// tens of bytes per phone, and their page faults at start.
fn shard_count(entries: usize) -> usize {
    (SHARDS..2 * SHARDS)
        .min_by_key(|&n| n * buckets_for(reservation(entries, n)))
        .unwrap_or(SHARDS)
}

/// Fills a [`ShardedMap`] from many entries in any order. Entries wait in a
/// small queue per shard and go in a shard at a time, so the inserts work
/// in one shard's table at once instead of missing the cache on every row.
pub struct Filling<K, V> {
    shards: Vec<HashMap<K, V>>,
    queued: Vec<Vec<(K, V)>>,
    pushed: usize,
    /// The shards this filling takes keys for (all but in [`Filling::parts`]).
    owned: std::ops::Range<usize>,
}

const QUEUED: usize = 64;

impl<K: Hash + Eq + Clone, V: Clone> Filling<K, V> {
    /// Sized for about `entries` (exact from the snapshot, an estimate from
    /// the database's statistics: a wrong one costs a rehash, or is given
    /// back by [`Filling::finish`]).
    pub fn with_capacity(entries: usize) -> Self {
        Self::parts(entries, 1).pop().expect("one part")
    }

    /// `parts` fillings for about `entries` entries in all, each taking the
    /// keys of its own run of shards ([`Filling::owns`]) and reserving only
    /// those: filled on as many threads, then [`Filling::join`]ed. A load
    /// is bound by first touches of fresh memory, which then happen on
    /// every core.
    pub fn parts(entries: usize, parts: usize) -> Vec<Self> {
        let (count, parts) = (shard_count(entries), parts.max(1));
        let per_shard = reservation(entries, count);
        (0..parts)
            .map(|j| {
                let owned = count * j / parts..count * (j + 1) / parts;
                Filling {
                    shards: (0..count)
                        .map(|i| {
                            let capacity = if owned.contains(&i) { per_shard } else { 0 };
                            HashMap::with_capacity_and_hasher(capacity, Default::default())
                        })
                        .collect(),
                    queued: (0..count).map(|_| Vec::new()).collect(),
                    pushed: 0,
                    owned,
                }
            })
            .collect()
    }

    /// Whether `key` belongs to this filling's shards.
    pub fn owns(&self, key: &K) -> bool {
        self.owned.contains(&shard_of(key, self.shards.len()))
    }

    /// The parts of one [`Filling::parts`] as one filling.
    pub fn join(parts: Vec<Self>) -> Self {
        let mut parts = parts.into_iter();
        let mut all = parts.next().expect("at least one part");
        for mut part in parts {
            for i in part.owned.clone() {
                all.shards[i] = std::mem::take(&mut part.shards[i]);
                all.queued[i] = std::mem::take(&mut part.queued[i]);
            }
            all.pushed += part.pushed;
            all.owned = all.owned.start.min(part.owned.start)..all.owned.end.max(part.owned.end);
        }
        all
    }

    pub fn push(&mut self, key: K, value: V) {
        let i = shard_of(&key, self.shards.len());
        debug_assert!(self.owned.contains(&i), "a key of another part");
        let queue = &mut self.queued[i];
        if queue.capacity() == 0 {
            queue.reserve_exact(QUEUED);
        }
        queue.push((key, value));
        if queue.len() == QUEUED {
            self.shards[i].extend(queue.drain(..));
        }
        self.pushed += 1;
    }

    /// Entries pushed (a key pushed twice counts twice).
    pub fn pushed(&self) -> usize {
        self.pushed
    }

    pub fn finish(self) -> ShardedMap<K, V> {
        let Filling {
            mut shards, queued, ..
        } = self;
        let mut len = 0;
        for (shard, queue) in shards.iter_mut().zip(queued) {
            shard.extend(queue);
            // Far fewer rows than reserved (an estimate over twice the
            // rows): give the rest back.
            if shard.capacity() > 64 && shard.len() < shard.capacity() / 4 {
                shard.shrink_to_fit();
            }
            len += shard.len();
        }
        ShardedMap {
            shards: shards.into_iter().map(Arc::new).collect(),
            len,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedMap<K, V> {
    pub fn from_entries(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut parts: Vec<Vec<(K, V)>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for (k, v) in entries {
            parts[shard_of(&k, SHARDS)].push((k, v));
        }
        let mut len = 0;
        let shards = parts
            .into_iter()
            .map(|part| {
                let mut map = HashMap::with_capacity_and_hasher(part.len(), Default::default());
                map.extend(part);
                len += map.len();
                Arc::new(map)
            })
            .collect();
        ShardedMap { shards, len }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.shards[shard_of(key, self.shards.len())].get(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old =
            Arc::make_mut(&mut self.shards[shard_of(&key, self.shards.len())]).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value at `key` to change in place. Only its shard is copied,
    /// and only if it is shared and holds `key`.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let shard = &mut self.shards[shard_of(key, self.shards.len())];
        if !shard.contains_key(key) {
            return None;
        }
        Arc::make_mut(shard).get_mut(key)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let shard = &mut self.shards[shard_of(key, self.shards.len())];
        if !shard.contains_key(key) {
            return None;
        }
        let old = Arc::make_mut(shard).remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }

    /// The values, moved out where this map holds the only reference to a
    /// shard, cloned where a shard is shared.
    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.shards.into_vec().into_iter().flat_map(|shard| {
            Arc::try_unwrap(shard)
                .unwrap_or_else(|shared| (*shared).clone())
                .into_values()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_is_isolated_from_later_writes() {
        let mut a: ShardedMap<i64, i64> = ShardedMap::from_entries((0..1000).map(|i| (i, i)));
        let b = a.clone();
        a.insert(5, 50);
        a.remove(&6);
        a.insert(2000, 1);
        assert_eq!(b.get(&5), Some(&5));
        assert_eq!(b.get(&6), Some(&6));
        assert_eq!(b.len(), 1000);
        assert_eq!(a.get(&5), Some(&50));
        assert_eq!(a.get(&6), None);
        assert_eq!(a.len(), 1000);
        assert_eq!(a.values().count(), 1000);
    }

    /// A change to one row copies one shard: every other shard of the new
    /// map is the old map's own allocation.
    #[test]
    fn a_change_copies_only_its_own_shard() {
        let old: ShardedMap<i64, i64> = ShardedMap::from_entries((0..100_000).map(|i| (i, i)));
        let mut new = old.clone();
        new.insert(5, 50);
        let copied = old
            .shards
            .iter()
            .zip(new.shards.iter())
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert_eq!(copied, 1);
        assert_eq!(old.get(&5), Some(&5));
    }

    #[test]
    fn a_filled_map_holds_what_was_pushed_whatever_the_estimate() {
        for (rows, estimate) in [
            (0, 0),
            (1, 0),
            (5_000, 5_000),
            (5_000, 10),
            (300, 1_000_000),
        ] {
            let mut filling = Filling::with_capacity(estimate);
            for i in 0..rows {
                filling.push(i * 7919, i);
            }
            // A key pushed again: the last value wins.
            filling.push(0, -1);
            let mut map = filling.finish();
            assert_eq!(
                map.len(),
                rows.max(1) as usize,
                "{rows} rows, estimate {estimate}"
            );
            for i in 1..rows {
                assert_eq!(map.get(&(i * 7919)), Some(&i));
            }
            assert_eq!(map.get(&0), Some(&-1));
            // Capacity reserved for an estimate far too high is given back.
            let buckets: usize = map.shards.iter().map(|s| s.capacity()).sum();
            assert!(
                buckets <= 4 * rows.max(64) as usize * 2,
                "{buckets} for {rows}"
            );
            // And it behaves like any other map afterwards.
            map.insert(-5, 5);
            assert_eq!(map.remove(&-5), Some(5));
            assert_eq!(map.len(), rows.max(1) as usize);
        }
    }

    #[test]
    fn parts_filled_apart_join_into_the_whole_map() {
        for (rows, parts) in [(0, 2), (10, 3), (100_000, 2), (100_000, 5)] {
            let keys = || (0..rows).map(|i: i64| i * 104_729);
            let mut fillings = Filling::parts(rows as usize, parts);
            assert_eq!(fillings.len(), parts);
            for filling in &mut fillings {
                for key in keys() {
                    if filling.owns(&key) {
                        filling.push(key, -key);
                    }
                }
            }
            // Every key has exactly one owner.
            for key in keys() {
                assert_eq!(fillings.iter().filter(|f| f.owns(&key)).count(), 1);
            }
            let whole = Filling::join(fillings);
            assert_eq!(whole.pushed(), rows as usize);
            let map = whole.finish();
            assert_eq!(map.len(), rows as usize);
            for key in keys() {
                assert_eq!(map.get(&key), Some(&-key), "{rows} rows in {parts} parts");
            }
        }
    }

    #[test]
    fn shard_counts_keep_tables_dense() {
        for entries in [100_000, 250_000, 1_000_000, 1_500_000, 3_000_000] {
            let n = shard_count(entries);
            let buckets = n * buckets_for(reservation(entries, n));
            let load = entries as f64 / buckets as f64;
            assert!(
                (0.7..=0.875).contains(&load),
                "{entries}: {n} shards, {load:.2} full"
            );
        }
    }
}

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

fn shard_of<K: Hash>(key: &K) -> usize {
    (stable_hash(key) as usize) % SHARDS
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedMap<K, V> {
    pub fn from_entries(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut parts: Vec<Vec<(K, V)>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for (k, v) in entries {
            parts[shard_of(&k)].push((k, v));
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
        self.shards[shard_of(key)].get(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = Arc::make_mut(&mut self.shards[shard_of(&key)]).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let shard = &mut self.shards[shard_of(key)];
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
}

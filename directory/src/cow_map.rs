//! A hash map in shards behind `Arc`s, so that a copy costs a pointer per
//! shard and a change copies only the shard it touches. The local
//! directory's index is updated this way after an edit: its last version
//! stays intact for the lookups that still hold it, and the new one shares
//! every shard the edit did not reach.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;

/// Keys a shard holds before the map splits into more: a change copies
/// about this many keys.
const KEYS_PER_SHARD: usize = 2_048;
const MAX_SHARDS: usize = 1_024;

#[derive(Clone)]
pub struct CowMap<K, V> {
    /// Picks the shard. Seeded per map, so a tenant cannot choose keys that
    /// all land in one shard (which would make each change copy them all).
    hasher: RandomState,
    shards: Box<[Arc<HashMap<K, V>>]>,
    len: usize,
}

fn shards_for(keys: usize) -> usize {
    (keys / KEYS_PER_SHARD)
        .next_power_of_two()
        .clamp(1, MAX_SHARDS)
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    /// A map sized for about `keys` keys.
    pub fn with_capacity(keys: usize) -> CowMap<K, V> {
        let shards = shards_for(keys);
        CowMap {
            hasher: RandomState::new(),
            shards: (0..shards)
                .map(|_| Arc::new(HashMap::with_capacity(keys / shards)))
                .collect(),
            len: 0,
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        match self.shards.len() {
            // Most tenants' maps: no second hash.
            1 => 0,
            // A power of two.
            n => self.hasher.hash_one(key) as usize & (n - 1),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }

    /// The value at `key`, made first with `Default` if missing. Copies the
    /// key's shard if another map still shares it.
    pub fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let at = self.shard(&key);
        let shard = Arc::make_mut(&mut self.shards[at]);
        if !shard.contains_key(&key) {
            self.len += 1;
        }
        shard.entry(key).or_default()
    }

    /// Lets `edit` change the value at `key`, if there is one, and removes
    /// it when `edit` says it is no longer wanted. A key that is missing
    /// leaves a shared shard shared.
    pub fn edit<Q>(&mut self, key: &Q, edit: impl FnOnce(&mut V) -> bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let at = self.shard(key);
        if !self.shards[at].contains_key(key) {
            return;
        }
        let shard = Arc::make_mut(&mut self.shards[at]);
        let keep = shard.get_mut(key).is_some_and(edit);
        if !keep && shard.remove(key).is_some() {
            self.len -= 1;
        }
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let at = self.shard(&key);
        let old = Arc::make_mut(&mut self.shards[at]).insert(key, value);
        self.len += usize::from(old.is_none());
        old
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let at = self.shard(key);
        if !self.shards[at].contains_key(key) {
            // Not here: leave a shared shard shared.
            return None;
        }
        let old = Arc::make_mut(&mut self.shards[at]).remove(key);
        self.len -= usize::from(old.is_some());
        old
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    /// Re-shards when the map has grown or shrunk fourfold past its shard
    /// count, so a change keeps copying about `KEYS_PER_SHARD` keys however
    /// the map got to its size. Costs a copy of every key, once per such
    /// growth.
    pub fn fit(&mut self) {
        let wanted = shards_for(self.len);
        let now = self.shards.len();
        if wanted >= now * 4 || wanted * 4 <= now {
            let mut fitted = CowMap::with_capacity(self.len);
            for (key, value) in self.iter() {
                fitted.insert(key.clone(), value.clone());
            }
            *self = fitted;
        }
    }

    #[cfg(test)]
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Shards this map shares with `other` (the same `Arc`).
    #[cfg(test)]
    pub fn shared_with(&self, other: &CowMap<K, V>) -> usize {
        self.shards
            .iter()
            .zip(other.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{CowMap, KEYS_PER_SHARD};

    #[test]
    fn behaves_as_a_map_and_copies_one_shard_per_change() {
        let mut map: CowMap<u64, Vec<u64>> = CowMap::with_capacity(0);
        let mut want: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..60_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 40_000;
            match x % 5 {
                0 => {
                    assert_eq!(map.remove(&key), want.remove(&key));
                }
                1 => map.edit(&key, |v| {
                    let w = want.get_mut(&key).unwrap();
                    w.pop();
                    v.pop();
                    if w.is_empty() {
                        want.remove(&key);
                    }
                    !v.is_empty()
                }),
                _ => {
                    map.get_or_default(key).push(step);
                    want.entry(key).or_default().push(step);
                }
            }
            if step % 1_000 == 0 {
                map.fit();
            }
            assert_eq!(map.len(), want.len(), "step {step}");
        }
        for (k, v) in &want {
            assert_eq!(map.get(k), Some(v));
        }
        assert_eq!(map.iter().count(), want.len());
        // Grown from one shard to its size, a change copies one shard.
        assert!(map.shard_count() >= want.len() / KEYS_PER_SHARD / 2);
        let before = map.clone();
        map.insert(1 << 40, vec![1]);
        map.edit(&u64::MAX, |_| false);
        assert_eq!(map.shared_with(&before), map.shard_count() - 1);
        assert_eq!(before.get(&(1 << 40)), None);
    }
}

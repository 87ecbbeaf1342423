//! The ids of one tenant's rows of a table (directory entries, sources),
//! kept so that one change copies a few kilobytes, not the whole group.
//!
//! The mirror publishes a new state per change batch and shares everything
//! it did not touch with the old one. A group held as one set had to be
//! copied whole for every row added or removed: a tenant at the entry
//! quota (200,000) made each change copy 200,000 ids, and a node took 55 s
//! to apply an import that changed 10,000 of them, with no other tenant's
//! edit going live meanwhile (BENCHMARKS.md, directory imports). Here the
//! ids sit in sorted chunks behind their own `Arc`s: a change copies the
//! list of chunk pointers and the one chunk it edits.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use crate::model::Id;
use crate::shard::ShardedMap;

/// A chunk splits in two past twice this many ids.
const CHUNK: usize = 512;

#[derive(Clone, Debug, Default)]
pub(crate) struct IdGroup {
    /// Sorted, each non-empty, every id of one below every id of the next.
    chunks: Vec<Arc<Vec<Id>>>,
}

impl IdGroup {
    /// From ids in any order, duplicates dropped.
    pub(crate) fn from_ids(mut ids: Vec<Id>) -> IdGroup {
        ids.sort_unstable();
        ids.dedup();
        IdGroup {
            chunks: ids
                .chunks(CHUNK)
                .map(|chunk| Arc::new(chunk.to_vec()))
                .collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    /// The ids in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Id> + '_ {
        self.chunks.iter().flat_map(|c| c.iter().copied())
    }

    /// The chunk `id` belongs in: the first whose last id is not below it,
    /// or the last chunk.
    fn chunk_for(&self, id: Id) -> usize {
        self.chunks
            .partition_point(|c| c.last().is_some_and(|last| *last < id))
            .min(self.chunks.len().saturating_sub(1))
    }

    pub(crate) fn contains(&self, id: Id) -> bool {
        self.chunks
            .get(self.chunk_for(id))
            .is_some_and(|c| c.binary_search(&id).is_ok())
    }

    /// Adds `id`; false if it was there.
    pub(crate) fn insert(&mut self, id: Id) -> bool {
        if self.chunks.is_empty() {
            self.chunks.push(Arc::new(vec![id]));
            return true;
        }
        let at = self.chunk_for(id);
        let Err(place) = self.chunks[at].binary_search(&id) else {
            return false;
        };
        let chunk = Arc::make_mut(&mut self.chunks[at]);
        chunk.insert(place, id);
        if chunk.len() > 2 * CHUNK {
            let upper = chunk.split_off(CHUNK);
            self.chunks.insert(at + 1, Arc::new(upper));
        }
        true
    }

    /// Removes `id`; false if it was not there.
    pub(crate) fn remove(&mut self, id: Id) -> bool {
        if self.chunks.is_empty() {
            return false;
        }
        let at = self.chunk_for(id);
        let Ok(place) = self.chunks[at].binary_search(&id) else {
            return false;
        };
        let chunk = Arc::make_mut(&mut self.chunks[at]);
        chunk.remove(place);
        if chunk.is_empty() {
            self.chunks.remove(at);
        }
        true
    }
}

/// Ids gathered by group for a whole build (a cold load's phones by
/// tenant, a reload's directory entries and sources, templates by owner
/// and by MAC). Rows mostly come in runs of one group, so a run is kept
/// apart and hashed in once.
pub(crate) struct Grouping<K = Id> {
    groups: HashMap<K, Vec<Id>, foldhash::fast::RandomState>,
    run: Option<(K, Vec<Id>)>,
}

impl<K> Default for Grouping<K> {
    fn default() -> Self {
        Grouping {
            groups: HashMap::default(),
            run: None,
        }
    }
}

impl<K: Hash + Eq + Clone> Grouping<K> {
    pub(crate) fn push(&mut self, group: K, id: Id) {
        match &mut self.run {
            Some((current, ids)) if *current == group => ids.push(id),
            _ => {
                let mut ids = self.end_run();
                ids.push(id);
                self.run = Some((group, ids));
            }
        }
    }

    /// Files the run under its group; returns an empty buffer for the next
    /// (the run's own, when it was appended to ids gathered before).
    fn end_run(&mut self) -> Vec<Id> {
        let Some((group, mut ids)) = self.run.take() else {
            return Vec::new();
        };
        match self.groups.entry(group) {
            Entry::Occupied(mut gathered) => {
                gathered.get_mut().append(&mut ids);
                ids
            }
            Entry::Vacant(place) => {
                place.insert(ids);
                Vec::new()
            }
        }
    }

    /// Each group's ids, sorted into chunks (a pass where they came in
    /// order, as a snapshot's phones do).
    pub(crate) fn finish(mut self) -> ShardedMap<K, Arc<IdGroup>> {
        self.end_run();
        ShardedMap::from_entries(
            (self.groups.into_iter()).map(|(group, ids)| (group, Arc::new(IdGroup::from_ids(ids)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Against a `BTreeSet` under a pseudo-random mix of inserts and
    /// removes, through splits and emptied chunks.
    #[test]
    fn behaves_as_a_sorted_set() {
        let mut group = IdGroup::default();
        let mut model = BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..60_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = (x % 5_000) as Id;
            // Mostly inserts at first, mostly removes at the end.
            let insert = (x >> 32) % 60_000 >= step;
            if insert {
                assert_eq!(group.insert(id), model.insert(id), "insert {id}");
            } else {
                assert_eq!(group.remove(id), model.remove(&id), "remove {id}");
            }
            assert_eq!(group.contains(id), model.contains(&id));
        }
        assert!(group.iter().eq(model.iter().copied()));
        assert_eq!(group.len(), model.len());
        assert!(group
            .chunks
            .iter()
            .all(|c| !c.is_empty() && c.len() <= 2 * CHUNK));
        for id in model.clone() {
            assert!(group.remove(id));
        }
        assert!(group.is_empty());
    }

    /// A copy shares every chunk a change did not touch.
    #[test]
    fn a_change_copies_only_the_chunks_it_edits() {
        let original = IdGroup::from_ids((0..10_000).rev().collect());
        assert!(original.iter().eq(0..10_000));
        let mut changed = original.clone();
        assert!(changed.insert(10_000));
        assert!(changed.remove(17));
        let shared = original
            .chunks
            .iter()
            .filter(|c| changed.chunks.iter().any(|d| Arc::ptr_eq(c, d)))
            .count();
        assert_eq!(shared, original.chunks.len() - 2);
        assert_eq!(original.len(), 10_000);
        assert_eq!(changed.len(), 10_000);
    }
}

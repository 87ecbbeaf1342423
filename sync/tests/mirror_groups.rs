//! A tenant's directory entries as the mirror lists them (`directory_of`,
//! from the chunked id groups of `mirror/group.rs`) while a writer applies
//! batches that add, remove and move entries between tenants: every state
//! a reader holds stays as it was, and lists each of its entries under its
//! own tenant exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dialtone_sync::model::*;
use dialtone_sync::*;

fn tenant(id: Id) -> Row {
    Row::Tenant(Tenant {
        id,
        slug: format!("t{id}").into(),
        name: format!("Tenant {id}").into(),
        default_region: "GB".into(),
        settings: "{}".into(),
        updated_at: 1,
    })
}

fn entry(id: Id, tenant_id: Id) -> Row {
    Row::DirectoryEntry(DirectoryEntry {
        id,
        tenant_id,
        external_id: Some(format!("crm-{id}").into()),
        name: format!("Person {id}").into(),
        company: None,
        numbers: Vec::new(),
        updated_at: 1,
    })
}

/// The ids `state` lists for each tenant, checked against the entries.
fn listed(state: &MirrorState) -> Vec<Vec<Id>> {
    let mut total = 0;
    let lists: Vec<Vec<Id>> = [1, 2, 3]
        .iter()
        .map(|&t| {
            let ids: Vec<Id> = state
                .directory_of(t)
                .iter()
                .map(|d| {
                    assert_eq!(d.tenant_id, t, "entry {} listed under tenant {t}", d.id);
                    d.id
                })
                .collect();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "not ascending, or twice"
            );
            total += ids.len();
            ids
        })
        .collect();
    assert_eq!(
        total,
        state.counts().directory_entries,
        "an entry is not listed"
    );
    lists
}

#[test]
fn readers_see_whole_states_while_groups_change() {
    let mirror = Arc::new(Mirror::new());
    let mut data = Dataset::default();
    for t in [1, 2, 3] {
        data.push(tenant(t));
    }
    // Several chunks per tenant, so that splits and shared chunks happen.
    for id in 1..=6_000 {
        data.push(entry(id, 1 + id % 3));
    }
    mirror.reset(
        data,
        Cursor::default(),
        Meta::default(),
        LoadedFrom::Database,
    );

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (mirror, done) = (mirror.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checked = 0u32;
                while !done.load(Ordering::Relaxed) || checked == 0 {
                    let state = mirror.load();
                    let first = listed(&state);
                    std::thread::yield_now();
                    // The writer has moved on by now; this state must not.
                    assert_eq!(listed(&state), first, "a held state changed");
                    checked += 1;
                }
                checked
            })
        })
        .collect();

    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next_id = 6_001;
    for _ in 0..600 {
        let state = mirror.load();
        let mut batch = Vec::new();
        for _ in 0..(1 + x % 40) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = (1 + x % (next_id as u64)) as Id;
            match x % 4 {
                // New entries (half the changes: the last chunks split),
                // entries moved to another tenant, and removals.
                0 | 1 => {
                    batch.push((
                        Entity::DirectoryEntry,
                        next_id,
                        Some(entry(next_id, 1 + (x >> 8) as Id % 3)),
                    ));
                    next_id += 1;
                }
                2 => batch.push((
                    Entity::DirectoryEntry,
                    id,
                    Some(entry(id, 1 + (x >> 8) as Id % 3)),
                )),
                _ => batch.push((Entity::DirectoryEntry, id, None)),
            }
        }
        mirror.apply(batch, state.cursor(), state.meta().clone());
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("a reader failed") > 0);
    }
    listed(&mirror.load());
}

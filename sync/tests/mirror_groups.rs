//! A tenant's directory entries and phones as the mirror lists them
//! (`directory_of`, `phones_of`, from the chunked id groups of
//! `mirror/group.rs`) while a writer applies batches that add, remove and
//! move rows between tenants: every state a reader holds stays as it was,
//! and lists each of its rows under its own tenant exactly once. A batch
//! changes its groups in place once it has its own copy, so this is also
//! what shows that a copy is taken before the first change. Each
//! tenant's count of directory numbers follows its entries the same way.

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
        // None to three, so that a move or a removal changes both
        // tenants' counts of numbers.
        numbers: (0..id % 4)
            .map(|n| DirectoryNumber {
                number: format!("+4420794600{n:02}").into(),
                kind: "work".into(),
            })
            .collect(),
        updated_at: 1,
    })
}

fn phone(id: Id, tenant_id: Id) -> Row {
    let mac = format!("{:012x}", 0x0015_6500_0000 + id);
    Row::Phone(testing::build::phone_row(
        id,
        tenant_id,
        mac.parse().expect("a MAC"),
        Family::Yealink,
    ))
}

/// The ids `state` lists for each tenant, entries then phones, checked
/// against the rows.
fn listed(state: &MirrorState) -> (Vec<Vec<Id>>, Vec<Vec<Id>>) {
    (entries_listed(state), phones_listed(state))
}

fn phones_listed(state: &MirrorState) -> Vec<Vec<Id>> {
    let mut total = 0;
    let lists: Vec<Vec<Id>> = [1, 2, 3]
        .iter()
        .map(|&t| {
            let ids: Vec<Id> = state
                .phones_of(t)
                .map(|p| {
                    assert_eq!(p.tenant_id, t, "phone {} listed under tenant {t}", p.id);
                    p.id
                })
                .collect();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "not ascending, or twice"
            );
            assert_eq!(state.phone_count(t), ids.len(), "tenant {t}'s count");
            total += ids.len();
            ids
        })
        .collect();
    assert_eq!(total, state.counts().phones, "a phone is not listed");
    lists
}

fn entries_listed(state: &MirrorState) -> Vec<Vec<Id>> {
    let mut total = 0;
    let lists: Vec<Vec<Id>> = [1, 2, 3]
        .iter()
        .map(|&t| {
            let mut numbers = 0;
            let ids: Vec<Id> = state
                .directory_of(t)
                .iter()
                .map(|d| {
                    assert_eq!(d.tenant_id, t, "entry {} listed under tenant {t}", d.id);
                    numbers += d.numbers.len() as u64;
                    d.id
                })
                .collect();
            assert_eq!(state.directory_numbers(t), numbers, "tenant {t}'s numbers");
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
        data.push(phone(id, 1 + id % 3));
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
            // Entries and phones alike: new rows (half the changes, so
            // the last chunks split), rows moved to another tenant, and
            // removals.
            let (entity, row): (Entity, fn(Id, Id) -> Row) = if (x >> 40).is_multiple_of(2) {
                (Entity::DirectoryEntry, entry)
            } else {
                (Entity::Phone, phone)
            };
            match x % 4 {
                0 | 1 => {
                    batch.push((entity, next_id, Some(row(next_id, 1 + (x >> 8) as Id % 3))));
                    next_id += 1;
                }
                2 => batch.push((entity, id, Some(row(id, 1 + (x >> 8) as Id % 3)))),
                _ => batch.push((entity, id, None)),
            }
        }
        mirror.apply(batch, state.cursor(), state.meta().clone());
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("a reader failed") > 0);
    }
    let last = mirror.load();
    let counted: Vec<u64> = [1, 2, 3].map(|t| last.directory_numbers(t)).to_vec();
    listed(&last);
    // Counted again from the rows as a load counts them.
    let mut rows = Dataset::default();
    for t in [1, 2, 3] {
        rows.push(tenant(t));
    }
    for t in [1, 2, 3] {
        for d in last.directory_of(t) {
            rows.push(Row::DirectoryEntry((*d).clone()));
        }
    }
    let loaded = Mirror::new();
    loaded.reset(
        rows,
        Cursor::default(),
        Meta::default(),
        LoadedFrom::Database,
    );
    let recounted: Vec<u64> = [1, 2, 3]
        .map(|t| loaded.load().directory_numbers(t))
        .to_vec();
    assert_eq!(recounted, counted);
}

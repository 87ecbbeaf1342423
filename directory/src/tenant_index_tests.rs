//! An index made from the last one must be the index a build makes, edit
//! after edit, and must share what the edit did not reach.

use std::sync::Arc;

use dialtone_sync::stamp::Input;
use dialtone_sync::store::RowChange;
use dialtone_sync::testing::build::{mirror_of, work_numbers};
use dialtone_sync::*;

use super::TenantIndex;

const SUFFIX: usize = 7;

fn tenant(id: Id, region: &str) -> Tenant {
    Tenant {
        id,
        slug: format!("t{id}").into(),
        name: format!("T{id}").into(),
        default_region: region.into(),
        settings: "{}".into(),
        updated_at: 0,
    }
}

fn entry(id: Id, tenant_id: Id, name: &str, company: &str, numbers: &[&str]) -> DirectoryEntry {
    DirectoryEntry {
        id,
        tenant_id,
        external_id: None,
        name: name.into(),
        company: Some(company.into()),
        numbers: work_numbers(numbers),
        updated_at: 0,
    }
}

fn apply(mirror: &Mirror, batch: Vec<RowChange>) {
    let state = mirror.load();
    mirror.apply(batch, state.cursor(), state.meta().clone());
}

fn built(state: &MirrorState, tenant_id: Id) -> TenantIndex {
    let stamp = state.stamp(Input::Directory(tenant_id));
    TenantIndex::build(state, state.tenant(tenant_id).unwrap(), stamp, SUFFIX)
}

fn updated(last: &TenantIndex, state: &MirrorState, tenant_id: Id) -> Option<TenantIndex> {
    let stamp = state.stamp(Input::Directory(tenant_id));
    let never = std::sync::atomic::AtomicBool::new(false);
    last.update(
        state,
        state.tenant(tenant_id).unwrap(),
        stamp,
        usize::MAX,
        &never,
    )
}

/// A small pool, so that entries share numbers and last digits, spell one
/// number several ways, and hold numbers that will not normalize.
const NUMBERS: &[&str] = &[
    "+1 555 010 1234",
    "555-010-1234",
    "(555) 010-1299",
    "+44 20 7010 1234",
    "0101234",
    "+15550109876",
    "call 010-0042 please",
    "01632 960123",
    "+61 2 5550 1234",
    "555 010 4242",
    "12",
];
const NAMES: &[&str] = &["Alice", "Bob", "Carol", "Alice"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn numbers(&mut self) -> Vec<&'static str> {
        (0..self.below(3))
            .map(|_| NUMBERS[self.below(NUMBERS.len())])
            .collect()
    }
}

#[test]
fn an_updated_index_is_the_index_a_build_makes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut data = Dataset {
        tenants: vec![tenant(1, "US"), tenant(2, "US")],
        ..Dataset::default()
    };
    for id in 1..=40 {
        let name = NAMES[rng.below(NAMES.len())];
        data.directory_entries
            .push(entry(id, 1 + id % 2, name, "Co", &rng.numbers()));
    }
    let mirror = mirror_of(data);
    let mut last = built(&mirror.load(), 1);
    let (mut updates, mut builds) = (0, 0);
    let mut next_id = 41;
    for step in 0..300 {
        let state = mirror.load();
        let mut batch = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let id = 1 + rng.below(next_id as usize - 1) as Id;
            let name = NAMES[rng.below(NAMES.len())];
            let old = state.directory_entry(id);
            let row = match rng.below(6) {
                // A new entry, of either tenant.
                0 => {
                    next_id += 1;
                    let row = entry(
                        next_id - 1,
                        1 + rng.below(2) as Id,
                        name,
                        "Co",
                        &rng.numbers(),
                    );
                    batch.push((
                        Entity::DirectoryEntry,
                        row.id,
                        Some(Row::DirectoryEntry(row)),
                    ));
                    continue;
                }
                // Renamed, numbers unchanged: it moves under its numbers.
                1 => old.map(|o| {
                    let numbers: Vec<&str> = o.numbers.iter().map(|n| &*n.number).collect();
                    entry(id, o.tenant_id, name, "Co", &numbers)
                }),
                // Only shown fields: filed where it was.
                2 => old.map(|o| {
                    let numbers: Vec<&str> = o.numbers.iter().map(|n| &*n.number).collect();
                    entry(id, o.tenant_id, &o.name, &format!("Co {step}"), &numbers)
                }),
                // New numbers.
                3 => old.map(|o| entry(id, o.tenant_id, &o.name, "Co", &rng.numbers())),
                // To the other tenant.
                4 => old.map(|o| {
                    let numbers: Vec<&str> = o.numbers.iter().map(|n| &*n.number).collect();
                    entry(id, 3 - o.tenant_id, &o.name, "Co", &numbers)
                }),
                _ => {
                    batch.push((Entity::DirectoryEntry, id, None));
                    continue;
                }
            };
            if let Some(row) = row {
                batch.push((Entity::DirectoryEntry, id, Some(Row::DirectoryEntry(row))));
            }
        }
        apply(&mirror, batch);
        let state = mirror.load();
        let want = built(&state, 1);
        last = match updated(&last, &state, 1) {
            Some(index) => {
                updates += 1;
                assert_eq!(index.listing(), want.listing(), "step {step}");
                index
            }
            None => {
                builds += 1;
                want
            }
        };
        for number in NUMBERS {
            let (a, b) = (last.find(number), built(&state, 1).find(number));
            assert_eq!(
                a.map(|f| (f.name, f.entry.id, f.by_suffix)),
                b.map(|f| (f.name, f.entry.id, f.by_suffix)),
                "step {step}, {number}"
            );
        }
    }
    // Most steps change a few of some twenty entries: an update each.
    assert!(updates > 200, "{updates} updates, {builds} builds");
}

/// Tenant 1 with `count` entries, `N{id}`, each with one number.
fn numbered(count: Id, number: impl Fn(Id) -> String) -> Arc<Mirror> {
    let mut data = Dataset {
        tenants: vec![tenant(1, "US")],
        ..Dataset::default()
    };
    for id in 1..=count {
        data.directory_entries
            .push(entry(id, 1, &format!("N{id}"), "Co", &[&number(id)]));
    }
    mirror_of(data)
}

#[test]
fn a_reload_and_a_shown_field_cost_no_normalizing() {
    let mirror = numbered(200, |id| format!("+1 555 01{:01} {:04}", id % 10, id));
    let last = built(&mirror.load(), 1);
    // A reload: every entry is a new `Arc` with the same content.
    let reloaded = mirror_of(mirror.load().to_dataset());
    let index = updated(&last, &reloaded.load(), 1).expect("an update, not a build");
    assert_eq!(index.listing().0, last.listing().0);
    // The update keeps the new rows, so the next compares by pointer.
    let found = index.find("+15550130013").unwrap();
    let state = reloaded.load();
    assert!(Arc::ptr_eq(
        &found.entry,
        state.directory_entry(13).unwrap()
    ));

    // A region change reads every number anew: a build.
    let mut data = reloaded.load().to_dataset();
    data.tenants[0].default_region = "GB".into();
    let moved = mirror_of(data);
    assert!(updated(&index, &moved.load(), 1).is_none());
}

#[test]
fn an_edit_shares_what_it_did_not_reach() {
    let mirror = numbered(12_000, |id| {
        format!("+1 201 {:03} {:04}", 200 + id / 10_000, id % 10_000)
    });
    let last = built(&mirror.load(), 1);
    apply(
        &mirror,
        vec![(
            Entity::DirectoryEntry,
            7,
            Some(Row::DirectoryEntry(entry(
                7,
                1,
                "Renamed",
                "Co",
                &["+1 555 010 7777"],
            ))),
        )],
    );
    let state = mirror.load();
    let index = updated(&last, &state, 1).unwrap();
    let (shared, of) = index.shared_with(&last);
    // The entry's old and new numbers and its row: at most five shards copied.
    assert!(of >= 3 * 8, "only {of} shards");
    assert!(shared + 5 >= of, "{shared} of {of} shards shared");
    assert_eq!(&*index.find("5550107777").unwrap().entry.name, "Renamed");
    assert!(index.find("+12012000007").is_none());
    // The last index is untouched, for the lookups still holding it.
    assert_eq!(&*last.find("+12012000007").unwrap().entry.name, "N7");
    assert_eq!(index.listing(), built(&state, 1).listing());
}

#[test]
fn a_stopped_update_makes_no_index() {
    let mirror = numbered(3_000, |id| format!("+1 201 555 {:04}", id));
    let last = built(&mirror.load(), 1);
    // A third of the entries renumbered: an update, not a build.
    let batch = (1..=1_000)
        .map(|id| {
            let moved = format!("+1 202 555 {:04}", id);
            let row = entry(id, 1, &format!("N{id}"), "Co", &[&moved]);
            (Entity::DirectoryEntry, id, Some(Row::DirectoryEntry(row)))
        })
        .collect();
    apply(&mirror, batch);
    let state = mirror.load();
    let (tenant, stamp) = (state.tenant(1).unwrap(), state.stamp(Input::Directory(1)));
    let stop = std::sync::atomic::AtomicBool::new(true);
    assert!(last
        .update(&state, tenant, stamp, usize::MAX, &stop)
        .is_none());
    let index = updated(&last, &state, 1).expect("an update when not stopped");
    assert_eq!(index.listing(), built(&state, 1).listing());
}

/// Most of a directory on one company line, most of it renamed (among
/// names the others have: the id breaks ties), some of it removed, new
/// entries (one with the line twice, one spelling it otherwise): the
/// update files it all where a build would.
#[test]
fn many_changes_under_one_shared_number_file_as_a_build_does() {
    const LINE: &str = "+1 555 010 1234";
    const COUNT: Id = 3_000;
    let mirror = numbered(COUNT, |_| LINE.to_string());
    let last = built(&mirror.load(), 1);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut batch = Vec::new();
    for id in 1..=COUNT {
        let row = match rng.below(8) {
            0..=4 => {
                let name = format!("N{}", 1 + rng.below(COUNT as usize));
                Some(Row::DirectoryEntry(entry(id, 1, &name, "Co", &[LINE])))
            }
            5 => None,
            _ => continue,
        };
        batch.push((Entity::DirectoryEntry, id, row));
    }
    let new: [(&str, &[&str]); 3] = [
        ("N7", &[LINE, LINE]),
        ("A", &["555-010-1234"]),
        ("Z", &[LINE, "0101234"]),
    ];
    for (n, (name, numbers)) in new.into_iter().enumerate() {
        let id = COUNT + 1 + n as Id;
        let row = entry(id, 1, name, "Co", numbers);
        batch.push((Entity::DirectoryEntry, id, Some(Row::DirectoryEntry(row))));
    }
    apply(&mirror, batch);
    let state = mirror.load();
    let index = updated(&last, &state, 1).expect("an update, not a build");
    assert_eq!(index.listing(), built(&state, 1).listing());
    let (numbers, _) = index.listing();
    assert!(numbers.iter().any(|(_, ids)| ids.len() > 2_000));
}

//! A restarted node builds its large directories' indexes from the readings
//! their last whole builds kept on disk (`LocalDirectory::keeping_readings`),
//! normalizing only numbers added since, and answers every lookup as a
//! build from nothing would.

use std::future::pending;
use std::path::PathBuf;
use std::sync::Arc;

use dialtone_directory::local::{LocalDirectory, WARM_MIN_ENTRIES};
use dialtone_sync::testing::build::{mirror_of, work_numbers};
use dialtone_sync::*;

const ENTRIES: usize = WARM_MIN_ENTRIES + 500;

fn number(n: usize) -> String {
    format!(
        "({}) {:03}-{:04}",
        201 + n % 7,
        200 + n / 10_000,
        n % 10_000
    )
}

fn tenant(id: Id, region: &str) -> Tenant {
    Tenant {
        id,
        slug: format!("t{id}").into(),
        name: format!("Tenant {id}").into(),
        default_region: region.into(),
        settings: "{}".into(),
        updated_at: 0,
    }
}

fn entry(id: Id, tenant_id: Id, number: &str) -> DirectoryEntry {
    DirectoryEntry {
        id,
        tenant_id,
        external_id: None,
        name: format!("E{id}").into(),
        company: None,
        numbers: work_numbers(&[number]),
        updated_at: 0,
    }
}

/// Tenant 1 with `ENTRIES` entries (entry `i + 1` has `number(i)`), as
/// `edit` leaves them; tenant 2 small.
fn mirror(region: &str, edit: impl FnOnce(&mut Vec<DirectoryEntry>)) -> Arc<Mirror> {
    let mut data = Dataset::default();
    data.tenants.push(tenant(1, region));
    data.tenants.push(tenant(2, "US"));
    data.directory_entries = (0..ENTRIES)
        .map(|i| entry(i as Id + 1, 1, &number(i)))
        .collect();
    data.directory_entries
        .push(entry(ENTRIES as Id + 1, 2, "+1 555 010 0001"));
    edit(&mut data.directory_entries);
    mirror_of(data)
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dialtone-kept-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every entry's number answers as a build from nothing answers it.
fn answers_as_a_fresh_build(mirror: &Arc<Mirror>, local: &LocalDirectory, tenant_id: Id) {
    let fresh = LocalDirectory::new(mirror.clone(), 7, 10);
    let state = mirror.load();
    let mut asked = 0;
    for e in state.directory_of(tenant_id) {
        for n in &e.numbers {
            let name = |l: &LocalDirectory| {
                l.lookup(&state, tenant_id, &n.number)
                    .map(|f| f.entry.name.clone())
            };
            assert_eq!(name(local), name(&fresh), "{}", n.number);
            assert_eq!(name(local).as_deref(), Some(&*e.name));
            asked += 1;
        }
    }
    assert!(asked >= ENTRIES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_normalizes_only_numbers_added_since() {
    let dir = dir("restart");
    let before = mirror("US", |_| {});
    let first = LocalDirectory::keeping_readings(before.clone(), 7, 10, Some(dir.clone()));
    assert_eq!(first.warm(pending()).await.tenants, 1);
    assert_eq!(first.readings_taken(), 0, "nothing kept yet");
    assert!(dir.join("directory-readings-1.bin").exists());
    assert!(
        !dir.join("directory-readings-2.bin").exists(),
        "a small directory keeps nothing"
    );

    // The "restart": entry 1 renumbered, one entry added, one removed.
    let after = mirror("US", |entries| {
        entries[0] = entry(1, 1, "(555) 010-7777");
        entries.push(entry(9_999, 1, "(555) 010-8888"));
        entries.remove(5);
    });
    let second = LocalDirectory::keeping_readings(after.clone(), 7, 10, Some(dir.clone()));
    assert_eq!(second.warm(pending()).await.tenants, 1);
    assert_eq!(
        second.readings_taken(),
        ENTRIES as u64 - 2,
        "all but the two new numbers (and the removed one) were kept"
    );
    answers_as_a_fresh_build(&after, &second, 1);
    let state = after.load();
    assert!(
        second.lookup(&state, 1, &number(0)).is_none(),
        "entry 1's old number"
    );
    assert!(
        second.lookup(&state, 1, &number(5)).is_none(),
        "the removed entry"
    );

    // The file now holds exactly what the second build read, so a third
    // start takes all of it and leaves the file as it is.
    let file = dir.join("directory-readings-1.bin");
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
    let written = inode();
    let third = LocalDirectory::keeping_readings(after.clone(), 7, 10, Some(dir.clone()));
    third.warm(pending()).await;
    assert_eq!(third.readings_taken(), ENTRIES as u64);
    assert_eq!(inode(), written, "not written again");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_of_another_region_are_not_taken() {
    let dir = dir("region");
    let us = mirror("US", |_| {});
    LocalDirectory::keeping_readings(us, 7, 10, Some(dir.clone()))
        .warm(pending())
        .await;
    // National spellings read in another region are other numbers.
    let gb = mirror("GB", |_| {});
    let local = LocalDirectory::keeping_readings(gb.clone(), 7, 10, Some(dir.clone()));
    assert_eq!(local.warm(pending()).await.tenants, 1);
    assert_eq!(local.readings_taken(), 0);
    answers_as_a_fresh_build(&gb, &local, 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_removes_files_of_directories_it_no_longer_builds_ahead() {
    let dir = dir("removed");
    let big = mirror("US", |_| {});
    LocalDirectory::keeping_readings(big, 7, 10, Some(dir.clone()))
        .warm(pending())
        .await;
    assert!(dir.join("directory-readings-1.bin").exists());
    // Tenant 1 shrank under the threshold.
    let small = mirror("US", |entries| entries.truncate(WARM_MIN_ENTRIES - 1));
    LocalDirectory::keeping_readings(small, 7, 10, Some(dir.clone()))
        .warm(pending())
        .await;
    assert!(!dir.join("directory-readings-1.bin").exists());
    let _ = std::fs::remove_dir_all(dir);
}

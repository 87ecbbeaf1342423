//! The local directory's index under concurrency: lookups each read one
//! mirror state while a writer edits, removes and adds entries, and every
//! answer must be that state's, whether its index was built whole, made
//! from the last one, or made for a state the mirror has moved past.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dialtone_directory::local::{LocalDirectory, WARM_MIN_ENTRIES};
use dialtone_sync::testing::build::{mirror_of, work_numbers};
use dialtone_sync::*;

const ENTRIES: Id = 500;
/// Enough that a warm-up builds the tenant through the edits' removals.
const WARMED_ENTRIES: Id = WARM_MIN_ENTRIES as Id + 500;

/// Entry `id`'s number, spelled two ways: an edit may change the spelling
/// (the entry is filed again) without changing the number.
fn number(id: Id, spelling: u64) -> String {
    let (exchange, line) = (200 + id / 1_000, id % 1_000);
    match spelling % 2 {
        0 => format!("+1 201 {exchange:03} {line:04}"),
        _ => format!("(201) {exchange:03}-{line:04}"),
    }
}

fn entry(id: Id, name: String, spelling: u64) -> DirectoryEntry {
    DirectoryEntry {
        id,
        tenant_id: 1,
        external_id: None,
        name: name.into(),
        company: None,
        numbers: work_numbers(&[number(id, spelling)]),
        updated_at: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_answer_from_their_own_state_while_entries_change() {
    let (checked, warm_ups) = lookups_during_edits(ENTRIES, false).await;
    assert!(checked > 400, "only {checked} lookups ran");
    assert_eq!(warm_ups, 0);
}

/// The same with a node's warm-up building the tenant again and again
/// beside the lookups, through the same per-tenant build slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_answer_from_their_own_state_while_a_warm_up_builds() {
    let (checked, warm_ups) = lookups_during_edits(WARMED_ENTRIES, true).await;
    assert!(checked > 400, "only {checked} lookups ran");
    assert!(warm_ups > 10, "only {warm_ups} warm-ups readied the tenant");
}

/// Four lookup tasks check every answer against the state they read while
/// a writer edits, removes and re-adds entries of a tenant of `entries`;
/// with `warm`, a fifth task runs `warm` in a loop. Lookups checked, and
/// warm-ups that readied the tenant.
async fn lookups_during_edits(entries: Id, warm: bool) -> (u64, u64) {
    let data = Dataset {
        tenants: vec![dialtone_sync::testing::build::tenant_row("{}")],
        directory_entries: (1..=entries)
            .map(|id| entry(id, format!("E{id}"), 0))
            .collect(),
        ..Dataset::default()
    };
    let mirror = mirror_of(data);
    // The warm-up's whole builds also read and write kept readings.
    let kept = warm.then(|| {
        let dir = std::env::temp_dir().join(format!("dialtone-concurrent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    if kept.is_some() {
        // A node before this one kept its readings: this one's first build
        // takes them while the writer edits.
        LocalDirectory::keeping_readings(mirror.clone(), 7, 100, kept.clone())
            .warm(std::future::pending())
            .await;
    }
    let local = Arc::new(LocalDirectory::keeping_readings(
        mirror.clone(),
        7,
        100,
        kept.clone(),
    ));
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..4u64)
        .map(|r| {
            let (mirror, local, done) = (mirror.clone(), local.clone(), done.clone());
            tokio::spawn(async move {
                let mut x = 0x9e37_79b9_7f4a_7c15 ^ (r + 1);
                let mut checked = 0u64;
                while !done.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = 1 + (x % entries as u64) as Id;
                    let state = mirror.load();
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    let found = local
                        .find(&state, 1, &number(id, x >> 32), deadline)
                        .await
                        .expect("the index was not ready within 30 s");
                    let want = state.directory_entry(id).map(|e| e.name.clone());
                    assert_eq!(
                        found.map(|f| f.entry.name.clone()),
                        want,
                        "entry {id} at mirror version {}",
                        state.version()
                    );
                    checked += 1;
                    tokio::task::yield_now().await;
                }
                checked
            })
        })
        .collect();

    let warm_up = warm.then(|| {
        let (local, done) = (local.clone(), done.clone());
        tokio::spawn(async move {
            let mut readied = 0u64;
            while !done.load(Ordering::Relaxed) {
                readied += local.warm(std::future::pending()).await.tenants as u64;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            readied
        })
    });

    // The first whole build on the state the former node kept readings
    // of, before any edit: one started later, on a loaded machine, meets
    // more new spellings than a kept file may lack and takes none.
    if kept.is_some() {
        for _ in 0..3000 {
            if local.builds() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Edits, spellings, removals and re-additions, one batch at a time.
    let writer = {
        let mirror = mirror.clone();
        tokio::task::spawn_blocking(move || {
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            for step in 0..400u64 {
                let mut batch = Vec::new();
                for _ in 0..1 + x % 5 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = 1 + (x % entries as u64) as Id;
                    let row = match x % 4 {
                        3 => None,
                        _ => Some(Row::DirectoryEntry(entry(
                            id,
                            format!("E{id} v{step}"),
                            x >> 8,
                        ))),
                    };
                    batch.push((Entity::DirectoryEntry, id, row));
                }
                let state = mirror.load();
                mirror.apply(batch, state.cursor(), state.meta().clone());
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    writer.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let mut checked = 0;
    for reader in readers {
        checked += reader.await.unwrap();
    }
    let warm_ups = match warm_up {
        Some(task) => task.await.unwrap(),
        None => 0,
    };
    eprintln!(
        "{checked} lookups checked; {} indexes made, {} of them updates; {warm_ups} warm-ups; \
         {} readings taken from kept ones",
        local.builds(),
        local.updates(),
        local.readings_taken()
    );
    if let Some(dir) = kept {
        assert!(local.readings_taken() > 0, "no kept reading was taken");
        let _ = std::fs::remove_dir_all(dir);
    }
    assert!(local.updates() > 50, "only {} updates", local.updates());
    (checked, warm_ups)
}

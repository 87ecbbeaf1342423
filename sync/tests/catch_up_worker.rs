//! A large catch-up is applied with the worker's other tasks moved off it
//! first: applying is synchronous, and copies every shard it touches.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dialtone_sync::*;

/// `n` directory entries of the first tenant held in memory only, enough
/// that copying or building the tables takes hundreds of milliseconds.
fn hold_entries(data: &mut Dataset, n: i64) {
    let acme = data.tenants[0].id;
    for id in 1_000_000..1_000_000 + n {
        data.directory_entries.push(DirectoryEntry {
            id,
            tenant_id: acme,
            external_id: None,
            name: format!("Held {id}").into(),
            company: None,
            numbers: work_numbers(&["+1 555 010 1234"]),
            updated_at: 0,
        });
    }
}

/// The longest the worker's other task waited between its ticks, until
/// `done`.
async fn longest_tick(done: Arc<AtomicBool>) -> Duration {
    let mut longest = Duration::ZERO;
    let mut last = Instant::now();
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        longest = longest.max(last.elapsed());
        last = Instant::now();
    }
    longest
}

/// One worker: a task that held it would hold every other task.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_large_catch_up_leaves_the_worker_to_other_tasks() {
    let (_db, store) = sqlite_with_acme().await;
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    // A directory held in memory only, large enough that applying a
    // thousand changes copies tables of hundreds of thousands of rows.
    let state = mirror.load();
    let mut data = state.to_dataset();
    hold_entries(&mut data, 500_000);
    mirror.reset(
        data,
        state.cursor(),
        state.meta().clone(),
        LoadedFrom::Database,
    );
    let edits: Vec<Mutation> = (0..1_000)
        .map(|n| entry("acme", &format!("e{n}"), "Edited", &["+1 555 010 0000"]))
        .collect();
    store.apply(&edits, &audit("edit")).await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn(longest_tick(done.clone()));
    // Let the ticker start before the catch-up takes the worker.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let catch_up = tokio::spawn({
        let (mirror, store) = (mirror.clone(), store.clone());
        async move {
            let started = Instant::now();
            let changed = watcher::catch_up(&mirror, &*store).await.unwrap();
            (changed, started.elapsed())
        }
    });
    let (changed, took) = catch_up.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let longest = ticker.await.unwrap();
    assert_eq!(changed, 1_000);
    eprintln!("the catch-up took {took:?}; the other task waited at most {longest:?}");
    // Relative to the catch-up, not a fixed time: applied in place, the
    // other task would have waited for all of it.
    assert!(
        longest < took / 2,
        "the other task waited {longest:?} during a catch-up of {took:?}"
    );
}

/// A full reload builds the whole state, and frees the old one, with the
/// worker's other tasks moved off it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_full_reload_leaves_the_worker_to_other_tasks() {
    let (_db, store) = sqlite_with_acme().await;
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let state = mirror.load();
    let mut data = state.to_dataset();
    hold_entries(&mut data, 400_000);
    let (cursor, meta) = (state.cursor(), state.meta().clone());
    drop(state);
    // Copied before the ticker starts: only the reloads are timed.
    let copies = vec![data.clone(), data];
    let done = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn(longest_tick(done.clone()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reload = tokio::spawn({
        let mirror = mirror.clone();
        async move {
            let started = Instant::now();
            // Twice: the second frees the first's large state.
            for data in copies {
                mirror.reset(data, cursor, meta.clone(), LoadedFrom::Database);
            }
            started.elapsed()
        }
    });
    let took = reload.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let longest = ticker.await.unwrap();
    eprintln!("the reloads took {took:?}; the other task waited at most {longest:?}");
    assert!(
        longest < took / 2,
        "the other task waited {longest:?} during reloads of {took:?}"
    );
}

//! A wall clock that was ahead when a sync ran, and has stepped back since:
//! the sync times it left in the future postpone nothing.

use dialtone_sync::now_millis;

use super::schedule::{forget_future_syncs, next_sync};
use super::tests::{data, raw};
use super::*;

const DAY_MS: i64 = 86_400_000;

/// Synced "tomorrow": the next syncs are due by their intervals from now,
/// and stay due there as time passes rather than moving on with it.
#[test]
fn a_sync_time_in_the_future_does_not_postpone_the_next() {
    let now = now_millis();
    let mut d = data(vec![raw("cn=ann", Some("Ann"), &["5550101234"])]);
    d.last_full_sync = Some(now + DAY_MS);
    d.last_full_ms = Some(100);
    assert!(forget_future_syncs(&mut d, now));
    let (full, due) = next_sync(&d, 10_000, 5_000);
    assert!(full && due <= now + 10_000, "due at {due}, now {now}");

    d.watermark = Some(Watermark::Usn(7));
    d.last_incremental_sync = Some(now + DAY_MS);
    assert!(forget_future_syncs(&mut d, now + 1_000));
    let (full, due) = next_sync(&d, 10_000, 5_000);
    assert!(!full && due <= now + 6_000, "due at {due}, now {now}");

    // Looked at again later: the same due time, which comes.
    assert!(!forget_future_syncs(&mut d, now + 4_000));
    assert_eq!(next_sync(&d, 10_000, 5_000), (false, due));
}

/// Clocks a little apart are not a step: such a time is kept.
#[test]
fn a_sync_time_just_ahead_is_kept() {
    let now = now_millis();
    let mut d = data(Vec::new());
    d.last_full_sync = Some(now + 30_000);
    assert!(!forget_future_syncs(&mut d, now));
    assert_eq!(d.last_full_sync, Some(now + 30_000));
}

/// The file keeps the future time across a restart; loaded, it counts as
/// synced now.
#[test]
fn a_mirror_file_written_while_the_clock_was_ahead_loads_as_synced_now() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = data(vec![raw("cn=ann", Some("Ann"), &["5550101234"])]);
    d.watermark = Some(Watermark::Usn(7));
    d.last_full_sync = Some(now_millis() + DAY_MS);
    d.last_incremental_sync = Some(now_millis() + DAY_MS);
    let path = store::path(dir.path(), 7);
    store::write(&path, "fp1", &d).unwrap();
    let loaded = store::read(&path, "fp1", 10).unwrap().unwrap();
    let after = now_millis();
    assert!(loaded.last_full_sync.is_some_and(|t| t <= after));
    assert!(loaded.last_incremental_sync.is_some_and(|t| t <= after));
    assert_eq!(loaded.entries, d.entries);
}

/// A tenant's gate moved on by a sync that ended "tomorrow" opens after
/// that sync's own spacing from now.
#[test]
fn a_tenants_gate_waits_no_longer_than_its_own_wait() {
    let gates = gates::SyncGates::default();
    gates.synced(3, now_millis() + DAY_MS, 100);
    let open = gates.open_at(3);
    assert!(open <= now_millis() + 1_900, "open at {open}");
    assert!(gates.start(3, open).is_some());
}

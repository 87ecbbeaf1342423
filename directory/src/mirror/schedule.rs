//! When a mirror's next sync is due. Sync times are wall-clock (Unix ms):
//! they are shown to the operator and kept in the mirror file across
//! restarts. But a clock that was ahead when a sync ran and has stepped
//! back since (NTP) left them in the future, in memory and in the file,
//! and every sync due "an interval after the last" waited out the step
//! too, while the mirror, looking just synced, served old names.

use super::gates::SYNC_SPACING;
use super::MirrorData;

/// How far ahead of now a sync time may be before it is taken for a clock
/// that has stepped back since: more than two nodes' clocks disagree by,
/// less than anyone would wait for a sync.
const CLOCK_ALLOWANCE_MS: i64 = 60_000;

/// `at`, or `now` if `at` is further in the future than the allowance.
pub(super) fn not_in_future(at: i64, now: i64) -> i64 {
    if at > now.saturating_add(CLOCK_ALLOWANCE_MS) {
        now
    } else {
        at
    }
}

/// Takes the data's sync times that are in the future for `now`, in
/// `data` itself: the next syncs are then due by their intervals from
/// now. Kept, not worked out again at each look, or the due time would
/// move on with the clock and never come. Returns whether any changed.
pub(super) fn forget_future_syncs(data: &mut MirrorData, now: i64) -> bool {
    let before = (data.last_full_sync, data.last_incremental_sync);
    data.last_full_sync = data.last_full_sync.map(|t| not_in_future(t, now));
    data.last_incremental_sync = data.last_incremental_sync.map(|t| not_in_future(t, now));
    before != (data.last_full_sync, data.last_incremental_sync)
}

/// Whether the next sync is a full one, and when it is due (Unix ms): at
/// the source's intervals, each spaced from the last sync of its kind by
/// [`SYNC_SPACING`] times that sync's duration. Times in the future are
/// taken as they are: [`forget_future_syncs`] first.
pub(super) fn next_sync(data: &MirrorData, full_every: i64, incremental_every: i64) -> (bool, i64) {
    let spaced = |every: i64, took: Option<u64>| {
        every.max((took.unwrap_or(0) as i64).saturating_mul(SYNC_SPACING))
    };
    let next_full = data.last_full_sync.map_or(0, |t| {
        t.saturating_add(spaced(full_every, data.last_full_ms))
    });
    let next_incremental = match (&data.watermark, incremental_every) {
        (Some(_), every) if every > 0 => data.synced_at().map_or(0, |t| {
            t.saturating_add(spaced(every, data.last_incremental_ms))
        }),
        _ => i64::MAX,
    };
    (
        next_full <= next_incremental,
        next_full.min(next_incremental),
    )
}

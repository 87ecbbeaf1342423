//! The refetch watch's schedule and bound.

use super::*;

/// Polled after 1 s, then ever further apart up to 30 s: a phone that
/// never fetches costs a few dozen history queries in the window, not one
/// a second.
#[test]
fn polls_back_off_to_thirty_seconds() {
    let start = Instant::now();
    let mut watch = Watch::new(10);
    watch.add(7, start);
    assert!(watch.take_due(start, 10).is_empty(), "not before 1 s");
    let mut now = start;
    let mut polls = 0;
    let mut gaps = Vec::new();
    let mut last = start;
    while now < start + Duration::from_millis(REFETCH_WINDOW_MS as u64) {
        now += FIRST_POLL;
        for (seq, waited) in watch.take_due(now, 10) {
            assert_eq!(seq, 7);
            polls += 1;
            gaps.push((now - last).as_secs());
            last = now;
            watch.again(seq, waited, now);
        }
    }
    assert_eq!(&gaps[..7], [1, 2, 4, 8, 16, 30, 30]);
    assert!(polls <= 30, "{polls} polls in ten minutes");
}

#[test]
fn at_most_a_batch_and_the_oldest_goes_first_when_full() {
    let now = Instant::now();
    let mut watch = Watch::new(3);
    for seq in 1..=4 {
        watch.add(seq, now);
    }
    assert_eq!(watch.len(), 3);
    let due = watch.take_due(now + FIRST_POLL, 2);
    assert_eq!(due, [(2, FIRST_POLL), (3, FIRST_POLL)]);
    assert_eq!(watch.len(), 1);
}

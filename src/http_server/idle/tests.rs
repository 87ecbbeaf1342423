//! The registry's choice of connection to close for a newcomer, on the
//! tests' own clock: each step happens at an instant the test names, so a
//! busy machine cannot move a connection across a threshold.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Only a connection idle for `after` is taken, the one idle the
/// longest first, and one still waiting for its first request only
/// once it has waited `first_after`; one with a request in the router
/// is not.
#[tokio::test]
async fn the_longest_idle_connection_goes_first() {
    let idle = Idle::new(ms(50), ms(150));
    let t0 = Instant::now();
    let waiting_for_its_first = idle.enter_at(false, None, t0);
    let older = idle.enter_at(true, None, t0 + ms(10));
    let newer = idle.enter_at(true, None, t0 + ms(30));
    let busy = idle.enter_at(true, None, t0 + ms(30));
    busy.lull().begin();
    assert!(!idle.evict_at(t0 + ms(59)), "none idle for 50 ms yet");
    assert!(idle.evict_at(t0 + ms(60)));
    assert!(older.lull().evicted.load(Ordering::Acquire));
    assert!(!waiting_for_its_first.lull().evicted.load(Ordering::Acquire));
    tokio::time::timeout(Duration::from_secs(1), older.evicted())
        .await
        .expect("the evicted connection is woken");
    assert!(!idle.evict_at(t0 + ms(79)), "the newer one idle for 49 ms");
    assert!(idle.evict_at(t0 + ms(80)));
    assert!(newer.lull().evicted.load(Ordering::Acquire));
    assert!(!idle.evict_at(t0 + ms(149)), "its first request has 150 ms");
    assert!(idle.evict_at(t0 + ms(150)));
    assert!(waiting_for_its_first.lull().evicted.load(Ordering::Acquire));
    assert!(
        !idle.evict_at(t0 + Duration::from_secs(3600)),
        "a connection with a request in flight is kept"
    );
    // Its response ends (on the real clock, which `Tracked` reads, between
    // these two instants): idle from then on. The 2 ms cover the
    // registry's whole milliseconds.
    let before = Instant::now();
    drop(
        busy.lull()
            .track(axum::response::Response::new(Body::empty())),
    );
    let answered = Instant::now();
    assert!(!idle.evict_at(before + ms(48)), "just answered");
    assert!(idle.evict_at(answered + ms(52)));
    assert!(busy.lull().evicted.load(Ordering::Acquire));
    drop((waiting_for_its_first, older, newer, busy));
    assert!(idle.lock().listed.is_empty());
}

/// For a newcomer from a lighter source, a connection of the heaviest
/// one that has waited `after` goes, still without its first request
/// or between requests (the longest waiting first), sooner than `evict`
/// would take the first; one with a request in flight, one that has
/// waited less, and other sources' connections stay.
#[tokio::test]
async fn a_heavy_source_gives_up_a_connection_waiting_past_after() {
    let idle = Idle::new(ms(50), Duration::from_secs(60));
    let heavy: IpAddr = "192.0.2.1".parse().unwrap();
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    let t0 = Instant::now();
    let trickling = idle.enter_at(false, Some(heavy), t0);
    let between_requests = idle.enter_at(true, Some(heavy), t0 + ms(5));
    let busy = idle.enter_at(true, Some(heavy), t0 + ms(5));
    busy.lull().begin();
    let elsewhere = idle.enter_at(false, Some(other), t0 + ms(5));
    let exempt = idle.enter_at(false, None, t0 + ms(5));
    assert!(
        !idle.evict_from_at(heavy, t0 + ms(49)),
        "none has waited 50 ms"
    );
    let just_answered = idle.enter_at(true, Some(heavy), t0 + ms(65));
    assert!(idle.evict_at(t0 + ms(65)), "between requests for 60 ms");
    assert!(between_requests.lull().evicted.load(Ordering::Acquire));
    assert!(
        !idle.evict_at(t0 + ms(65)),
        "its first request has a minute"
    );
    assert!(idle.evict_from_at(heavy, t0 + ms(65)));
    assert!(trickling.lull().evicted.load(Ordering::Acquire));
    assert!(
        !idle.evict_from_at(heavy, t0 + ms(114)),
        "busy, or idle for 49 ms"
    );
    assert!(!busy.lull().evicted.load(Ordering::Acquire));
    assert!(!just_answered.lull().evicted.load(Ordering::Acquire));
    assert!(!elsewhere.lull().evicted.load(Ordering::Acquire));
    assert!(!exempt.lull().evicted.load(Ordering::Acquire));
    assert!(idle.evict_from_at(heavy, t0 + ms(115)));
    assert!(just_answered.lull().evicted.load(Ordering::Acquire));
    assert!(
        !idle.evict_from_at(heavy, t0 + Duration::from_secs(3600)),
        "its request is in flight"
    );
    drop((
        trickling,
        between_requests,
        just_answered,
        busy,
        elsewhere,
        exempt,
    ));
    let open = idle.lock();
    assert!(open.listed.is_empty() && open.by_source.is_empty());
}

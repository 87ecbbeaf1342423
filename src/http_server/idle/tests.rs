//! The registry's choice of connection to close for a newcomer.

use super::*;

/// Only a connection idle for `after` is taken, the one idle the
/// longest first, and one still waiting for its first request only
/// once it has waited `first_after`; one with a request in the router
/// is not.
#[tokio::test]
async fn the_longest_idle_connection_goes_first() {
    let idle = Idle::new(Duration::from_millis(50), Duration::from_millis(150));
    let waiting_for_its_first = idle.enter(false, None);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let older = idle.enter(true, None);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let newer = idle.enter(true, None);
    let busy = idle.enter(true, None);
    busy.lull().begin();
    assert!(!idle.evict(), "none idle for long enough yet");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(idle.evict());
    assert!(older.lull().evicted.load(Ordering::Acquire));
    assert!(!waiting_for_its_first.lull().evicted.load(Ordering::Acquire));
    tokio::time::timeout(Duration::from_secs(1), older.evicted())
        .await
        .expect("the evicted connection is woken");
    assert!(idle.evict());
    assert!(newer.lull().evicted.load(Ordering::Acquire));
    assert!(!idle.evict(), "its first request has 150 ms");
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(idle.evict());
    assert!(waiting_for_its_first.lull().evicted.load(Ordering::Acquire));
    assert!(
        !idle.evict(),
        "a connection with a request in flight is kept"
    );
    // Its response ends: idle from then on.
    drop(
        busy.lull()
            .track(axum::response::Response::new(Body::empty())),
    );
    assert!(!idle.evict(), "just answered");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(idle.evict());
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
    let idle = Idle::new(Duration::from_millis(50), Duration::from_secs(60));
    let heavy: IpAddr = "192.0.2.1".parse().unwrap();
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    let trickling = idle.enter(false, Some(heavy));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let between_requests = idle.enter(true, Some(heavy));
    let busy = idle.enter(true, Some(heavy));
    busy.lull().begin();
    let elsewhere = idle.enter(false, Some(other));
    let exempt = idle.enter(false, None);
    assert!(!idle.evict_from(heavy), "none has waited 50 ms");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let just_answered = idle.enter(true, Some(heavy));
    assert!(idle.evict(), "between requests for 50 ms");
    assert!(between_requests.lull().evicted.load(Ordering::Acquire));
    assert!(!idle.evict(), "its first request has a minute");
    assert!(idle.evict_from(heavy));
    assert!(trickling.lull().evicted.load(Ordering::Acquire));
    assert!(!idle.evict_from(heavy), "busy, or idle for too short");
    assert!(!busy.lull().evicted.load(Ordering::Acquire));
    assert!(!just_answered.lull().evicted.load(Ordering::Acquire));
    assert!(!elsewhere.lull().evicted.load(Ordering::Acquire));
    assert!(!exempt.lull().evicted.load(Ordering::Acquire));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(idle.evict_from(heavy));
    assert!(just_answered.lull().evicted.load(Ordering::Acquire));
    assert!(!idle.evict_from(heavy), "its request is in flight");
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

//! The queue's order, rates and bounds.

use super::*;

fn drain(q: &mut Queue, now: Instant) -> Vec<u64> {
    let mut out = Vec::new();
    while let Next::Send(i) = q.pop(now) {
        out.push(i);
    }
    out
}

#[test]
fn tenants_take_turns_and_each_keeps_its_order() {
    let mut q = Queue::new(100, 10, 100, 100);
    q.push(1, &[10, 11, 12, 13]).unwrap();
    q.push(2, &[20]).unwrap();
    q.push(3, &[30, 31]).unwrap();
    assert_eq!(drain(&mut q, Instant::now()), [10, 20, 30, 11, 31, 12, 13]);
    assert_eq!(q.len(), 0);
    assert_eq!(q.pop(Instant::now()), Next::Wait(None));
}

#[test]
fn a_busy_tenant_is_held_to_its_rate_and_others_still_go() {
    let now = Instant::now();
    let mut q = Queue::new(100, 50, 100, 2);
    q.push(1, &(0..20).collect::<Vec<_>>()).unwrap();
    assert_eq!(drain(&mut q, now), [0, 1]);
    let Next::Wait(Some(at)) = q.pop(now) else {
        panic!("should wait for a token")
    };
    assert!(at > now && at <= now + Duration::from_millis(500));
    q.push(2, &[99]).unwrap();
    assert_eq!(drain(&mut q, now), [99]);
    // Half a second later, one more token for tenant 1.
    assert_eq!(drain(&mut q, now + Duration::from_millis(500)), [2]);
}

#[test]
fn the_global_rate_holds_across_tenants() {
    let now = Instant::now();
    let mut q = Queue::new(100, 50, 3, 100);
    for t in 0..5 {
        q.push(t, &[t as u64]).unwrap();
    }
    assert_eq!(drain(&mut q, now).len(), 3);
    assert_eq!(drain(&mut q, now + Duration::from_secs(1)).len(), 2);
}

#[test]
fn bounds_refuse_whole_batches() {
    let mut q = Queue::new(12, 3, 10, 10);
    assert_eq!(q.push(1, &[1, 2, 3, 4]), Err(Full::Tenant));
    q.push(1, &[1, 2, 3]).unwrap();
    assert_eq!(q.push(1, &[4]), Err(Full::Tenant));
    // A quarter of the 9 the first leaves.
    assert_eq!(q.room(2), Ok(3));
    q.push(2, &[5, 6, 7]).unwrap();
    assert_eq!(q.room(3), Ok(2));
    assert_eq!(q.len(), 6);
}

/// Five tenants each asking for their whole bound, again and again,
/// never fill the queue: a sixth still gets room.
#[test]
fn a_few_tenants_together_never_fill_the_queue() {
    let mut q = Queue::new(10_000, 2_000, 10, 10);
    let mut item = 0;
    for tenant in 1..=5 {
        while let Ok(room) = q.room(tenant) {
            let items: Vec<u64> = (item..item + room as u64).collect();
            item += room as u64;
            q.push(tenant, &items).unwrap();
        }
    }
    assert!(q.len() < 10_000, "{}", q.len());
    assert!(q.room(6).unwrap() >= 100, "{:?}", q.room(6));
}

/// A tenant whose phones never answer holds at most a quarter of the
/// places in flight the others leave; another tenant's resync goes out
/// at once, and a finished one frees its tenant's place.
#[test]
fn a_tenant_holds_a_share_of_the_places_in_flight() {
    let now = Instant::now();
    let mut q = Queue::new(1000, 500, 1000, 1000).limit_inflight(16);
    q.push(1, &(0..100).collect::<Vec<_>>()).unwrap();
    let sent = drain(&mut q, now);
    assert_eq!(sent, (0..4).collect::<Vec<_>>(), "a quarter of 16");
    assert_eq!(q.pop(now), Next::Wait(None));
    q.push(2, &[500, 501, 502, 503, 504]).unwrap();
    // A quarter of the 12 tenant 1 leaves.
    assert_eq!(drain(&mut q, now), [500, 501, 502]);
    q.finished(0);
    q.finished(0);
    assert_eq!(drain(&mut q, now), [4]);
    q.finished(500);
    assert_eq!(drain(&mut q, now), [503]);
    for seq in [1, 2, 3, 4, 501, 502, 503] {
        q.finished(seq);
    }
    assert!(q.inflight.is_empty() && q.inflight_of.is_empty());
    let mut sent = drain(&mut q, now);
    sent.sort_unstable();
    assert_eq!(sent, [5, 6, 7, 8, 504]);
}

/// Reserved places count as taken for everyone and send nothing
/// until pushed; given back, they are room again.
#[test]
fn reserved_places_are_taken_but_not_sent() {
    let now = Instant::now();
    let mut q = Queue::new(12, 3, 10, 10);
    q.reserve(1, 3).unwrap();
    assert_eq!(q.room(1), Err(Full::Tenant));
    assert_eq!(q.room(2), Ok(3));
    assert_eq!(q.pop(now), Next::Wait(None));
    q.push(2, &[5, 6, 7]).unwrap();
    q.push_reserved(1, &[1, 2]);
    q.unreserve(1, 1);
    assert_eq!(q.len(), 5);
    let mut sent = drain(&mut q, now);
    sent.sort_unstable();
    assert_eq!(sent, [1, 2, 5, 6, 7]);
    assert!(q.reserved.is_empty());
    assert_eq!(q.room(1), Ok(3));
}

#[test]
fn the_last_places_are_everyones() {
    let mut q = Queue::new(1, 5, 10, 10);
    q.push(1, &[1]).unwrap();
    assert_eq!(q.room(2), Err(Full::Global));
    assert_eq!(q.room(1), Err(Full::Tenant));
}

/// At shutdown everything waiting comes out; places a request holds stay
/// held until it gives them back.
#[test]
fn clearing_takes_everything_waiting() {
    let now = Instant::now();
    let mut q = Queue::new(100, 10, 10, 10);
    q.push(1, &[1, 2]).unwrap();
    q.push(2, &[3]).unwrap();
    q.reserve(3, 2).unwrap();
    let mut taken = q.clear();
    taken.sort_unstable();
    assert_eq!(taken, [1, 2, 3]);
    assert_eq!(q.len(), 2);
    assert_eq!(q.pop(now), Next::Wait(None));
    q.unreserve(3, 2);
    assert_eq!(q.len(), 0);
}

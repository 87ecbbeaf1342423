//! The transfer table's admission rules: shares, caps, eviction, and
//! which requests are retransmissions.

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn ipv6_sources_are_their_64_and_mapped_ipv4_is_ipv4() {
    let a = source_key("2001:db8:1:2:aaaa::1".parse().unwrap());
    let b = source_key("2001:db8:1:2:bbbb::9".parse().unwrap());
    let c = source_key("2001:db8:1:3::1".parse().unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Behind a dual-stack listener every IPv4 client is ::ffff:a.b.c.d;
    // a /64 of those would put all of IPv4 in one source.
    let d = source_key("::ffff:192.0.2.1".parse().unwrap());
    let e = source_key("::ffff:192.0.2.2".parse().unwrap());
    assert_eq!(d, "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_ne!(d, e);
}

/// A NAT64 client is exempt and counted as one host: a global IPv4
/// address inside is both, a private one neither (it is its /64).
#[test]
fn nat64_sources_are_exempt_and_counted_alike() {
    let exempt = vec!["10.0.0.0/8".parse().unwrap(), "8.8.8.0/24".parse().unwrap()];
    let slots = Arc::new(Slots::new(10, 2, 8, exempt));
    let source = |peer: &str| match slots.admit(addr(peer), b"a") {
        Admission::Granted(slot) => slot.source,
        _ => panic!("{peer} refused"),
    };
    assert_eq!(source("[64:ff9b::808:808]:1000"), None);
    assert_eq!(
        source("[64:ff9b::a01:5]:1000"),
        Some("64:ff9b::".parse().unwrap())
    );
    assert_eq!(source("[::ffff:10.1.0.5]:1000"), None);
}

#[test]
fn a_source_past_its_share_is_refused_and_its_slots_come_back() {
    let slots = Arc::new(Slots::new(10, 2, 8, vec!["10.9.0.0/16".parse().unwrap()]));
    let one = slots.admit(addr("[2001:db8::1]:1000"), b"a");
    let two = slots.admit(addr("[2001:db8::2]:1000"), b"a");
    assert!(matches!(
        slots.admit(addr("[2001:db8::3]:1000"), b"a"),
        Admission::PerSource
    ));
    assert!(matches!(
        slots.admit(addr("[2001:db8::1]:1000"), b"a"),
        Admission::Retransmission
    ));
    // Another /64 and an exempt network are not held back.
    assert!(matches!(
        slots.admit(addr("[2001:db8:0:1::1]:1000"), b"a"),
        Admission::Granted(_)
    ));
    let exempt: Vec<_> = (0..5)
        .map(|n| slots.admit(addr(&format!("10.9.0.1:{}", 1000 + n)), b"a"))
        .collect();
    assert!(exempt.iter().all(|a| matches!(a, Admission::Granted(_))));
    drop((one, two));
    assert!(matches!(
        slots.admit(addr("[2001:db8::3]:1000"), b"a"),
        Admission::Granted(_)
    ));
    drop(exempt);
    assert_eq!(slots.active(), 0);
    assert!(slots.lock().by_source.is_empty() && slots.lock().by_peer.is_empty());
}

fn granted(admission: Admission) -> Slot {
    match admission {
        Admission::Granted(slot) => slot,
        _ => panic!("not granted"),
    }
}

#[test]
fn the_global_cap_still_holds() {
    let slots = Arc::new(Slots::new(2, 64, 8, vec!["10.9.0.0/16".parse().unwrap()]));
    let held: Vec<_> = ["192.0.2.1:1", "192.0.2.2:1"]
        .iter()
        .map(|a| granted(slots.admit(addr(a), b"a")))
        .collect();
    held.iter().for_each(Slot::acknowledged);
    assert!(matches!(
        slots.admit(addr("192.0.2.3:1"), b"a"),
        Admission::Busy
    ));
    drop(held);
    // Exempt networks' transfers whose clients have acknowledged
    // something are not made to give way.
    let exempt: Vec<_> = (0..2)
        .map(|n| granted(slots.admit(addr(&format!("10.9.0.1:{n}")), b"a")))
        .collect();
    exempt.iter().for_each(Slot::acknowledged);
    assert!(exempt.iter().all(Slot::is_proven));
    assert!(matches!(
        slots.admit(addr("192.0.2.3:1"), b"a"),
        Admission::Busy
    ));
    drop(exempt);
    assert_eq!(slots.active(), 0);
    assert!(slots.lock().unacked.is_empty());
}

/// An exempt network is an office NAT's public address as often as
/// loopback, and UDP from it can be forged: its requests skip the
/// per-source limits but prove themselves like any, so forged ones
/// filling the server give way to newcomers, and get no more resends or
/// end packets than any unproven transfer.
#[test]
fn an_exempt_networks_unanswered_transfers_give_way_when_full() {
    let slots = Arc::new(Slots::new(
        4,
        2,
        1,
        vec!["203.0.113.10/32".parse().unwrap()],
    ));
    let forged: Vec<Slot> = (1..=4)
        .map(|port| granted(slots.admit(addr(&format!("203.0.113.10:{port}")), b"a")))
        .collect();
    assert!(forged.iter().all(|slot| !slot.is_proven()));
    // A phone elsewhere takes the oldest one's slot, and so on.
    let phones: Vec<Slot> = (1..=4)
        .map(|n| granted(slots.admit(addr(&format!("192.0.2.{n}:1")), b"a")))
        .collect();
    assert!(forged.iter().all(Slot::is_evicted));
    assert!(phones.iter().all(|slot| !slot.is_evicted()));
    drop(forged);
    drop(phones);
    assert_eq!(slots.active(), 0);
    let inner = slots.lock();
    assert!(inner.unacked.is_empty() && inner.by_source.is_empty() && inner.by_peer.is_empty());
}

/// Forged sources (one each) fill the server; the next request takes
/// the slot of the oldest transfer no ACK answered, which is told to
/// end, and every count comes back as the evicted ones end.
#[tokio::test]
async fn a_full_server_evicts_the_oldest_unacknowledged_transfer() {
    let slots = Arc::new(Slots::new(4, 64, 8, vec![]));
    let forged: Vec<Slot> = (1..=3)
        .map(|n| granted(slots.admit(addr(&format!("198.51.100.{n}:1")), b"a")))
        .collect();
    let phone = granted(slots.admit(addr("192.0.2.1:1"), b"a"));
    phone.acknowledged();
    let late = granted(slots.admit(addr("192.0.2.9:1"), b"a"));
    assert!(forged[0].is_evicted());
    forged[0].evicted().await;
    assert!(!forged[1].is_evicted() && !phone.is_evicted() && !late.is_evicted());
    // The evicted one still holds its slot until it ends; the rest are
    // full again, so the next request takes the next oldest.
    let later = granted(slots.admit(addr("192.0.2.10:1"), b"a"));
    assert!(forged[1].is_evicted());
    drop(forged);
    assert_eq!(slots.active(), 3);
    // With room, nothing is evicted.
    later.acknowledged();
    let fourth = granted(slots.admit(addr("192.0.2.11:1"), b"a"));
    assert!(!late.is_evicted());
    fourth.acknowledged();
    // Full again, all acknowledged but one: that one gives way, and
    // acknowledged transfers never do.
    let last = granted(slots.admit(addr("192.0.2.12:1"), b"a"));
    assert!(late.is_evicted());
    assert!(!phone.is_evicted() && !later.is_evicted() && !fourth.is_evicted());
    last.acknowledged();
    assert!(matches!(
        slots.admit(addr("192.0.2.13:1"), b"a"),
        Admission::Busy
    ));
    drop((phone, late, later, fourth, last));
    let inner = slots.lock();
    assert_eq!((inner.active, inner.evicting), (0, 0));
    assert!(inner.unacked.is_empty() && inner.unacked_by_source.is_empty());
}

/// Evicted transfers end at their own pace (a single-port listener's at
/// their next timer), so a flood faster than that finds the server
/// busy once as many are ending as may run, instead of each request
/// evicting one more.
#[test]
fn evictions_still_ending_are_bounded() {
    let slots = Arc::new(Slots::new(4, 64, 8, vec![]));
    let mut held: Vec<Slot> = Vec::new();
    let mut busy = 0;
    for n in 0..100u32 {
        let from = addr(&format!("198.51.{}.{}:1", n / 250, n % 250 + 1));
        match slots.admit(from, b"a") {
            Admission::Granted(slot) => held.push(slot),
            Admission::Busy => busy += 1,
            _ => panic!("one request a source"),
        }
    }
    // 4 running, 4 told to end and not yet gone; the rest were refused.
    assert_eq!(held.len(), 8);
    assert_eq!(busy, 92);
    assert_eq!(held.iter().filter(|s| s.is_evicted()).count(), 4);
    assert_eq!(slots.lock().evicting, 4);
    // As the evicted ones end, the next requests evict again.
    held.retain(|s| !s.is_evicted());
    assert!(matches!(
        slots.admit(addr("203.0.113.1:1"), b"a"),
        Admission::Granted(_)
    ));
}

#[test]
fn a_source_may_have_few_unacknowledged_transfers() {
    // Room for 8: the limit applies from 2 running transfers on.
    let slots = Arc::new(Slots::new(8, 64, 2, vec!["10.9.0.0/16".parse().unwrap()]));
    let first = slots.admit(addr("192.0.2.1:1"), b"a");
    let second = slots.admit(addr("192.0.2.1:2"), b"a");
    assert!(matches!(
        slots.admit(addr("192.0.2.1:3"), b"a"),
        Admission::Unacked
    ));
    // Others, and exempt networks, are not held back by this source.
    assert!(matches!(
        slots.admit(addr("192.0.2.2:1"), b"a"),
        Admission::Granted(_)
    ));
    let exempt: Vec<_> = (0..2)
        .map(|n| slots.admit(addr(&format!("10.9.0.1:{n}")), b"a"))
        .collect();
    assert!(exempt.iter().all(|a| matches!(a, Admission::Granted(_))));
    // An acknowledged transfer keeps its slot but no longer counts.
    let Admission::Granted(first) = first else {
        panic!("granted")
    };
    first.acknowledged();
    first.acknowledged();
    let third = slots.admit(addr("192.0.2.1:3"), b"a");
    assert!(matches!(third, Admission::Granted(_)));
    assert!(matches!(
        slots.admit(addr("192.0.2.1:4"), b"a"),
        Admission::Unacked
    ));
    drop((first, second, third, exempt));
    assert!(slots.lock().unacked_by_source.is_empty() && slots.lock().by_source.is_empty());
}

/// Forged requests from an office's address fill its share; its
/// phones' requests take the place of the oldest that no ACK answered
/// for a second, and are refused only while all are younger.
#[test]
fn a_source_at_its_share_makes_room_from_its_own_unanswered_transfers() {
    let slots = Arc::new(Slots::new(100, 4, 2, vec![]));
    let start = Instant::now();
    let forged: Vec<Slot> = (0..4)
        .map(|n| granted(slots.admit_at(addr(&format!("192.0.2.1:{n}")), b"a", start)))
        .collect();
    let later = start + FIRST_ACK_WAIT;
    // Still being provisioned (nothing sent yet): nothing gives way.
    assert!(matches!(
        slots.admit_at(addr("192.0.2.1:49"), b"a", later),
        Admission::PerSource
    ));
    forged.iter().for_each(|s| s.sending(start));
    assert!(matches!(
        slots.admit_at(addr("192.0.2.1:50"), b"a", start),
        Admission::PerSource
    ));
    let phone = granted(slots.admit_at(addr("192.0.2.1:51"), b"a", later));
    assert!(forged[0].is_evicted() && !forged[1].is_evicted());
    phone.acknowledged();
    // Another source's share is its own: nothing of this one moves.
    let other = granted(slots.admit_at(addr("192.0.2.2:1"), b"a", later));
    assert!(!forged[1].is_evicted());
    // The evicted one no longer counts; the next takes the next oldest,
    // and acknowledged transfers never give way.
    let more: Vec<Slot> = (60..63)
        .map(|n| granted(slots.admit_at(addr(&format!("192.0.2.1:{n}")), b"a", later)))
        .collect();
    more.iter().for_each(|s| s.sending(later));
    assert!(forged.iter().all(Slot::is_evicted) && !phone.is_evicted());
    // All of the share young again: refused.
    assert!(matches!(
        slots.admit_at(addr("192.0.2.1:70"), b"a", later),
        Admission::PerSource
    ));
    drop((forged, phone, other, more));
    let inner = slots.lock();
    assert_eq!((inner.active, inner.evicting), (0, 0));
    assert!(inner.unacked.is_empty() && inner.unacked_by_source.is_empty());
    assert!(inner.by_source.is_empty() && inner.evicting_by_source.is_empty());
}

#[test]
fn while_there_is_room_unacknowledged_transfers_are_not_limited() {
    let slots = Arc::new(Slots::new(100, 64, 2, vec![]));
    let office: Vec<_> = (0..20)
        .map(|n| slots.admit(addr(&format!("192.0.2.1:{n}")), b"a"))
        .collect();
    assert!(office.iter().all(|a| matches!(a, Admission::Granted(_))));
    let more: Vec<_> = (0..5)
        .map(|n| slots.admit(addr(&format!("192.0.2.2:{n}")), b"a"))
        .collect();
    assert!(more.iter().all(|a| matches!(a, Admission::Granted(_))));
    // 25 of 100 taken: from now on the limit holds.
    assert!(matches!(
        slots.admit(addr("192.0.2.1:99"), b"a"),
        Admission::Unacked
    ));
}

/// The same request again is a retransmission only while the client may
/// not have heard our first answer: other options, or the same request
/// after an acknowledgement or an eviction, start a transfer of its own.
#[test]
fn only_an_unanswered_identical_request_is_a_retransmission() {
    let slots = Arc::new(Slots::new(10, 64, 8, vec!["10.9.0.0/16".parse().unwrap()]));
    for phone in ["192.0.2.1:1000", "10.9.0.1:1000"] {
        let with_tsize = b"\0\x01a\0octet\0tsize\x000\0";
        let first = granted(slots.admit(addr(phone), with_tsize));
        assert!(matches!(
            slots.admit(addr(phone), with_tsize),
            Admission::Retransmission
        ));
        let with_blksize = granted(slots.admit(addr(phone), b"\0\x01a\0octet\0blksize\x001428\0"));
        drop(first);
        with_blksize.acknowledged();
        let restarted = granted(slots.admit(addr(phone), b"\0\x01a\0octet\0blksize\x001428\0"));
        // The older transfer ending does not forget the newer one.
        drop(with_blksize);
        assert!(matches!(
            slots.admit(addr(phone), b"\0\x01a\0octet\0blksize\x001428\0"),
            Admission::Retransmission
        ));
        drop(restarted);
    }
    // Evicted, a transfer sends nothing more: its client's request again is
    // a new one (answered "busy" here, as the server is full).
    let full = Arc::new(Slots::new(1, 64, 8, vec![]));
    let waiting = granted(full.admit(addr("192.0.2.1:1"), b"a"));
    let _other = granted(full.admit(addr("192.0.2.2:1"), b"b"));
    assert!(waiting.is_evicted());
    assert!(matches!(
        full.admit(addr("192.0.2.1:1"), b"a"),
        Admission::Busy
    ));
    drop(waiting);
    assert_eq!(slots.active(), 0);
    assert!(slots.lock().by_peer.is_empty());
}

/// Slow but real clients (every transfer acknowledged) from two sources
/// fill the server. A newcomer from a third takes a slot of the source
/// holding the most, its unanswered transfer first, then its slowest, until
/// it holds no fewer than that source; the source within its fair share
/// (the slots over the three sources) is never made to give way.
#[test]
fn a_full_server_makes_the_heaviest_source_give_way() {
    let slots = Arc::new(Slots::new(6, 6, 8, vec![]));
    let start = Instant::now();
    let heavy: Vec<Slot> = (1..=4)
        .map(|n| granted(slots.admit(addr(&format!("192.0.2.1:{n}")), b"a")))
        .collect();
    let fair: Vec<Slot> = (1..=2)
        .map(|n| granted(slots.admit(addr(&format!("192.0.2.2:{n}")), b"a")))
        .collect();
    for (n, slot) in heavy.iter().chain(&fair).enumerate() {
        slot.sending(start);
        slot.expecting(2048);
        slot.delivered(10_000 * n as u64);
        if n != 3 {
            slot.acknowledged();
        }
    }
    let later = start + Duration::from_secs(10);
    let newcomer = |port: u16| slots.admit_at(addr(&format!("192.0.2.9:{port}")), b"a", later);
    let first = granted(newcomer(1));
    assert!(heavy[3].is_evicted(), "its unanswered transfer goes first");
    first.acknowledged();
    let second = granted(newcomer(2));
    assert!(heavy[0].is_evicted(), "then the one furthest behind");
    second.acknowledged();
    assert!(!heavy[1].is_evicted() && !heavy[2].is_evicted());
    assert!(fair.iter().all(|s| !s.is_evicted()));
    // Each source now holds two, its fair share: no one gives way.
    assert!(matches!(newcomer(3), Admission::Busy));
    assert!(fair.iter().all(|s| !s.is_evicted()));
    drop((heavy, fair, first, second));
    let inner = slots.lock();
    assert_eq!((inner.active, inner.evicting), (0, 0));
    assert!(inner.ranked.is_empty() && inner.by_source.is_empty());
    assert!(inner.evicting_by_source.is_empty());
}

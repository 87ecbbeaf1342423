//! Spacing by phone and by address, failures included and backed off.

use super::*;

const MINUTE: Duration = Duration::from_secs(60);

fn spacing() -> Spacing {
    Spacing::new(MINUTE, Duration::from_secs(32))
}

fn phone(n: u8) -> Key {
    Key::phone(1, Mac([0, 0x15, 0x65, 0, 0, n]))
}

/// Spellings a proxy reads as one address of record are one target.
#[test]
fn spellings_of_one_address_are_one_target() {
    let one = Key::target(1, "sip:101@sip.demo.example.net");
    for same in [
        "sip:101@SIP.Demo.example.net",
        "sip:101@sip.demo.example.net:5060",
        "sip:101@sip.demo.example.net.",
        "SIP:101@sip.demo.example.net:5080",
        "sip:101;x=y@sip.demo.example.net",
    ] {
        assert_eq!(Key::target(1, same), one, "{same}");
    }
    assert_eq!(
        Key::target(1, "sip:7@[0:0::1]:5060"),
        Key::target(1, "sip:7@[::1]")
    );
    assert_ne!(Key::target(1, "sip:102@sip.demo.example.net"), one);
    assert_ne!(Key::target(2, "sip:101@sip.demo.example.net"), one);
}

/// A resync that failed spaces its phone like one answered; each failure
/// in a row doubles the wait, up to an hour, and a 2xx resets it.
#[test]
fn failures_space_and_back_off_until_a_2xx() {
    let mut s = spacing();
    let key = phone(1);
    let mut now = Instant::now();
    let mut waits = Vec::new();
    for seq in 1..=9 {
        assert_eq!(s.check(&key, now), None, "resync {seq} may go");
        s.sent(std::slice::from_ref(&key), seq, now);
        s.ended(std::slice::from_ref(&key), seq, false);
        let spaced = s.check(&key, now + Duration::from_secs(1)).unwrap();
        assert_eq!(spaced.failures, seq as u32);
        waits.push(spaced.spacing_s);
        now += Duration::from_secs(spaced.spacing_s);
    }
    assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);

    s.sent(std::slice::from_ref(&key), 10, now);
    s.ended(std::slice::from_ref(&key), 10, true);
    let spaced = s.check(&key, now).unwrap();
    assert_eq!((spaced.spacing_s, spaced.failures), (60, 0));
    assert_eq!(s.check(&key, now + MINUTE), None);
    s.sent(std::slice::from_ref(&key), 11, now + MINUTE);
    s.ended(std::slice::from_ref(&key), 11, false);
    assert_eq!(s.check(&key, now + MINUTE).unwrap().spacing_s, 60);
}

/// A resync in flight spaces as a sent one; what another send of the
/// key replaced is not changed by its own late answer.
#[test]
fn only_the_last_send_of_a_key_counts() {
    let mut s = spacing();
    let key = phone(1);
    let now = Instant::now();
    s.sent(std::slice::from_ref(&key), 1, now);
    assert_eq!(s.check(&key, now).unwrap().failures, 0);
    s.sent(std::slice::from_ref(&key), 2, now + MINUTE);
    s.ended(std::slice::from_ref(&key), 1, false);
    let spaced = s.check(&key, now + MINUTE).unwrap();
    assert_eq!((spaced.failures, spaced.left_s), (0, 60));
}

/// Marks go once nothing needs them, so the table holds what the rates
/// send in the longest wait, not every phone ever resynced.
#[test]
fn marks_are_forgotten() {
    let mut s = spacing();
    let now = Instant::now();
    for n in 0..10 {
        s.sent(&[phone(n)], u64::from(n), now);
        s.ended(&[phone(n)], u64::from(n), n % 2 == 0);
    }
    assert_eq!(s.len(), 10);
    s.check(&phone(0), now + MINUTE);
    assert_eq!(s.len(), 5, "the answered ones");
    s.check(&phone(0), now + 2 * MINUTE);
    assert_eq!(s.len(), 0, "the failed ones, kept twice their wait");
}

/// The operator's 0 turns spacing, and so its back-off, off.
#[test]
fn no_spacing_means_none() {
    let mut s = Spacing::new(Duration::ZERO, MINUTE);
    let now = Instant::now();
    s.sent(&[phone(1)], 1, now);
    s.ended(&[phone(1)], 1, false);
    assert_eq!(s.check(&phone(1), now), None);
    assert_eq!(s.len(), 0);
}

//! The known-good (source, phone) table: places, expiry, bounds, and
//! what counts under a phone's tenant and login.

use super::*;
use dialtone_sync::testing::build::phone_row;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Phone `id` of tenant 1, without credentials, noted as it is.
fn noted(known: &Known, id: Id) -> Phone {
    let mac = format!("001565{id:06x}").parse().unwrap();
    let phone = phone_row(id, 1, mac, Family::Yealink);
    known.note(&phone);
    phone
}

/// The fingerprint `id` was last noted under, as the core passes it.
fn noted_under(known: &Known, id: Id) -> u64 {
    (known.lock().phones.get(&id)).map_or(0, |p| p.current.unwrap_or(0))
}

#[test]
fn a_pair_is_known_per_source_and_phone() {
    let known = Known::new(Duration::from_secs(3600), 10);
    noted(&known, 1);
    assert!(known.record(
        ip("192.0.2.5"),
        1,
        Family::Yealink,
        noted_under(&known, 1),
        |_| true
    ));
    assert!(known.knows(ip("192.0.2.5"), 1));
    assert!(!known.knows(ip("192.0.2.5"), 2), "another phone");
    assert!(!known.knows(ip("192.0.2.6"), 1), "another source");
    assert!(known.knows_family(ip("192.0.2.5"), &[Family::Yealink]));
    assert!(!known.knows_family(ip("192.0.2.5"), &[Family::Poly]));
    assert!(!known.knows_family(ip("192.0.2.6"), &[Family::Yealink]));
    // IPv6 by /64, like the guard.
    noted(&known, 3);
    known.record(
        ip("2001:db8:5:6::10"),
        3,
        Family::Snom,
        noted_under(&known, 3),
        |_| true,
    );
    assert!(known.knows(ip("2001:db8:5:6::99"), 3));
    assert!(!known.knows(ip("2001:db8:5:7::10"), 3));
}

#[test]
fn pairs_expire() {
    let known = Known::new(Duration::from_secs(3600), 10);
    noted(&known, 1);
    known.record(
        ip("192.0.2.5"),
        1,
        Family::Yealink,
        noted_under(&known, 1),
        |_| true,
    );
    // A shorter time (SIGHUP) applies to pairs already remembered.
    known.set_ttl(Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(2100));
    assert!(!known.knows(ip("192.0.2.5"), 1));
    assert!(!known.knows_family(ip("192.0.2.5"), &[Family::Yealink]));
}

/// Forged fetches of a phone from many sources take its free places and
/// no more: the source it boots from stays, and the table stays small.
#[test]
fn forged_sources_never_push_out_a_phones_real_source() {
    let known = Known::new(Duration::from_secs(3600), 2);
    noted(&known, 1);
    assert!(known.record(
        ip("192.0.2.5"),
        1,
        Family::Yealink,
        noted_under(&known, 1),
        |_| true
    ));
    for n in 0..10_000u32 {
        known.record(
            IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + n)),
            1,
            Family::Yealink,
            noted_under(&known, 1),
            |_| true,
        );
    }
    assert!(known.knows(ip("192.0.2.5"), 1));
    assert!(
        known.record(
            ip("192.0.2.5"),
            1,
            Family::Yealink,
            noted_under(&known, 1),
            |_| true
        ),
        "a refresh"
    );
    assert_eq!(known.phones(), 1);
    assert!(known.lock().sources.len() <= ADDRESSES_PER_PHONE);
    // The phone table is bounded too: a third phone finds no place,
    // noted or not.
    noted(&known, 2);
    assert!(known.record(
        ip("192.0.2.7"),
        2,
        Family::Yealink,
        noted_under(&known, 2),
        |_| true
    ));
    noted(&known, 3);
    assert!(!known.record(
        ip("192.0.2.8"),
        3,
        Family::Yealink,
        noted_under(&known, 3),
        |_| true
    ));
    assert_eq!(known.phones(), 2);
}

/// A phone the full table could not note when it was answered, which
/// finds room at its record (a sweep of expired phones), is known
/// under the fingerprint it was answered with, not under none.
#[test]
fn a_phone_first_seen_when_the_table_was_full_is_known_once_recorded() {
    let known = Known::new(Duration::from_secs(1), 1);
    noted(&known, 1);
    assert!(known.record(
        ip("192.0.2.5"),
        1,
        Family::Yealink,
        noted_under(&known, 1),
        |_| true
    ));
    std::thread::sleep(Duration::from_millis(2100));
    let phone = noted(&known, 2);
    assert_eq!(known.phones(), 1, "the full table noted phone 2");
    let office = ip("192.0.2.9");
    assert!(known.record(office, 2, Family::Yealink, fingerprint(&phone), |_| true));
    assert!(known.knows(office, 2) && known.knows_phone(office, &phone));
}

/// A full table makes room by dropping phones the mirror no longer
/// has, not only expired places: a tenant's deleted phones kept the
/// places they fetched from for the whole `known_ttl`.
#[test]
fn a_full_table_drops_phones_that_are_gone() {
    let known = Known::new(Duration::from_secs(3600), 2);
    for id in [1, 2] {
        noted(&known, id);
        assert!(known.record(
            ip("192.0.2.5"),
            id,
            Family::Yealink,
            noted_under(&known, id),
            |_| true
        ));
    }
    noted(&known, 3);
    let gone = |id: Id| id != 1;
    assert!(
        known.record(
            ip("192.0.2.6"),
            3,
            Family::Yealink,
            noted_under(&known, 3),
            gone
        ),
        "phone 1 is deleted, and still held its place"
    );
    assert!(!known.knows(ip("192.0.2.5"), 1));
    assert!(known.knows(ip("192.0.2.5"), 2) && known.knows(ip("192.0.2.6"), 3));
}

/// Places taken before the phone had credentials (by whoever knew its
/// MAC) stop counting once it has them, and make room for the source
/// that proves the password; a move to another tenant does the same.
/// An edit that keeps tenant and login keeps the places.
#[test]
fn places_count_only_under_the_tenant_and_login_they_were_learned_under() {
    let known = Known::new(Duration::from_secs(3600), 10);
    let mut phone = noted(&known, 1);
    let forged: Vec<IpAddr> = (1..=4).map(|n| ip(&format!("203.0.113.{n}"))).collect();
    for source in &forged {
        assert!(
            known.record(*source, 1, Family::Yealink, noted_under(&known, 1), |_| {
                true
            })
        );
    }
    assert!(forged.iter().all(|s| known.knows_phone(*s, &phone)));

    phone.http_user = Some("desk".into());
    phone.http_password = Some(dialtone_sync::Sealed("v1:sealed".into()));
    // As the guard asks, from the row, before anything noted it...
    assert!(forged.iter().all(|s| !known.knows_phone(*s, &phone)));
    known.note(&phone);
    // ...and as the core asks, once it was noted.
    assert!(forged.iter().all(|s| !known.knows(*s, 1)));
    let office = ip("192.0.2.5");
    assert!(
        known.record(office, 1, Family::Yealink, noted_under(&known, 1), |_| true),
        "no place"
    );
    assert!(known.knows(office, 1) && known.knows_phone(office, &phone));

    phone.label = Some("renamed".into());
    known.note(&phone);
    assert!(known.knows_phone(office, &phone), "an edit forgot it");

    phone.http_password = Some(dialtone_sync::Sealed("v1:another".into()));
    assert!(!known.knows_phone(office, &phone), "a new password");
    phone.http_password = Some(dialtone_sync::Sealed("v1:sealed".into()));
    phone.tenant_id = 2;
    assert!(!known.knows_phone(office, &phone), "another tenant");
    known.note(&phone);
    assert!(!known.knows(office, 1));
    assert_eq!(known.phones(), 1);
}

//! An office behind one address, inside its tenant's
//! `provisioning_networks`: its new phones (listed as the tenant's
//! unclaimed devices) ask for their files at every boot and retry, and must
//! not ban it; once something else has banned it, its stored phones still
//! get their files there, known at that address on this node or not.
//! Failed logins still ban it, and unknown MACs still ban an address
//! outside every tenant's networks.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use common::*;
use dialtone_sync::store::{PhoneInput, TenantInput};
use dialtone_sync::testing::test_key;
use dialtone_sync::{Family, Mutation};
use dialtone_tftp::device_auth::HttpAuth;
use dialtone_tftp::{Protocol, ProvisionError, ProvisionOptions, Provisioner, Request, Shipped};

const OFFICE: &str = "203.0.113.10";
const ELSEWHERE: &str = "198.51.100.7";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ask<'a>(from: &str, protocol: Protocol, path: &'a str, ua: Option<&'a str>) -> Request<'a> {
    Request {
        path,
        user_agent: ua,
        remote: Some(ip(from)),
        protocol,
        ..Default::default()
    }
}

/// The fixture with acme's office declared, and a provisioner whose
/// shipped templates render every family's common files.
async fn office(options: ProvisionOptions) -> (Fixture, Arc<Provisioner>) {
    let f = Fixture::new().await;
    f.write(&[Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme & Sons".into(),
        default_region: "US".into(),
        settings: r#"{"provisioning_networks":["203.0.113.0/24"]}"#.into(),
    })])
    .await;
    let provisioner = Arc::new(Provisioner::new(
        f.mirror.clone(),
        test_key(),
        Shipped::built_in(1),
        options,
    ));
    (f, provisioner)
}

/// Ten new Yealinks booting five times each from `from`, as they do:
/// the common file with their MAC in the User-Agent, their own file over
/// HTTP and over TFTP (150 misses; an eighth of each at a site). Whether
/// every answer came, unbanned.
fn new_phones_boot(provisioner: &Provisioner, from: &str) -> bool {
    for _boot in 0..5 {
        for n in 0..10u32 {
            let ua = format!("Yealink SIP-T46S 66.86.0.15 00:15:65:aa:00:{n:02x}");
            let own = format!("001565aa00{n:02x}.cfg");
            let asks = [
                ask(from, Protocol::Http, "y000000000066.cfg", Some(&ua)),
                ask(from, Protocol::Http, &own, Some(&ua)),
                ask(from, Protocol::Tftp, &own, None),
            ];
            for request in asks {
                if matches!(provisioner.provision(&request), Err(ProvisionError::Banned)) {
                    return false;
                }
            }
        }
    }
    !provisioner.guard().is_banned(ip(from))
}

#[tokio::test]
async fn new_phones_at_their_tenants_office_do_not_ban_it() {
    let (_f, provisioner) = office(ProvisionOptions::default()).await;
    assert!(
        new_phones_boot(&provisioner, OFFICE),
        "new phones banned their office"
    );
    // The office's stored phones are served as ever.
    let answer = provisioner.provision(&ask(OFFICE, Protocol::Http, "001565000001.cfg", None));
    assert!(answer.is_ok(), "{answer:?}");
}

/// Forged TFTP from the office's address, a new MAC a packet: each is a
/// history row and an unclaimed sighting, so it is still banned, later.
#[tokio::test]
async fn a_flood_of_new_macs_from_the_office_is_still_banned() {
    let (_f, provisioner) = office(ProvisionOptions::default()).await;
    let banned_after = (0..2000u32).find(|n| {
        let path = format!("0015650b{n:04x}.cfg");
        let answer = provisioner.provision(&ask(OFFICE, Protocol::Tftp, &path, None));
        matches!(answer, Err(ProvisionError::Banned))
    });
    let banned_after = banned_after.expect("a flood from the office went unbanned");
    // Past the burst of whole misses (30), well before 2000.
    assert!(banned_after > 30, "banned after {banned_after}");
}

/// Where sites are not exclusive, another tenant's phones without networks
/// are served at the office too: its misses would find them, so they cost
/// whole ones.
#[tokio::test]
async fn without_exclusive_sites_new_phones_cost_whole_misses() {
    let options = ProvisionOptions {
        sites_exclusive: false,
        ..ProvisionOptions::default()
    };
    let (_f, provisioner) = office(options).await;
    assert!(
        !new_phones_boot(&provisioner, OFFICE),
        "misses at a site that is not exclusive went unbanned"
    );
}

#[tokio::test]
async fn the_same_misses_outside_every_tenants_networks_still_ban() {
    let (_f, provisioner) = office(ProvisionOptions::default()).await;
    assert!(
        new_phones_boot(&provisioner, OFFICE),
        "new phones banned their office"
    );
    assert!(
        !new_phones_boot(&provisioner, ELSEWHERE),
        "unknown MACs from outside every site went unbanned"
    );
}

/// Nothing the office's phones fetched from there before: misses of other
/// kinds ban it, and its stored phones get their own files and their
/// family's common files all the same; nothing else passes.
#[tokio::test]
async fn a_stored_phone_gets_its_files_at_its_banned_office() {
    let (f, provisioner) = office(ProvisionOptions::default()).await;
    let banned_after = (0..100u32).find(|n| {
        let path = format!("../etc/{n}");
        let answer = provisioner.provision(&ask(OFFICE, Protocol::Http, &path, None));
        matches!(answer, Err(ProvisionError::Banned))
    });
    assert!(banned_after.is_some(), "refused paths never banned it");
    // A Yealink asks for its family's file first: nothing of the family
    // has fetched from the office yet.
    for (protocol, path) in [
        (Protocol::Tftp, "y000000000096.cfg"),
        (Protocol::Http, "001565000002.cfg"),
        (Protocol::Tftp, "001565000001.cfg"),
        (Protocol::Http, "snomD785-000413000003.htm"),
    ] {
        let answer = provisioner.provision(&ask(OFFICE, protocol, path, None));
        assert!(answer.is_ok(), "{path} over {protocol:?}: {answer:?}");
    }
    // Still banned for everything else: unknown MACs, made-up models,
    // another tenant's phone.
    f.write(&[
        Mutation::UpsertTenant(TenantInput {
            slug: "other".into(),
            name: "Other".into(),
            default_region: "US".into(),
            settings: "{}".into(),
        }),
        Mutation::UpsertPhone(PhoneInput {
            tenant: "other".into(),
            ..phone_input("00:15:65:00:00:77", None)
        }),
    ])
    .await;
    for path in ["001565bb0001.cfg", "y000000000012.cfg", "001565000077.cfg"] {
        let answer = provisioner.provision(&ask(OFFICE, Protocol::Http, path, None));
        assert_eq!(answer.err(), Some(ProvisionError::Banned), "{path}");
    }
    // A new phone claimed while the ban lasts gets its file at once.
    f.write(&[Mutation::UpsertPhone(phone_input(
        "00:15:65:bb:00:01",
        None,
    ))])
    .await;
    let answer = provisioner.provision(&ask(OFFICE, Protocol::Http, "001565bb0001.cfg", None));
    assert!(answer.is_ok(), "{answer:?}");
}

/// Wrong passwords are guesses wherever they come from: they ban the
/// office as before, while its new phones did not.
#[tokio::test]
async fn failed_logins_still_ban_the_office() {
    let (f, provisioner) = office(ProvisionOptions::default()).await;
    assert!(
        new_phones_boot(&provisioner, OFFICE),
        "new phones banned their office"
    );
    f.write(&[Mutation::UpsertPhone(phone_input(
        "00:15:65:00:00:44",
        Some("right"),
    ))])
    .await;
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("desk:wrong")
    );
    let banned_after = (0..100u32).find(|_| {
        let request = Request {
            auth: Some(HttpAuth {
                authorization: Some(&wrong),
                method: "GET",
                target: "/001565000044.cfg",
                absolute_target: None,
            }),
            ..ask(OFFICE, Protocol::Https, "001565000044.cfg", None)
        };
        matches!(provisioner.provision(&request), Err(ProvisionError::Banned))
    });
    assert!(banned_after.is_some(), "wrong passwords never banned it");
}

/// An acme T46S with the login `desk` / `password`, if any.
fn phone_input(mac: &str, password: Option<&str>) -> PhoneInput {
    let Mutation::UpsertPhone(input) = phone(mac, Family::Yealink, "T46S", &["Desk"]) else {
        unreachable!("phone() makes a phone")
    };
    PhoneInput {
        http_user: password.map(|_| "desk".into()),
        http_password: password.map(str::to_string),
        ..input
    }
}

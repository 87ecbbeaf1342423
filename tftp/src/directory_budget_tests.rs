//! Directory builds the render cache does not keep are charged to their
//! source: a flood of searches is banned, a person paging is not.

use std::net::IpAddr;
use std::sync::Arc;

use dialtone_sync::*;

use crate::provision::{Protocol, ProvisionOptions, Provisioner, Request};
use crate::templates::Shipped;
use crate::ProvisionError;

const CISCO: &str = "001b54000003-directory.xml";
const YEALINK: &str = "001565000001-directory.xml";

/// 2,000 entries of one number: 63 Cisco pages, 47 of them past the kept.
fn provisioner() -> Provisioner {
    let directory = (1..=2_000)
        .map(|id| DirectoryEntry {
            id,
            tenant_id: 1,
            external_id: None,
            name: format!("Person {id:04}").into(),
            company: None,
            numbers: vec![DirectoryNumber {
                number: format!("+1555{id:06}").into(),
                kind: "work".into(),
            }],
            updated_at: 1,
        })
        .collect();
    let phone = |id, mac: &str, family| {
        dialtone_sync::testing::build::phone_row(id, 1, mac.parse().unwrap(), family)
    };
    let data = Dataset {
        tenants: vec![Tenant {
            id: 1,
            slug: "acme".into(),
            name: "Acme".into(),
            default_region: "US".into(),
            settings: "{}".into(),
            updated_at: 1,
        }],
        phones: vec![
            phone(1, "001565000001", Family::Yealink),
            phone(3, "001b54000003", Family::CiscoSep),
        ],
        directory_entries: directory,
        ..Default::default()
    };
    Provisioner::new(
        dialtone_sync::testing::build::mirror_of(data),
        dialtone_sync::testing::test_key(),
        Shipped::built_in(1),
        ProvisionOptions::default(),
    )
}

fn fetch(
    p: &Provisioner,
    from: &str,
    path: &str,
    query: &str,
) -> Result<Arc<[u8]>, ProvisionError> {
    p.provision(&Request {
        path,
        query: Some(query),
        remote: Some(from.parse().unwrap()),
        protocol: Protocol::Http,
        ..Default::default()
    })
    .map(|file| file.body)
}

/// Someone who knows one MAC asks for a new search each time: each was a
/// build of the tenant's whole directory on its share of the pool, free.
/// Charged, the source is banned after the default burst's worth, and
/// then gets no more builds; the phone's cached directory is still its,
/// and other sources are untouched.
#[test]
fn a_flood_of_searches_is_banned_like_a_scan() {
    let p = provisioner();
    let flooder = "198.51.100.7";
    let mut refused_at = None;
    for n in 0..400 {
        let path = if n % 2 == 0 { CISCO } else { YEALINK };
        match fetch(&p, flooder, path, &format!("q=nobody{n}")) {
            Ok(_) => {}
            Err(ProvisionError::Banned) => {
                refused_at = Some(n);
                break;
            }
            Err(e) => panic!("search {n}: {e}"),
        }
    }
    // 30 misses at once is 120 builds; the 121st bans (a few more if the
    // allowance refilled meanwhile on a slow machine).
    assert!(
        refused_at.is_some_and(|n| (120..=125).contains(&n)),
        "refused at {refused_at:?}: uncached builds went uncharged"
    );
    let ip: IpAddr = flooder.parse().unwrap();
    assert!(p.guard().is_banned(ip));
    assert!(matches!(
        fetch(&p, flooder, CISCO, "q=person"),
        Err(ProvisionError::Banned)
    ));
    assert!(matches!(
        fetch(&p, flooder, CISCO, "page=40"),
        Err(ProvisionError::Banned)
    ));
    // Fetched from there before the ban, the phones' kept files still pass.
    assert!(fetch(&p, flooder, CISCO, "page=1").is_ok());
    assert!(fetch(&p, flooder, YEALINK, "").is_ok());
    assert!(fetch(&p, "192.0.2.10", CISCO, "q=person+0007").is_ok());
    assert!(!p.guard().is_banned("192.0.2.10".parse().unwrap()));
}

/// A person paging the whole directory, twice, and searching it a few
/// times is charged, and far from a ban.
#[test]
fn paging_a_large_directory_is_never_banned() {
    let p = provisioner();
    let office = "192.0.2.20";
    for _ in 0..2 {
        for page in 0..63 {
            let body = fetch(&p, office, CISCO, &format!("page={page}")).unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains(&format!("Page {} of 63", page + 1)), "{text}");
        }
    }
    for term in ["person+1", "person+01", "person+001", "person+0001"] {
        for page in 0..3 {
            fetch(&p, office, CISCO, &format!("q={term}&page={page}")).unwrap();
        }
    }
    let ip: IpAddr = office.parse().unwrap();
    assert!(!p.guard().is_banned(ip));
    assert_eq!(p.guard().tracked_sources(), 1, "the pages were charged");
}

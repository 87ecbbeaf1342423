//! The phone directory in the render cache: one entry per tenant, family
//! and query, served while the tenant's directory and row are unchanged,
//! and built on the render pool.

use std::sync::Arc;

use dialtone_sync::*;

use crate::pool::PoolOptions;
use crate::provision::{ProvisionOptions, Provisioner, Request};
use crate::templates::Shipped;
use crate::ProvisionError;

fn tenant(id: Id, name: &str) -> Tenant {
    Tenant {
        id,
        slug: format!("t{id}").into(),
        name: name.into(),
        default_region: "US".into(),
        settings: "{}".into(),
        updated_at: 1,
    }
}

fn phone(id: Id, tenant_id: Id, mac: &str, family: Family) -> Phone {
    dialtone_sync::testing::build::phone_row(id, tenant_id, mac.parse().unwrap(), family)
}

fn entry(id: Id, tenant_id: Id, name: &str) -> DirectoryEntry {
    DirectoryEntry {
        id,
        tenant_id,
        external_id: None,
        name: name.into(),
        company: None,
        numbers: vec![DirectoryNumber {
            number: format!("+1555010{id:04}").into(),
            kind: "work".into(),
        }],
        updated_at: 1,
    }
}

const YEALINK_A: &str = "001565000001-directory.xml";
const YEALINK_B: &str = "001565000002-directory.xml";
const CISCO: &str = "001b54000003-directory.xml";
const OTHER_TENANT: &str = "001565000009-directory.xml";

struct Fixture {
    mirror: Arc<Mirror>,
    provisioner: Arc<Provisioner>,
}

impl Fixture {
    fn new(pool: PoolOptions) -> Fixture {
        let mut directory: Vec<DirectoryEntry> = (1..=40)
            .map(|n| entry(n, 1, &format!("Person {n:02}")))
            .collect();
        directory.push(entry(100, 2, "Globex Only"));
        let data = Dataset {
            tenants: vec![tenant(1, "Acme"), tenant(2, "Globex")],
            phones: vec![
                phone(1, 1, "001565000001", Family::Yealink),
                phone(2, 1, "001565000002", Family::Yealink),
                phone(3, 1, "001b54000003", Family::CiscoSep),
                phone(9, 2, "001565000009", Family::Yealink),
            ],
            directory_entries: directory,
            ..Default::default()
        };
        let mirror = dialtone_sync::testing::build::mirror_of(data);
        let provisioner = Provisioner::new(
            mirror.clone(),
            dialtone_sync::testing::test_key(),
            Shipped::built_in(1),
            ProvisionOptions {
                pool,
                ..Default::default()
            },
        );
        Fixture {
            mirror,
            provisioner: Arc::new(provisioner),
        }
    }

    fn fetch(&self, path: &str, query: Option<&str>) -> Arc<[u8]> {
        self.provisioner
            .provision(&Request {
                path,
                query,
                ..Default::default()
            })
            .unwrap()
            .body
    }

    fn text(&self, path: &str, query: Option<&str>) -> String {
        String::from_utf8(self.fetch(path, query).to_vec()).unwrap()
    }

    fn apply(&self, row: Row) {
        let current = self.mirror.load();
        self.mirror.apply(
            vec![(row.entity(), row.id(), Some(row))],
            current.cursor(),
            current.meta().clone(),
        );
    }
}

#[test]
fn a_tenants_phones_share_one_cached_directory() {
    let f = Fixture::new(PoolOptions::default());
    let first = f.fetch(YEALINK_A, None);
    assert_eq!(f.provisioner.cached_files(), 1);
    // The very bytes of the first build: a hit, not a rebuild.
    assert!(Arc::ptr_eq(&first, &f.fetch(YEALINK_A, None)));
    assert!(Arc::ptr_eq(&first, &f.fetch(YEALINK_B, None)));
    assert_eq!(f.provisioner.cached_files(), 1);
    // Another tenant's phone gets its own, and nothing of this one.
    let other = f.text(OTHER_TENANT, None);
    assert!(
        other.contains("Globex Only") && !other.contains("Person 01"),
        "{other}"
    );
    assert!(!String::from_utf8_lossy(&first).contains("Globex"));
    assert_eq!(f.provisioner.cached_files(), 2);
}

#[test]
fn an_edit_of_the_directory_or_the_tenant_reaches_the_next_fetch() {
    let f = Fixture::new(PoolOptions::default());
    assert!(!f.text(YEALINK_A, None).contains("Aaron New"));
    // No change stream here: the entry's stamp alone outdates it.
    f.apply(Row::DirectoryEntry(entry(41, 1, "Aaron New")));
    let edited = f.text(YEALINK_A, None);
    assert!(edited.contains("Aaron New"), "{edited}");
    f.apply(Row::Tenant(tenant(1, "Acme Renamed")));
    assert!(f
        .text(YEALINK_A, None)
        .contains("<Title>Acme Renamed</Title>"));
    // Another tenant's edit leaves this one cached.
    let before = f.fetch(YEALINK_A, None);
    f.apply(Row::DirectoryEntry(entry(101, 2, "Globex Two")));
    assert!(Arc::ptr_eq(&before, &f.fetch(YEALINK_A, None)));
}

#[test]
fn the_change_stream_drops_only_the_changed_tenants_directories() {
    let f = Fixture::new(PoolOptions::default());
    let mut events = f.mirror.subscribe();
    f.fetch(YEALINK_A, None);
    f.fetch(OTHER_TENANT, None);
    assert_eq!(f.provisioner.cached_files(), 2);
    f.apply(Row::DirectoryEntry(entry(101, 2, "Globex Two")));
    while let Ok(event) = events.try_recv() {
        f.provisioner.invalidate(&event);
    }
    assert_eq!(f.provisioner.cached_files(), 1);
    assert!(f.text(OTHER_TENANT, None).contains("Globex Two"));
}

#[test]
fn pages_and_searches_are_keyed_by_their_normal_form() {
    let f = Fixture::new(PoolOptions::default());
    let second = f.fetch(CISCO, Some("page=1"));
    assert!(String::from_utf8_lossy(&second).contains("Page 2 of 2"));
    assert!(Arc::ptr_eq(&second, &f.fetch(CISCO, Some("page=01&x=y"))));
    let cached = f.provisioner.cached_files();
    let found = f.fetch(CISCO, Some("q=Person+07"));
    assert_eq!(found, f.fetch(CISCO, Some("q=+person+07+")));
    assert_eq!(
        String::from_utf8_lossy(&found)
            .matches("<DirectoryEntry>")
            .count(),
        1
    );
    // Neither a search nor a page past the last is kept: a phone asking a
    // new one each time would fill the cache every tenant shares.
    let past = f.fetch(CISCO, Some("page=9999"));
    assert!(String::from_utf8_lossy(&past).contains("Page 2 of 2"));
    for n in 0..50 {
        f.fetch(CISCO, Some(&format!("q=person+{n}")));
    }
    assert_eq!(f.provisioner.cached_files(), cached);
    // Case is free in a file name; each spelling is the phone's one page,
    // and its links name that one spelling.
    let shouted = f.fetch(&CISCO.to_ascii_uppercase(), Some("page=1"));
    assert!(Arc::ptr_eq(&second, &shouted));
    let mixed = f.text("001B54000003-Directory.XML", None);
    assert!(mixed.contains(&format!("/{CISCO}?page=1")), "{mixed}");
    assert_eq!(f.provisioner.cached_files(), cached + 1);
    // Yealink does not page: every page asked for is the one entry.
    let all = f.fetch(YEALINK_A, None);
    assert!(Arc::ptr_eq(&all, &f.fetch(YEALINK_A, Some("page=3"))));
}

#[test]
fn the_self_check_compares_cached_directories() {
    let f = Fixture::new(PoolOptions::default());
    f.fetch(YEALINK_A, None);
    f.fetch(CISCO, Some("page=1"));
    let report = f.provisioner.self_check(10);
    assert_eq!((report.compared, report.stale), (2, 0), "{report:?}");
    f.apply(Row::DirectoryEntry(entry(41, 1, "Aaron New")));
    let report = f.provisioner.self_check(10);
    assert_eq!(report.outdated, 2, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_built_on_the_pool_under_the_tenants_share() {
    let f = Fixture::new(PoolOptions {
        threads: 1,
        per_tenant: 1,
        ..Default::default()
    });
    // The tenant's only slot is taken until `release` is sent.
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let busy = {
        let p = f.provisioner.clone();
        tokio::spawn(async move {
            p.on_pool(Some(1), move || {
                let _ = started.send(());
                let _ = hold.recv();
                Ok(())
            })
            .await
        })
    };
    running.await.unwrap();
    let fetch = {
        let p = f.provisioner.clone();
        tokio::spawn(async move {
            p.provision_async(&Request {
                path: YEALINK_A,
                ..Default::default()
            })
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !fetch.is_finished(),
        "the build waits for the tenant's slot"
    );
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    let file = fetch.await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&file.body).contains("Person 01"));
    assert_eq!(f.provisioner.cached_files(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_that_panics_is_told_apart_from_one_past_its_time() {
    let f = Fixture::new(PoolOptions::default());
    let panicked = f
        .provisioner
        .walk(1, std::time::Duration::from_secs(30), || -> usize {
            panic!("a bug in a walk")
        })
        .await;
    assert!(
        matches!(panicked, Err(ProvisionError::Internal(_))),
        "{panicked:?}"
    );
    let slow = f
        .provisioner
        .walk(1, std::time::Duration::from_millis(10), || {
            std::thread::sleep(std::time::Duration::from_millis(300));
        })
        .await;
    assert!(
        matches!(slow, Err(ProvisionError::Render { .. })),
        "{slow:?}"
    );
    // The pool is still whole after both.
    let walked = f
        .provisioner
        .walk(1, std::time::Duration::from_secs(30), || 7)
        .await;
    assert_eq!(walked.unwrap(), 7);
}

/// A directory at the entry quota is gigabytes of XML: a document stops
/// its rows at the render budget's output bytes and still closes, and a
/// Cisco page counts the rows without collecting them.
#[test]
fn a_huge_directory_stops_at_the_output_budget() {
    let entries: Vec<DirectoryEntry> = (1..=5_000)
        .map(|n| DirectoryEntry {
            numbers: (0..16)
                .map(|k| DirectoryNumber {
                    number: format!("+1555{n:04}{k:03}").into(),
                    kind: "work".into(),
                })
                .collect(),
            ..entry(n, 1, &format!("R&D {n:05} {}", "&".repeat(200)))
        })
        .collect();
    let data = Dataset {
        tenants: vec![tenant(1, "Acme")],
        phones: vec![
            phone(1, 1, "001565000001", Family::Yealink),
            phone(2, 1, "0004f2000002", Family::Poly),
            phone(3, 1, "000b82000003", Family::Grandstream),
            phone(4, 1, "001b54000004", Family::CiscoSep),
        ],
        directory_entries: entries,
        ..Default::default()
    };
    let mirror = dialtone_sync::testing::build::mirror_of(data);
    let budget = crate::engine::Budget {
        output_bytes: 64 * 1024,
        ..Default::default()
    };
    let provisioner = Provisioner::new(
        mirror,
        dialtone_sync::testing::test_key(),
        Shipped::built_in(1),
        ProvisionOptions {
            budget,
            ..Default::default()
        },
    );
    let fetch = |path: &str, query: Option<&str>| {
        let body = provisioner
            .provision(&Request {
                path,
                query,
                ..Default::default()
            })
            .unwrap()
            .body;
        String::from_utf8(body.to_vec()).unwrap()
    };
    for (file, end) in [
        ("001565000001-directory.xml", "</YealinkIPPhoneDirectory>\n"),
        ("0004f2000002-directory.xml", "</directory>\n"),
        ("000b82000003-directory.xml", "</AddressBook>\n"),
    ] {
        let text = fetch(file, None);
        assert!(
            text.len() <= 64 * 1024 + 16 * 1024,
            "{file}: {} bytes",
            text.len()
        );
        assert!(text.len() > 32 * 1024, "{file}: {} bytes", text.len());
        assert!(text.ends_with(end), "{file}");
        assert!(
            text.contains("R&amp;D 00001"),
            "{file}: sorted by name first"
        );
    }
    let cached = provisioner.cached_files();
    let last = fetch("001b54000004-directory.xml", Some("page=2499"));
    assert!(last.contains("Page 2500 of 2500"), "{last}");
    assert!(last.contains("R&amp;D 05000"), "{last}");
    // Only the first pages are kept: thousands per MAC would fill the
    // cache every tenant shares.
    for page in 16..40 {
        fetch("001b54000004-directory.xml", Some(&format!("page={page}")));
    }
    assert_eq!(provisioner.cached_files(), cached);
    fetch("001b54000004-directory.xml", Some("page=3"));
    assert_eq!(provisioner.cached_files(), cached + 1);
}

/// A name holding U+FFFE or U+FFFF made the whole directory a file no XML
/// parser reads; every noncharacter is written as a space, as controls are.
#[test]
fn noncharacters_in_a_name_leave_the_directory_readable() {
    let name = "A\u{fffe}B\u{ffff}C\u{fdd0}D\u{1fffe}E\u{1}F";
    assert_eq!(super::esc(name), "A B C D E F");
    let entries = [Arc::new(entry(1, 1, name))];
    for family in [
        Family::Yealink,
        Family::Poly,
        Family::CiscoSep,
        Family::Grandstream,
    ] {
        let document = super::render(
            family,
            "T\u{ffff}",
            &entries,
            &super::Query::default(),
            "http://x/d.xml",
            1 << 20,
        )
        .unwrap();
        if let Err(e) = roxmltree::Document::parse(&document.text) {
            panic!("{family:?}: {e}: {}", document.text);
        }
    }
}

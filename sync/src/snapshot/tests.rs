use std::path::Path;

use super::*;
use crate::crypto::{Purpose, Sealed, SecretKey};
use crate::mirror::LoadedFrom;

pub(super) fn key() -> SecretKey {
    SecretKey::parse(&"5a".repeat(32)).unwrap()
}

const MAC_BASE: u64 = 0x0015_6500_0000;

pub(super) fn mac(n: u64) -> Mac {
    format!("{:012x}", MAC_BASE + n).parse().unwrap()
}

/// Every table, every field set and unset, text beyond ASCII, sealed secrets.
pub(super) fn every_field() -> Dataset {
    let k = key();
    let mut data = Dataset {
        tenants: vec![Tenant {
            id: 1,
            slug: "zoë".into(),
            name: "Zoë & Søn — 東京支店".into(),
            default_region: "DK".into(),
            settings: r#"{"quotas":{"phones":5}}"#.into(),
            updated_at: -1,
        }],
        phones: vec![
            Phone {
                id: 10,
                tenant_id: 1,
                mac: mac(1),
                family: Family::CiscoSep,
                model: Some("CP-8845".into()),
                label: Some("Réception 🎧".into()),
                variables: r#"{"tz":"Europe/København"}"#.into(),
                http_user: Some("üser".into()),
                http_password: Some(k.seal(Purpose::DeviceHttpPassword, "s€cret")),
                updated_at: i64::MAX,
            },
            Phone {
                id: 11,
                tenant_id: 1,
                mac: mac(2),
                family: Family::Yealink,
                model: None,
                label: None,
                variables: "{}".into(),
                http_user: None,
                http_password: None,
                updated_at: 0,
            },
        ],
        lines: vec![
            Line {
                id: 100,
                phone_id: 10,
                position: 2,
                extension: "+45 3312 3456".into(),
                display_name: "Ærø Østergård".into(),
                auth_user: "ærø".into(),
                password: Some(k.seal(Purpose::LinePassword, "pässwörd")),
                registrar: "sip.example.net".into(),
                proxy: Some("proxy.example.net:5061".into()),
                settings: r#"{"codec":"opus"}"#.into(),
                updated_at: 5,
            },
            Line {
                id: 101,
                phone_id: 10,
                position: 1,
                extension: "".into(),
                display_name: "".into(),
                auth_user: "".into(),
                password: None,
                registrar: "sip.example.net".into(),
                proxy: None,
                settings: "{}".into(),
                updated_at: i64::MIN,
            },
        ],
        templates: vec![Template {
            id: 7,
            scope: TemplateScope::Phone,
            family: Family::CiscoSep,
            scope_key: mac(1).to_string().into(),
            file_pattern: "SEP{mac}.cnf.xml".into(),
            body: "<device>{{ phone.label }} — ✓</device>\n".into(),
            version: 3,
            updated_by: "admin@example.net".into(),
            updated_at: 9,
        }],
        directory_entries: vec![DirectoryEntry {
            id: 20,
            tenant_id: 1,
            external_id: Some("ext-ü".into()),
            name: "Åsa Öberg".into(),
            company: None,
            numbers: vec![
                DirectoryNumber {
                    number: "+46 8 123 456".into(),
                    kind: "work".into(),
                },
                DirectoryNumber {
                    number: "070-1740605".into(),
                    kind: "mobile".into(),
                },
            ],
            updated_at: 1,
        }],
        directory_sources: vec![DirectorySource {
            id: 30,
            tenant_id: 1,
            name: "AD".into(),
            kind: SourceKind::Ldap,
            priority: -3,
            enabled: false,
            settings: r#"{"url":"ldaps://dc.example.net"}"#.into(),
            secret: Some(k.seal(Purpose::SourceSecret, "bind-pw")),
            timeout_ms: 750,
            updated_at: 2,
        }],
        api_tokens: vec![ApiToken {
            id: 40,
            name: "robot".into(),
            token_hash: "ab".repeat(32).into(),
            scope: TokenScope::TenantRead,
            tenant_id: Some(1),
            created_at: 3,
            expires_at: None,
            revoked: true,
            updated_at: 4,
        }],
    };
    data.sort();
    data
}

pub(super) fn meta() -> Meta {
    Meta {
        epoch: 2,
        pruned_through: Cursor { txid: 5, seq: 6 },
        database_id: "db-ü".into(),
        timeline: Some(3),
    }
}

pub(super) fn mirror_of(data: &Dataset) -> Mirror {
    let mirror = Mirror::new();
    mirror.reset(
        data.clone(),
        Cursor { txid: 7, seq: 8 },
        meta(),
        LoadedFrom::Database,
    );
    mirror
}

pub(super) fn loaded(path: &Path) -> Mirror {
    let (header, loading) = load(path).unwrap().unwrap();
    let mirror = Mirror::new();
    mirror.reset_loaded(loading, header.cursor, header.meta, LoadedFrom::Snapshot);
    mirror
}

#[test]
fn every_field_round_trips() {
    let data = every_field();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let header = write(&mirror_of(&data), &path, "source-a").unwrap();
    let (read_header, read_data) = read(&path).unwrap().unwrap();
    assert_eq!(read_header, header);
    assert_eq!(read_header.source, "source-a");
    assert_eq!(read_header.cursor, Cursor { txid: 7, seq: 8 });
    assert_eq!(read_header.meta, meta());
    assert_eq!(read_data, data);
    // The secrets still open with the key.
    let line = read_data.lines.iter().find(|l| l.id == 100).unwrap();
    assert_eq!(
        key()
            .open(Purpose::LinePassword, line.password.as_ref().unwrap())
            .unwrap(),
        "pässwörd"
    );
    // A mirror built from it answers as the one it was written from.
    let state = loaded(&path).load();
    let phone = state.phone_by_mac(&mac(1)).unwrap();
    assert_eq!(phone.id, 10);
    let positions: Vec<i32> = state.lines_of(10).iter().map(|l| l.position).collect();
    assert_eq!(positions, [1, 2]);
    assert!(state.lines_of(11).is_empty());
    assert_eq!(state.tenant_by_slug("zoë").unwrap().id, 1);
    assert_eq!(state.token_by_hash(&"ab".repeat(32)).unwrap().id, 40);
    assert_eq!(state.directory_of(1).len(), 1);
    assert_eq!(state.sources_of(1).len(), 1);
    assert_eq!(state.to_dataset(), data);
}

/// What a dead process left half-written beside the snapshot is removed
/// (by a process's first write), and nothing else.
#[test]
fn a_dead_writers_leftovers_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    // Nobody holds it: its writer is gone.
    let dead = dir.path().join(".s.tmp99999999.0");
    // One being written (locked, as a live writer holds it), and a file
    // of another snapshot's name.
    let live = dir.path().join(".s.tmp1.0");
    let other = dir.path().join(".t.tmp99999999.0");
    // And one just created, not yet locked by its writer.
    let new = dir.path().join(".s.tmp1.1");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3_600);
    for file in [&dead, &live, &other, &new] {
        std::fs::write(file, b"half").unwrap();
        if file != &new {
            let handle = std::fs::File::options().write(true).open(file).unwrap();
            handle.set_modified(hour_ago).unwrap();
        }
    }
    let writing = std::fs::File::options().write(true).open(&live).unwrap();
    super::lock(&writing, true).unwrap();
    // Called directly: a process's first write calls it, and the tests
    // share one process.
    super::remove_leftovers(dir.path(), "s");
    write(&mirror_of(&every_field()), &path, "source-a").unwrap();
    assert!(!dead.exists());
    assert!(live.exists() && other.exists() && new.exists() && path.exists());
}

#[test]
fn large_tables_cross_the_read_buffer() {
    let mut data = every_field();
    let mut second = data.tenants[0].clone();
    (second.id, second.slug) = (2, "second".into());
    data.tenants.push(second);
    // Rows that span many 1 MiB reads, a row larger than the buffer, and
    // phones with several lines written out of key order.
    data.templates[0].body = "x".repeat(3 << 20).into();
    for n in 0..30_000i64 {
        data.phones.push(Phone {
            id: 1000 + n,
            tenant_id: 1 + n % 2,
            mac: mac(1000 + n as u64),
            family: Family::Poly,
            model: Some(["VVX 450", "T46S"][n as usize % 2].into()),
            label: Some(format!("Desk {n} — ü").into()),
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            updated_at: n,
        });
        for position in (1..=(n % 3 + 1) as i32).rev() {
            data.lines.push(Line {
                id: 100_000 + n * 4 + position as i64,
                phone_id: 1000 + n,
                position,
                extension: format!("{}", 2000 + n).into(),
                display_name: format!("User {n}").into(),
                auth_user: format!("u{n}").into(),
                password: Some(Sealed(format!("v1:{n:0>72}").into())),
                registrar: "sip.example.net".into(),
                proxy: None,
                settings: "{}".into(),
                updated_at: n,
            });
        }
    }
    // Lines of a phone that is not in the mirror: written after the rest.
    for (id, position) in [(99, 2), (98, 1)] {
        let mut orphan = data.lines[0].clone();
        (orphan.id, orphan.phone_id, orphan.position) = (id, 999_999, position);
        data.lines.push(orphan);
    }
    data.sort();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    write(&mirror_of(&data), &path, "s").unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 4 << 20);
    // Written in the order the load indexes lines by phone without a sort.
    let (_, loading) = load(&path).unwrap().unwrap();
    assert!(loading.lines.index_built_while_loading());
    let state = loaded(&path).load();
    assert_eq!(state.to_dataset(), data);
    let positions: Vec<i32> = state
        .lines_of(1000 + 29_999)
        .iter()
        .map(|l| l.position)
        .collect();
    assert_eq!(positions, [1, 2, 3]);
    let orphans: Vec<Id> = state.lines_of(999_999).iter().map(|l| l.id).collect();
    assert_eq!(orphans, [98, 99]);
    // Every phone's line list (built on two threads at this size).
    for n in 0..30_000i64 {
        assert_eq!(
            state.lines_of(1000 + n).len() as i64,
            n % 3 + 1,
            "phone {n}"
        );
    }
    // Each tenant's phones, in id order, indexed as they were read.
    for tenant in [1, 2] {
        let expected: Vec<Id> = (data.phones.iter())
            .filter(|p| p.tenant_id == tenant)
            .map(|p| p.id)
            .collect();
        let listed: Vec<Id> = state.phones_of(tenant).map(|p| p.id).collect();
        assert_eq!(listed, expected, "tenant {tenant}");
        assert_eq!(state.phone_count(tenant), expected.len());
    }
    // Shared strings are shared again after the load.
    let a = state.phone(1000).unwrap().model.clone().unwrap();
    let b = state.phone(1002).unwrap().model.clone().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

/// Shared fields are written once and then by index: the load gives
/// equal values one allocation, and values past the interning bound (each
/// written out every time) still come back whole.
#[test]
fn shared_fields_come_back_shared_and_past_the_bound() {
    let mut data = every_field();
    for n in 0..12_000i64 {
        data.phones.push(Phone {
            id: 1000 + n,
            tenant_id: 1,
            mac: mac(1000 + n as u64),
            family: Family::Yealink,
            model: (n % 5 != 0).then(|| ["T46S", "T54W", "VVX 450"][n as usize % 3].into()),
            label: None,
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            updated_at: n,
        });
        data.lines.push(Line {
            id: 100_000 + n,
            phone_id: 1000 + n,
            position: 1,
            extension: format!("{n}").into(),
            display_name: format!("User {n}").into(),
            auth_user: format!("u{n}").into(),
            password: None,
            // 6,000 distinct: past the 4,096 a section gives indexes.
            registrar: format!("pbx{}.example.net", n % 6_000).into(),
            proxy: (n % 2 == 1).then(|| "sbc.example.net".into()),
            settings: "{}".into(),
            updated_at: n,
        });
    }
    data.sort();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    write(&mirror_of(&data), &path, "s").unwrap();
    let back = loaded(&path).load().to_dataset();
    assert_eq!(back, data);
    let phone = |id: Id| back.phones.iter().find(|p| p.id == id).unwrap();
    let line = |id: Id| back.lines.iter().find(|l| l.id == id).unwrap();
    let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b);
    assert!(same(
        phone(1001).model.as_ref().unwrap(),
        phone(1004).model.as_ref().unwrap()
    ));
    assert!(same(&phone(1001).variables, &phone(1999).variables));
    assert!(same(&line(100_001).settings, &line(100_002).settings));
    assert!(same(
        line(100_001).proxy.as_ref().unwrap(),
        line(100_003).proxy.as_ref().unwrap()
    ));
    // The first registrars written got indexes; the last ones did not.
    assert!(same(&line(100_010).registrar, &line(106_010).registrar));
    assert_eq!(line(105_990).registrar, line(111_990).registrar);
}

/// A row cut by the end of the read buffer is decoded again from its start
/// once more is read. Values it shared for the first time before the cut
/// must not be counted twice: every later index would name the value
/// before the right one (a line would come back with another row's
/// registrar or settings, another tenant's among them).
#[test]
fn a_row_cut_after_a_new_shared_value_keeps_the_indexes_right() {
    let mut data = every_field();
    // 4,000 lines, each with a registrar and settings of its own (~1 KiB),
    // so every 1 MiB edge falls inside a row whose registrar is new; then
    // 4,000 more that refer back to them by index.
    for n in 0..8_000i64 {
        let own = n % 4_000;
        data.phones.push(Phone {
            id: 1000 + n,
            tenant_id: 1,
            mac: mac(1000 + n as u64),
            family: Family::Yealink,
            model: None,
            label: None,
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            updated_at: n,
        });
        data.lines.push(Line {
            id: 100_000 + n,
            phone_id: 1000 + n,
            position: 1,
            extension: format!("{n}").into(),
            display_name: format!("User {n}").into(),
            auth_user: format!("u{n}").into(),
            password: None,
            registrar: format!("pbx{own}.example.net").into(),
            proxy: None,
            settings: format!("{{\"pad\":\"{own:0>1000}\"}}").into(),
            updated_at: n,
        });
    }
    data.sort();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    write(&mirror_of(&data), &path, "s").unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 3 << 20);
    let back = loaded(&path).load().to_dataset();
    let wrong: Vec<_> = back
        .lines
        .iter()
        .zip(&data.lines)
        .filter(|(got, want)| got != want)
        .map(|(got, want)| (want.id, got.registrar.clone(), want.registrar.clone()))
        .take(3)
        .collect();
    assert!(wrong.is_empty(), "lines (id, got, wanted): {wrong:?}");
    assert!(back == data);
}

pub(super) fn load_error(path: &Path) -> String {
    match load(path) {
        Err(SyncError::Snapshot { reason, .. }) => reason,
        Err(e) => panic!("not a snapshot error: {e}"),
        Ok(_) => panic!("{} loaded", path.display()),
    }
}

#[test]
fn an_older_format_is_refused_and_says_so() {
    // Format 1: the header and every table as one postcard value.
    let data = every_field();
    let header = SnapshotHeader {
        source: "s".into(),
        synced_at: 1,
        cursor: Cursor::default(),
        meta: meta(),
        version: 1,
    };
    let mut bytes = b"DTSNAP\x00\x01".to_vec();
    bytes.extend(postcard::to_allocvec(&(header, data)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old");
    std::fs::write(&path, bytes).unwrap();
    let reason = load_error(&path);
    assert!(
        reason.contains("format 1") && reason.contains("reads formats 5 and 6"),
        "{reason}"
    );
}

#[test]
fn foreign_and_damaged_files_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    for foreign in [&b""[..], b"DTSNAP", b"{\"tenants\": []}\n", &[0xff; 64]] {
        std::fs::write(&path, foreign).unwrap();
        assert!(load_error(&path).contains("not a dialtone snapshot"));
    }
    assert!(load(&dir.path().join("missing")).unwrap().is_none());
    assert!(
        load_error(dir.path()).contains("not a file"),
        "{}",
        load_error(dir.path())
    );

    let good = dir.path().join("good");
    write(&mirror_of(&every_field()), &good, "s").unwrap();
    let bytes = std::fs::read(&good).unwrap();
    // Cut anywhere: always refused, since every table's length and row
    // count and the index's place must add up.
    for cut in 0..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        load_error(&path);
    }
    // Any byte changed: refused or loaded, but never a panic.
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        std::fs::write(&path, &damaged).unwrap();
        let _ = load(&path);
    }
    // A row count that disagrees with the bytes, under a checksum that
    // agrees with it.
    let index_at = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let (mut index, _) =
        postcard::take_from_bytes::<format::Index>(&bytes[index_at as usize..]).unwrap();
    index.sections[1].rows += 1;
    let mut damaged = bytes[..index_at as usize].to_vec();
    let index = postcard::to_allocvec(&index).unwrap();
    damaged.extend(&index);
    damaged.extend(format::index_checksum(format::MAGIC, index_at, &index).to_le_bytes());
    std::fs::write(&path, &damaged).unwrap();
    assert!(load_error(&path).contains("row"), "{}", load_error(&path));
}

/// A new password (in the user info or the query) is the same
/// database; another host, user or database is not.
#[test]
fn a_rotated_password_names_the_same_database() {
    let id = super::source_id("postgres://dialtone:old@db1:5432/dialtone");
    assert_eq!(
        id,
        super::source_id("postgres://dialtone:new@db1:5432/dialtone")
    );
    assert_eq!(
        id,
        super::source_id("postgres://dialtone:n%40w@db1:5432/dialtone")
    );
    // Written raw, an `@` in the password still ends no host.
    assert_eq!(
        id,
        super::source_id("postgres://dialtone:n@w@db1:5432/dialtone")
    );
    let query = super::source_id("postgres://db1/dialtone?user=d&password=old");
    assert_eq!(
        query,
        super::source_id("postgres://db1/dialtone?user=d&password=new")
    );
    for other in [
        "postgres://dialtone:old@db2:5432/dialtone",
        "postgres://other:old@db1:5432/dialtone",
        "postgres://dialtone:old@db1:5432/elsewhere",
    ] {
        assert_ne!(id, super::source_id(other), "{other}");
    }
}

//! A mirror's data and its index: what a full or incremental read keeps,
//! a new region, a `SourceMirror`'s answers and status, and the entry
//! quota; `raw` and `data` build entries for the other mirror tests.

use super::*;

pub(super) fn raw(dn: &str, name: Option<&str>, numbers: &[&str]) -> RawEntry {
    RawEntry {
        dn: dn.into(),
        name: name.map(Into::into),
        numbers: numbers.iter().map(|n| (*n).into()).collect(),
    }
}

pub(super) fn data(entries: Vec<RawEntry>) -> MirrorData {
    MirrorData {
        region: "US".into(),
        entries: from_full(entries, "US"),
        last_full_sync: Some(1_000),
        ..Default::default()
    }
}

fn row(settings: &str) -> DirectorySource {
    DirectorySource {
        id: 7,
        tenant_id: 3,
        name: "ad".into(),
        kind: dialtone_sync::SourceKind::Ldap,
        priority: 10,
        enabled: true,
        settings: settings.into(),
        secret: None,
        timeout_ms: 200,
        updated_at: 0,
    }
}

#[test]
fn the_index_matches_like_the_local_directory() {
    let d = data(vec![
        raw(
            "cn=ann",
            Some("Ann Example"),
            &["+1 (555) 010-1234", "555.010.9999"],
        ),
        raw("cn=bob", Some("Bob Example"), &["5550104321 x12"]),
        // Two entries of different names share a line: neither is shown
        // (the directory cannot say who called), as by the suffix alone.
        raw("cn=desk", Some("Front Desk"), &["555-010-7777"]),
        raw("cn=eve", Some("Eve Example"), &["(555) 010-7777"]),
        // One person listed twice is shown.
        raw("cn=gil", Some("Gil Example"), &["555-010-8888"]),
        raw("cn=gil2", Some("gil example"), &["+1 555 010 8888"]),
        // Does not normalize: found by its last seven digits only.
        raw("cn=old", Some("Old Line"), &["99-0106666"]),
        // Not kept: no name, or no number.
        raw("cn=noname", None, &["5550105555"]),
        raw("cn=nonumber", Some("Nobody"), &[]),
    ]);
    assert_eq!(d.entries.len(), 7);
    let loaded = d.index(7);
    assert_eq!(loaded.entries, 7);
    assert_eq!(loaded.find("+15550101234"), Some("Ann Example"));
    assert_eq!(loaded.find("+15550109999"), Some("Ann Example"));
    assert_eq!(loaded.find("+15550104321"), Some("Bob Example"));
    assert_eq!(loaded.find("+15550107777"), None);
    assert_eq!(loaded.find("+15550108888"), Some("Gil Example"));
    assert_eq!(loaded.find("+15550105555"), None);
    assert_eq!(loaded.find("+15550000000"), None);
    assert_eq!(loaded.find("+15550106666"), Some("Old Line"));
    // A number that does not normalize is the region's: a caller of
    // another country with its last digits is not it.
    assert_eq!(loaded.find("+4420106666"), None);
    // Ann's number normalized: another country's number with her last
    // seven digits is not hers.
    assert_eq!(loaded.find("+442070101234"), None);
}

#[test]
fn incremental_reads_merge_and_drop() {
    let mut d = data(vec![
        raw("cn=ann", Some("Ann"), &["5550101234"]),
        raw("cn=bob", Some("Bob"), &["5550104321"]),
    ]);
    let before = d.entries.clone();
    // The same entry again changes nothing.
    assert_eq!(
        merge(
            &mut d,
            vec![raw("cn=ann", Some("Ann"), &["5550101234"])],
            10
        ),
        (false, false)
    );
    assert_eq!(d.entries, before);
    let (changed, capped) = merge(
        &mut d,
        vec![
            raw("cn=ann", Some("Ann Renamed"), &["5550101234"]),
            // Lost its numbers: no longer in the mirror.
            raw("cn=bob", Some("Bob"), &[]),
            raw("cn=cat", Some("Cat"), &["5550102222"]),
            raw("cn=dan", Some("Dan"), &["5550103333"]),
        ],
        2,
    );
    assert!(changed);
    // Bob left, Cat came in, Dan found the mirror full.
    assert!(capped);
    let loaded = d.index(7);
    assert_eq!(loaded.find("+15550101234"), Some("Ann Renamed"));
    assert_eq!(loaded.find("+15550104321"), None);
    assert_eq!(loaded.find("+15550102222"), Some("Cat"));
    assert_eq!(loaded.find("+15550103333"), None);
}

#[test]
fn a_new_region_renormalizes() {
    let mut d = data(vec![raw("cn=ann", Some("Ann"), &["01632 960123"])]);
    let e164 = |d: &MirrorData| d.entries["cn=ann"].numbers[0].e164.clone();
    assert_eq!(e164(&d), None);
    d.renormalize("GB");
    assert_eq!(&*d.region, "GB");
    assert_eq!(e164(&d).as_deref(), Some("+441632960123"));
    assert_eq!(d.index(7).find("+441632960123"), Some("Ann"));
}

#[test]
fn a_source_mirror_answers_and_reports() {
    let r = row(r#"{"url":"ldap://dc1/","base_dn":"dc=x","mode":"mirror"}"#);
    let mirror = SourceMirror::new(&r, false);
    assert_eq!(mirror.lookup("+15550101234"), MirrorAnswer::NotReady);
    assert_eq!(mirror.status(), MirrorStatus::default());
    let mut d = data(vec![raw("cn=ann", Some("Ann"), &["5550101234"])]);
    d.last_full_sync = Some(now_millis() - 5_000);
    d.watermark = Some(Watermark::Usn(99));
    mirror.publish(Some(d.index(7)), &d);
    mirror.set_error(Some(("mirror_limit", "over 1 entries".into())));
    assert_eq!(
        mirror.lookup("+15550101234"),
        MirrorAnswer::Found("Ann".into())
    );
    assert_eq!(mirror.lookup("+15550109999"), MirrorAnswer::Missing);
    let status = mirror.status();
    assert_eq!(status.entries, 1);
    assert_eq!(status.incremental, Some("uSNChanged"));
    assert_eq!(status.last_error.as_deref(), Some("over 1 entries"));
    assert!(status
        .age_ms
        .is_some_and(|age| (5_000..60_000).contains(&age)));
    let json = serde_json::to_value(&status).unwrap();
    for key in [
        "entries",
        "last_full_sync",
        "last_full_ms",
        "last_incremental_sync",
        "last_incremental_ms",
        "last_error",
        "age_ms",
        "incremental",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    // Another source, or other settings: another fingerprint.
    let other = row(r#"{"url":"ldap://dc2/","base_dn":"dc=x","mode":"mirror"}"#);
    assert_ne!(
        SourceMirror::new(&other, false).fingerprint,
        mirror.fingerprint
    );
}

/// Behind: the last sync failed, or the data is older than twice the
/// interval; an entry cap hit by a sync that succeeded is neither.
#[test]
fn a_mirror_is_behind_after_a_failed_sync_or_twice_its_interval() {
    let r = row(r#"{"url":"ldap://dc1/","base_dn":"dc=x","mode":"mirror"}"#);
    let mirror = SourceMirror::new(&r, false);
    let now = now_millis();
    // Nothing synced or failed yet: its first sync is still to come.
    assert!(!mirror.behind(now, 60_000));
    let mut d = data(vec![raw("cn=ann", Some("Ann"), &["5550101234"])]);
    d.last_full_sync = Some(now - 100_000);
    mirror.publish(Some(d.index(7)), &d);
    mirror.set_error(Some(("mirror_limit", "over 1 entries".into())));
    assert!(!mirror.behind(now, 60_000));
    assert!(mirror.behind(now, 49_000));
    // A later incremental sync counts as current.
    d.last_incremental_sync = Some(now - 1_000);
    mirror.publish(None, &d);
    assert!(!mirror.behind(now, 49_000));
    mirror.set_sync_failed(true);
    assert!(mirror.behind(now, 3_600_000));
    mirror.set_sync_failed(false);
    assert!(!mirror.behind(now, 3_600_000));
}

#[test]
fn quotas_cap_entries() {
    // A tenant's mirrored sources share its quota: together never more.
    use super::source_task::quota_share;
    assert_eq!(quota_share(200_000, 1), 200_000);
    assert_eq!(quota_share(200_000, 0), 200_000);
    assert_eq!(quota_share(200_000, 3), 66_666);
    assert!((1..=10).all(|n| quota_share(200_000, n) * n as u64 <= 200_000));
    assert_eq!(quota_share(5, 10), 1);
    assert_eq!(entry_quota("{}", 200_000), 200_000);
    assert_eq!(
        entry_quota(r#"{"quotas":{"directory_entries":500}}"#, 200_000),
        500
    );
    assert_eq!(entry_quota(r#"{"directory_entries":"x"#, 9), 9);
}

#[path = "service_tests.rs"]
pub(super) mod service;

/// What a mirror frees (a quota's index, a sync task's entries) goes to a
/// blocking thread inside the runtime, where the registry's lock or a
/// worker every tenant's lookups need would otherwise free it; outside a
/// runtime (tools), where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn freed_values_leave_the_runtimes_workers() {
    struct Probe(std::sync::mpsc::Sender<std::thread::ThreadId>);
    impl Drop for Probe {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }
    let (told, freed_on) = std::sync::mpsc::channel();
    free_off_worker(Probe(told.clone()));
    let on = freed_on
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    assert_ne!(on, std::thread::current().id());
    let here = std::thread::spawn(move || {
        free_off_worker(Probe(told));
        std::thread::current().id()
    })
    .join()
    .unwrap();
    assert_eq!(freed_on.recv().unwrap(), here);
}

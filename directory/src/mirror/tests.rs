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
        // Two entries share a line: the exact match still picks one, in
        // DN order; the suffix alone would be ambiguous.
        raw("cn=desk", Some("Front Desk"), &["555-010-7777"]),
        raw("cn=eve", Some("Eve Example"), &["(555) 010-7777"]),
        // Does not normalize: found by its last seven digits only.
        raw("cn=old", Some("Old Line"), &["99-0106666"]),
        // Not kept: no name, or no number.
        raw("cn=noname", None, &["5550105555"]),
        raw("cn=nonumber", Some("Nobody"), &[]),
    ]);
    assert_eq!(d.entries.len(), 5);
    let loaded = d.index(7);
    assert_eq!(loaded.entries, 5);
    assert_eq!(loaded.find("+15550101234"), Some("Ann Example"));
    assert_eq!(loaded.find("+15550109999"), Some("Ann Example"));
    assert_eq!(loaded.find("+15550104321"), Some("Bob Example"));
    assert_eq!(loaded.find("+15550107777"), Some("Front Desk"));
    assert_eq!(loaded.find("+15550105555"), None);
    assert_eq!(loaded.find("+15550000000"), None);
    assert_eq!(loaded.find("+4420106666"), Some("Old Line"));
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
fn files_round_trip_for_their_own_settings_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = data(vec![
        raw("cn=ann", Some("Ann"), &["5550101234"]),
        raw("cn=bob", Some("Bob"), &["5550104321"]),
    ]);
    d.watermark = Some(Watermark::ModifyTimestamp("20261130145500Z".into()));
    d.last_incremental_sync = Some(2_000);
    d.last_full_ms = Some(42);
    let path = store::path(dir.path(), 7);
    assert!(path.ends_with("ldap-mirror-7.bin"));
    store::write(&path, "fp1", &d).unwrap();
    assert_eq!(store::read(&path, "fp1", 10).unwrap(), Some(d.clone()));
    // Another source's settings: not this mirror.
    assert_eq!(store::read(&path, "fp2", 10).unwrap(), None);
    // More entries than allowed, or garbage: refused, not loaded.
    assert!(store::read(&path, "fp1", 1).is_err());
    std::fs::write(&path, b"DTLDAPM\x01\xff\xff\xff").unwrap();
    assert!(store::read(&path, "fp1", 10).is_err());
    std::fs::write(&path, b"something else").unwrap();
    assert!(store::read(&path, "fp1", 10).is_err());
    store::remove(dir.path(), 7);
    assert_eq!(store::read(&path, "fp1", 10).unwrap(), None);
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

pub(super) mod service {
    use std::sync::Arc;
    use std::time::Duration;

    use dialtone_sync::testing::{build, eventually, TestDb};
    use dialtone_sync::{watcher, Id, Mirror, SourceKind};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::{LookupOptions, LookupService, SourceNetworks};

    /// A tenant whose mirrored source points at a port nothing listens on:
    /// the directory is down for the whole test.
    pub(in crate::mirror) async fn setup(dir: &std::path::Path) -> (TestDb, LookupService, Id) {
        let db = TestDb::sqlite();
        let store = db.store().await;
        let source = build::source(
            "acme",
            "ad",
            SourceKind::Ldap,
            serde_json::json!({"url": "ldap://127.0.0.1:9/", "base_dn": "dc=x", "mode": "mirror"}),
            None,
            200,
        );
        store
            .apply(
                &[build::tenant("acme", "US"), source],
                &build::audit("setup"),
            )
            .await
            .unwrap();
        let mirror = Arc::new(Mirror::new());
        watcher::full_load(&mirror, &*store).await.unwrap();
        let acme = mirror.load().tenant_by_slug("acme").unwrap().id;
        let options = LookupOptions {
            source_networks: SourceNetworks::parse(&["127.0.0.0/8"]).unwrap().shared(),
            mirror_dir: Some(dir.to_path_buf()),
            ..LookupOptions::default()
        };
        (db, LookupService::new(mirror, None, options), acme)
    }

    /// A tenant's own entries and its mirrored ones share one
    /// `directory_entries` quota: a mirror gets what the own entries leave,
    /// and what it holds counts for the admin API's next create.
    #[tokio::test]
    async fn own_and_mirrored_entries_share_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let (db, service, acme) = setup(dir.path()).await;
        let store = db.store().await;
        let mut quota = build::tenant("acme", "US");
        if let dialtone_sync::Mutation::UpsertTenant(t) = &mut quota {
            t.settings = r#"{"quotas":{"directory_entries":10}}"#.into();
        }
        let own: Vec<_> = (0..4)
            .map(|n| {
                build::entry(
                    "acme",
                    &format!("e{n}"),
                    "Own",
                    &[&format!("+1555010{n:04}")],
                )
            })
            .collect();
        store
            .apply(&[&[quota][..], &own[..]].concat(), &build::audit("quota"))
            .await
            .unwrap();
        watcher::full_load(&service.inner.mirror, &*store)
            .await
            .unwrap();
        let source = service.source(acme, "ad").unwrap();
        let crate::sources::Remote::Ldap(ldap) = &source.remote else {
            panic!("an LDAP source");
        };
        assert_eq!(service.max_entries(acme, ldap), 6);

        let mirror = source.mirror.clone().unwrap();
        let d = data(vec![
            raw("cn=ann", Some("Ann"), &["5550101234"]),
            raw("cn=bob", Some("Bob"), &["5550101235"]),
        ]);
        mirror.publish(Some(d.index(7)), &d);
        assert_eq!(
            service.mirrored_entries(&service.inner.mirror.load(), acme),
            2
        );
    }

    #[tokio::test]
    async fn lookups_answer_from_the_mirror_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, service, acme) = setup(dir.path()).await;
        let answer = service.lookup(acme, "+15550101234").await.unwrap();
        assert_eq!((answer.name(), answer.resolved.definitive), (None, false));
        let source = service.source(acme, "ad").unwrap();
        let mirror = source.mirror.clone().unwrap();
        assert_eq!(service.mirror_status(source.id).unwrap().entries, 0);
        let d = data(vec![raw("cn=ann", Some("Ann Example"), &["5550101234"])]);
        mirror.publish(Some(d.index(7)), &d);
        service.invalidate_tenant(acme);
        let answer = service.lookup(acme, "(555) 010-1234").await.unwrap();
        assert_eq!(answer.name(), Some("Ann Example"));
        assert_eq!(answer.resolved.source.as_deref(), Some("ad"));
        let miss = service.lookup(acme, "+15550109999").await.unwrap();
        assert_eq!((miss.name(), miss.resolved.definitive), (None, true));
        assert_eq!(source.searches(), 0);
        assert_eq!(service.mirror_status(source.id).unwrap().entries, 1);
    }

    #[tokio::test]
    async fn a_restarted_node_answers_from_its_file_while_the_directory_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, service, acme) = setup(dir.path()).await;
        let source = service.source(acme, "ad").unwrap();
        let fingerprint = source.mirror.as_ref().unwrap().fingerprint.clone();
        let mut d = data(vec![raw("cn=ann", Some("Ann Example"), &["5550101234"])]);
        d.last_full_sync = Some(now_millis() - 1_000);
        store::write(&store::path(dir.path(), source.id), &fingerprint, &d).unwrap();

        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        tokio::spawn(service.clone().run_mirrors(tracker.clone(), cancel.clone()));
        let loaded = eventually(Duration::from_secs(5), || {
            service
                .mirror_status(source.id)
                .is_some_and(|s| s.entries == 1)
        })
        .await;
        assert!(loaded, "{:?}", service.mirror_status(source.id));
        let answer = service.lookup(acme, "5550101234").await.unwrap();
        assert_eq!(answer.name(), Some("Ann Example"));
        let status = service.mirror_status(source.id).unwrap();
        assert_eq!(status.last_full_sync, d.last_full_sync);
        assert!(status.age_ms.is_some());
        cancel.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .unwrap();
    }

    /// A sync task that ends after its source was deleted leaves no file
    /// behind, whenever it ends: a sync publishing when `reconcile`
    /// removed the file wrote it again.
    #[tokio::test]
    async fn a_deleted_sources_task_takes_its_file_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (db, service, acme) = setup(dir.path()).await;
        let source = service.source(acme, "ad").unwrap();
        let fingerprint = source.mirror.as_ref().unwrap().fingerprint.clone();
        let file = store::path(dir.path(), source.id);
        let d = data(vec![raw("cn=ann", Some("Ann Example"), &["5550101234"])]);
        store::write(&file, &fingerprint, &d).unwrap();

        // Cancelled at once, its source still there: the file stays.
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        service
            .clone()
            .run_source(source.clone(), cancelled.clone())
            .await;
        assert!(file.exists());

        let store = db.store().await;
        let delete = dialtone_sync::Mutation::DeleteDirectorySource {
            tenant: "acme".into(),
            name: "ad".into(),
        };
        store
            .apply(&[delete], &build::audit("delete"))
            .await
            .unwrap();
        watcher::full_load(&service.inner.mirror, &*store)
            .await
            .unwrap();
        service.clone().run_source(source, cancelled).await;
        assert!(!file.exists());
    }

    #[tokio::test]
    async fn a_failed_sync_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, service, acme) = setup(dir.path()).await;
        let source = service.source(acme, "ad").unwrap();
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        tokio::spawn(service.clone().run_mirrors(tracker.clone(), cancel.clone()));
        let failed = eventually(Duration::from_secs(10), || {
            service
                .mirror_status(source.id)
                .is_some_and(|s| s.last_error.is_some())
        })
        .await;
        let status = service.mirror_status(source.id).unwrap();
        assert!(failed, "{status:?}");
        assert_eq!((status.entries, status.last_full_sync), (0, None));
        assert!(!store::path(dir.path(), source.id).exists());
        // Counted as behind, though it never synced: lookups would miss.
        assert_eq!(service.mirror_sources_behind(), 1);
        cancel.cancel();
    }
}

/// A smoke test of the reads against the slapd `scripts/test` starts (the
/// end-to-end tests live in `tests/`).
#[tokio::test]
async fn slapd_reads_page_by_page_and_incrementally() {
    let need = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run the tests through scripts/test"))
    };
    let (url, password) = (
        need("DIALTONE_TEST_LDAP_URL"),
        need("DIALTONE_TEST_LDAP_BIND_PASSWORD"),
    );
    let settings = crate::settings::LdapSettings::parse(
        "t",
        &serde_json::json!({
            "url": url,
            "bind_dn": "cn=admin,dc=example,dc=com",
            "base_dn": "ou=people,dc=example,dc=com",
            "filter": "(objectClass=inetOrgPerson)",
            "mode": "mirror",
            "page_size": 1,
        })
        .to_string(),
    )
    .unwrap();
    let networks = crate::SourceNetworks::parse(&["127.0.0.0/8"])
        .unwrap()
        .shared();
    let ldap = crate::ldap::LdapSource::new("t", settings, Some(password), networks).unwrap();
    let mut d = MirrorData {
        region: "US".into(),
        ..Default::default()
    };
    let full = one_sync::sync_once(
        &ldap,
        &super::work::MirrorWork::new(1),
        &mut d,
        true,
        1000,
        std::time::Duration::from_secs(60),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(full.changed && !full.capped);
    assert!(d.entries.len() >= 3, "{:?}", d.entries.keys());
    assert!(
        matches!(d.watermark, Some(Watermark::ModifyTimestamp(_))),
        "{:?}",
        d.watermark
    );
    assert_eq!(d.index(7).find("+15550101234"), Some("Alice Example"));
    let incremental = one_sync::sync_once(
        &ldap,
        &super::work::MirrorWork::new(1),
        &mut d,
        false,
        1000,
        std::time::Duration::from_secs(60),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!incremental.changed);
    assert!(d.last_incremental_sync.is_some());
    // A merge still waiting for a place when the sync's limit passes keeps
    // the mirror: the limit is the read's (it covered the merge, which
    // holds the data taken out of `d`, and a late merge emptied the mirror).
    let work = super::work::MirrorWork::new(1);
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, is_held) = tokio::sync::oneshot::channel::<()>();
    let limit = std::time::Duration::from_secs(3);
    let entries = d.entries.len();
    let hold = work.run(move || {
        let _ = held.send(());
        let _ = released.recv_timeout(std::time::Duration::from_secs(60));
    });
    let late = async {
        is_held.await.unwrap();
        let never = tokio_util::sync::CancellationToken::new();
        let sync = one_sync::sync_once(&ldap, &work, &mut d, false, 1000, limit, &never);
        let watch = async {
            // Past the read, waiting for the place; then past the limit.
            while work.waiting() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tokio::time::sleep(limit + std::time::Duration::from_millis(500)).await;
            release.send(()).unwrap();
        };
        tokio::join!(sync, watch).0
    };
    let (held, late) = tokio::join!(hold, late);
    held.unwrap();
    late.unwrap();
    assert_eq!(d.entries.len(), entries);
    assert!(d.watermark.is_some() && d.last_full_sync.is_some());

    // A cancel (the source edited) while the merge waits for its place
    // does not cut the sync short: the merge runs anyway, so the sync ends
    // with it and is charged for it. Cancelled before, the read stops.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, is_held) = tokio::sync::oneshot::channel::<()>();
    let hold = work.run(move || {
        let _ = held.send(());
        let _ = released.recv_timeout(std::time::Duration::from_secs(60));
    });
    let cancelled = async {
        is_held.await.unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        let sync = one_sync::sync_once(&ldap, &work, &mut d, false, 1000, limit, &cancel);
        let watch = async {
            while work.waiting() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            cancel.cancel();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            release.send(()).unwrap();
        };
        tokio::join!(sync, watch).0
    };
    let (held, merged) = tokio::join!(hold, cancelled);
    held.unwrap();
    assert!(merged.is_ok(), "{:?}", merged.err());
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let before = one_sync::sync_once(&ldap, &work, &mut d, false, 1000, limit, &cancel).await;
    assert!(before.is_err(), "a cancelled sync read its source");
    assert_eq!(d.entries.len(), entries);

    let capped = one_sync::sync_once(
        &ldap,
        &super::work::MirrorWork::new(1),
        &mut d,
        true,
        2,
        std::time::Duration::from_secs(60),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(capped.capped);
    assert_eq!(d.entries.len(), 2);
}

/// A sync waits for its interval, and for twenty times the last one of its
/// kind took, whichever is later: a tenant's 10 s interval does not make a
/// 3 s read run every 10 s.
#[test]
fn syncs_are_spaced_by_their_own_cost() {
    use super::schedule::next_sync;
    let mut data = MirrorData {
        last_full_sync: Some(1_000_000),
        last_full_ms: Some(100),
        ..Default::default()
    };
    // Cheap: the interval rules. No watermark: full syncs only.
    assert_eq!(next_sync(&data, 10_000, 5_000), (true, 1_010_000));
    // A 3 s full read: next one a minute later, not 10 s.
    data.last_full_ms = Some(3_000);
    assert_eq!(next_sync(&data, 10_000, 5_000), (true, 1_060_000));
    // Incremental syncs are spaced by their own last duration.
    data.watermark = Some(Watermark::Usn(7));
    data.last_incremental_sync = Some(1_001_000);
    data.last_incremental_ms = Some(50);
    assert_eq!(next_sync(&data, 10_000, 5_000), (false, 1_006_000));
    data.last_incremental_ms = Some(2_000);
    assert_eq!(next_sync(&data, 10_000, 5_000), (false, 1_041_000));
    // An incremental read as slow as a full one waits past the full sync.
    data.last_incremental_ms = Some(4_000);
    assert_eq!(next_sync(&data, 10_000, 5_000), (true, 1_060_000));
    // Never synced: due at once.
    assert_eq!(next_sync(&MirrorData::default(), 10_000, 5_000), (true, 0));
}

/// Every sync of a tenant's, from whichever source, moves the tenant's gate
/// twenty times its duration on (nineteen after its end): a source whose
/// row changed starts afresh, but not sooner than that.
#[test]
fn a_tenants_syncs_share_one_gate() {
    let gates = super::gates::SyncGates::default();
    assert_eq!(gates.open_at(3), 0);
    gates.synced(3, 10_000, 100);
    assert_eq!(gates.open_at(3), 11_900);
    // Another source of the tenant, ending before the gate: it adds on.
    gates.synced(3, 11_000, 50);
    assert_eq!(gates.open_at(3), 12_850);
    // Long after: counted from its end.
    gates.synced(3, 100_000, 10);
    assert_eq!(gates.open_at(3), 100_190);
    assert_eq!(gates.open_at(4), 0, "another tenant's gate is its own");
}

/// One sync of a tenant's runs at a time: its other due sources wait for
/// it, and then for the spacing it moves the gate by; other tenants'
/// syncs are not held up. A turn ends however its sync does.
#[test]
fn a_tenant_syncs_one_source_at_a_time() {
    let gates = gates::SyncGates::default();
    let turn = gates.start(7, 1_000).unwrap();
    assert!(gates.start(7, 1_000).is_none(), "two syncs of one tenant");
    assert!(gates.start(8, 1_000).is_some(), "another tenant waited");
    assert!(gates.open_at(7) > 1_000);
    gates.synced(7, 2_000, 100);
    drop(turn);
    let open = gates.open_at(7);
    assert!(open > 2_000, "not spaced: {open}");
    assert!(gates.start(7, open - 1).is_none());
    let again = gates.start(7, open);
    assert!(again.is_some());
    drop(again);
    assert!(
        gates.start(7, open).is_some(),
        "a dropped turn held the gate"
    );
}

/// A written file with `at`'s first occurrence (or, if `None`, its middle
/// byte) changed by one bit.
fn flipped(bytes: &[u8], at: Option<&[u8]>) -> Vec<u8> {
    let position = match at {
        Some(needle) => bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the bytes to flip are in the file"),
        None => bytes.len() / 2,
    };
    let mut damaged = bytes.to_vec();
    damaged[position] ^= 1;
    damaged
}

/// One bit flipped in a number, the watermark or anywhere between: refused
/// as damaged, never decoded into another number or another watermark.
#[test]
fn a_flipped_bit_is_refused_as_a_checksum_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = data(vec![
        raw("cn=ann", Some("Ann"), &["5550101234"]),
        raw("cn=bob", Some("Bob"), &["5550104321"]),
    ]);
    d.watermark = Some(Watermark::ModifyTimestamp("20261130145500Z".into()));
    let path = store::path(dir.path(), 7);
    store::write(&path, "fp1", &d).unwrap();
    let whole = std::fs::read(&path).unwrap();
    let places: [Option<&[u8]>; 3] = [Some(b"+15550104321"), Some(b"20261130145500Z"), None];
    for at in places {
        std::fs::write(&path, flipped(&whole, at)).unwrap();
        let error = store::read(&path, "fp1", 10).unwrap_err().to_string();
        assert!(error.contains("checksum mismatch"), "{at:?}: {error}");
    }
    std::fs::write(&path, &whole[..whole.len() - 1]).unwrap();
    assert!(store::read(&path, "fp1", 10).is_err(), "torn");
    std::fs::write(&path, &whole).unwrap();
    assert_eq!(store::read(&path, "fp1", 10).unwrap(), Some(d));
}

/// A file of the release before checksums (version 2: no sum after the
/// body) still loads, so an upgrade costs no source a full sync.
#[test]
fn a_file_without_a_checksum_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = data(vec![raw("cn=ann", Some("Ann"), &["5550101234"])]);
    d.watermark = Some(Watermark::Usn(77));
    let path = store::path(dir.path(), 7);
    store::write(&path, "fp1", &d).unwrap();
    let summed = std::fs::read(&path).unwrap();
    let payload = summed.strip_prefix(b"DTLDAPM\x04".as_slice()).unwrap();
    let unsummed = &payload[..payload.len() - 4];
    std::fs::write(&path, [b"DTLDAPM\x02".as_slice(), unsummed].concat()).unwrap();
    assert_eq!(store::read(&path, "fp1", 10).unwrap(), Some(d));
}

//! Mirrors through a `LookupService` over a store, with the tenant's
//! directory down: the shared quota, lookups answered from the mirror
//! alone, a restart answered from the file, a deleted source's file, a
//! failed sync; `setup` builds that service for other mirror tests.

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

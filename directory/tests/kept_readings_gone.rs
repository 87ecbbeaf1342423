//! Readings kept for a large directory (`directory-readings-<tenant>.bin`:
//! the tenant's numbers) go with the tenant, whether or not the node builds
//! indexes ahead (`lookup.warm_directories`): when the delete is seen, when
//! a node that missed it starts, and when a build that was running at the
//! delete ends after it.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dialtone_directory::local::{LocalDirectory, WARM_MIN_ENTRIES};
use dialtone_directory::{LookupOptions, LookupService};
use dialtone_sync::testing::{build, eventually};
use dialtone_sync::*;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const PROMPTLY: Duration = Duration::from_secs(5);

fn number(n: usize) -> String {
    format!("+1 555 {:03} {:04}", 200 + n / 10_000, n % 10_000)
}

/// A node that builds indexes only on first lookups.
fn service(mirror: Arc<Mirror>, dir: &Path) -> LookupService {
    let options = LookupOptions {
        mirror_dir: Some(dir.to_path_buf()),
        warm_directories: false,
        ..LookupOptions::default()
    };
    LookupService::new(mirror, None, options)
}

fn readings(dir: &Path, tenant: Id) -> std::path::PathBuf {
    dir.join(format!("directory-readings-{tenant}.bin"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenants_readings_go_when_the_delete_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<Mutation> = (0..WARM_MIN_ENTRIES)
        .map(|n| entry("big", &format!("e{n}"), "Someone", &[&number(n)]))
        .collect();
    let (_db, store, mirror) = mirror_of(&[&[tenant("big", "US")][..], &entries].concat()).await;
    let big = tenant_id(&mirror, "big");
    let service = service(mirror.clone(), dir.path());
    let stop = CancellationToken::new();
    tokio::spawn(service.clone().follow(stop.clone().cancelled_owned()));
    let (local, state) = (service.clone(), mirror.load());
    tokio::task::spawn_blocking(move || local.local().lookup(&state, big, &number(0)))
        .await
        .unwrap()
        .expect("in the directory");
    let file = readings(dir.path(), big);
    assert!(
        file.exists(),
        "a large directory's whole build keeps its readings"
    );

    store
        .apply(
            &[Mutation::DeleteTenant { slug: "big".into() }],
            &build::audit("delete"),
        )
        .await
        .unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    let gone = eventually(PROMPTLY, || !file.exists()).await;
    assert!(gone, "a deleted tenant's numbers stayed on disk");
    assert!(!service.local().holds_index_of(big));
    stop.cancel();
}

/// The node was down when the tenant was deleted, and does not build
/// ahead (the only sweep there was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_removes_the_readings_of_tenants_that_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, _store, mirror) = mirror_of(&[tenant("kept", "US")]).await;
    let kept = tenant_id(&mirror, "kept");
    let gone = kept + 1_000;
    for tenant in [kept, gone] {
        std::fs::write(readings(dir.path(), tenant), b"readings").unwrap();
    }
    let others: Vec<_> = [
        "directory-readings-notes.txt".to_string(),
        "directory-readings-x.bin".to_string(),
        format!("directory-readings-0{gone}.bin"),
        format!("directory-readings-+{gone}.bin"),
    ]
    .iter()
    .map(|name| dir.path().join(name))
    .collect();
    for other in &others {
        std::fs::write(other, b"the operator's").unwrap();
    }
    let service = service(mirror, dir.path());
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    tokio::spawn(service.clone().run_mirrors(tracker.clone(), cancel.clone()));
    let removed = eventually(PROMPTLY, || !readings(dir.path(), gone).exists()).await;
    assert!(removed, "a gone tenant's readings stayed");
    assert!(readings(dir.path(), kept).exists());
    for other in &others {
        assert!(other.exists(), "{} was removed", other.display());
    }
    cancel.cancel();
}

fn dataset(with_big: bool) -> Dataset {
    let tenant = |id: Id| Tenant {
        id,
        slug: format!("t{id}").into(),
        name: format!("Tenant {id}").into(),
        default_region: "US".into(),
        settings: "{}".into(),
        updated_at: 0,
    };
    let mut data = Dataset::default();
    data.tenants.push(tenant(2));
    if with_big {
        data.tenants.push(tenant(1));
        // Seconds of normalizing: the delete lands while it runs.
        data.directory_entries = (0..20_000)
            .map(|n| DirectoryEntry {
                id: n as Id + 1,
                tenant_id: 1,
                external_id: None,
                name: format!("E{n}").into(),
                company: None,
                numbers: build::work_numbers(&[number(n)]),
                updated_at: 0,
            })
            .collect();
    }
    data
}

/// The build ended after the delete had been applied (`invalidate` ran
/// before it): it put the index in the cache and wrote the readings file
/// of a tenant that was gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_ends_after_its_tenant_was_deleted_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = build::mirror_of(dataset(true));
    let local = Arc::new(LocalDirectory::keeping_readings(
        mirror.clone(),
        7,
        10,
        Some(dir.path().to_path_buf()),
    ));
    let lookup = {
        let (local, state) = (local.clone(), mirror.load());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
            local.find(&state, 1, &number(0), deadline).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    mirror.reset(
        dataset(false),
        Cursor::default(),
        Meta::default(),
        LoadedFrom::Database,
    );
    local.invalidate(&ChangeEvent::Reset { version: 0 });
    let answered = lookup.await.unwrap();
    assert_eq!(local.builds(), 1);
    assert!(
        answered.is_err(),
        "the build's result was dropped, not answered with: {answered:?}"
    );
    assert!(!local.holds_index_of(1), "a gone tenant's index in memory");
    assert!(
        !readings(dir.path(), 1).exists(),
        "a gone tenant's readings on disk"
    );
}

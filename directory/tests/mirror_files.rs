//! A mirrored source's file (`ldap-mirror-<id>.bin`: the customer's names
//! and numbers) lives exactly as long as the source is mirrored: put back
//! to live, disabled or deleted, on a running node or on one that was
//! down meanwhile, its file goes; nothing else in the folder does.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dialtone_directory::{LookupOptions, LookupService, SourceNetworks};
use dialtone_sync::testing::{eventually, test_key, TestDb};
use dialtone_sync::{watcher, Id, Mirror, Mutation, SourceKind, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A first full sync of the shared slapd, with room for a loaded machine.
const SYNCED: Duration = Duration::from_secs(30);
/// Well under the 30 s periodic reconcile: what removes a file within it
/// is the change itself, or the node's start.
const PROMPTLY: Duration = Duration::from_secs(5);

fn mirrored(mode: &str, enabled: bool) -> Mutation {
    let mut settings = ldap_settings(&shared_ldap_url());
    settings["mode"] = mode.into();
    let mut row = source(
        "acme",
        "ad",
        SourceKind::Ldap,
        settings,
        Some(LDAP_PASSWORD),
        2_000,
    );
    if let Mutation::UpsertDirectorySource(input) = &mut row {
        input.enabled = enabled;
    }
    row
}

/// A node: its mirror loaded from `store`, its mirror tasks running, its
/// files in `dir`.
struct Node {
    service: LookupService,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Node {
    async fn start(store: &Arc<dyn Store>, dir: &Path) -> Node {
        let mirror = Arc::new(Mirror::new());
        watcher::full_load(&mirror, &**store).await.unwrap();
        let options = LookupOptions {
            source_networks: SourceNetworks::parse(&["127.0.0.0/8"]).unwrap().shared(),
            mirror_dir: Some(dir.to_path_buf()),
            warm_directories: false,
            ..LookupOptions::default()
        };
        let service = LookupService::new(mirror, Some(test_key()), options);
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        tokio::spawn(service.clone().run_mirrors(tracker.clone(), cancel.clone()));
        Node {
            service,
            tracker,
            cancel,
        }
    }

    async fn catch_up(&self, store: &Arc<dyn Store>) {
        watcher::catch_up(self.service.mirror(), &**store)
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(30), self.tracker.wait())
            .await
            .expect("the mirror tasks end");
    }

    fn source_id(&self) -> Id {
        let acme = tenant_id(self.service.mirror(), "acme");
        self.service.source(acme, "ad").unwrap().id
    }

    async fn wait_for_file(&self, dir: &Path) -> PathBuf {
        let file = dir.join(format!("ldap-mirror-{}.bin", self.source_id()));
        let written = eventually(SYNCED, || file.exists()).await;
        let status = self.service.mirror_status(self.source_id());
        assert!(written, "no mirror file after a sync: {status:?}");
        file
    }
}

async fn apply(store: &Arc<dyn Store>, mutation: Mutation) {
    store.apply(&[mutation], &audit("test")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_put_back_to_live_or_disabled_loses_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), mirrored("mirror", true)],
            &audit("setup"),
        )
        .await
        .unwrap();
    let node = Node::start(&store, dir.path()).await;
    let file = node.wait_for_file(dir.path()).await;

    // The README's advice when the data must not be copied.
    apply(&store, mirrored("live", true)).await;
    node.catch_up(&store).await;
    let gone = eventually(PROMPTLY, || !file.exists()).await;
    assert!(gone, "a live source kept its mirror file");

    apply(&store, mirrored("mirror", true)).await;
    node.catch_up(&store).await;
    let file = node.wait_for_file(dir.path()).await;
    apply(&store, mirrored("mirror", false)).await;
    node.catch_up(&store).await;
    let gone = eventually(PROMPTLY, || !file.exists()).await;
    assert!(gone, "a disabled source kept its mirror file");
    node.stop().await;
}

/// Node 1 is down while the source, then its tenant, are deleted through
/// node 2 (PostgreSQL, as a cluster runs): no task of node 1's ever sees
/// the row go, and the file stayed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_while_its_source_was_deleted_removes_the_file_when_it_starts() {
    let (dir, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), mirrored("mirror", true)],
            &audit("setup"),
        )
        .await
        .unwrap();
    let node1 = Node::start(&store, dir.path()).await;
    let node2 = Node::start(&db.store().await, elsewhere.path()).await;
    let file = node1.wait_for_file(dir.path()).await;
    // What shares the folder and is not a mirror file of ours stays.
    let others: Vec<PathBuf> = [
        "ldap-mirror-notes.txt",
        "ldap-mirror-1.bin.bak",
        "ldap-mirror-01.bin",
        "dialtone.snapshot",
    ]
    .iter()
    .map(|name| dir.path().join(name))
    .collect();
    for other in &others {
        std::fs::write(other, b"the operator's").unwrap();
    }
    node1.stop().await;

    let node2_store = db.store().await;
    apply(
        &node2_store,
        Mutation::DeleteDirectorySource {
            tenant: "acme".into(),
            name: "ad".into(),
        },
    )
    .await;
    apply(
        &node2_store,
        Mutation::DeleteTenant {
            slug: "acme".into(),
        },
    )
    .await;
    node2.catch_up(&node2_store).await;
    assert!(file.exists(), "node 1 was down: nothing removed it yet");

    let node1 = Node::start(&store, dir.path()).await;
    let gone = eventually(PROMPTLY, || !file.exists()).await;
    assert!(gone, "the restarted node kept a deleted source's file");
    for other in &others {
        assert!(other.exists(), "{} was removed", other.display());
    }
    node1.stop().await;
    node2.stop().await;
}

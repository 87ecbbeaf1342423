//! Running nodes meet a migration that changes a column's type or
//! collation in place. sqlx keeps each connection's prepared statements,
//! and PostgreSQL refuses to run one whose result changed since it was
//! prepared ("cached plan must not change result type"). Before, every
//! connection that had prepared one failed it at each use, for up to half
//! an hour: the node stale, its own edits refused. Now the first failure
//! retires those connections and the call is tried again on a fresh one.

mod common;

use std::sync::Arc;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

/// An admin edit of phone `n`: its label, checked against the tag the
/// node's mirror holds, which reads the phone's row back as a catch-up does.
async fn edit(store: &dyn Store, mirror: &Mirror, n: u32, label: &str) -> Result<(), SyncError> {
    let mac: Mac = format!("001565{n:06x}").parse().unwrap();
    let state = mirror.load();
    let seen = state.phone_by_mac(&mac).expect("the node serves the phone");
    let Mutation::UpsertPhone(mut input) = phone("acme", n, 1) else {
        unreachable!()
    };
    input.label = Some(label.into());
    let mutations = [
        Mutation::Expect {
            target: Target::Phone { mac },
            etag: phone_etag(seen, &state.lines_of(seen.id)),
        },
        Mutation::UpsertPhone(input),
    ];
    store.apply(&mutations, &audit("edit")).await.map(|_| ())
}

fn label(mirror: &Mirror, n: u32) -> Option<String> {
    let mac: Mac = format!("001565{n:06x}").parse().unwrap();
    Some(
        mirror
            .load()
            .phone_by_mac(&mac)?
            .label
            .as_deref()?
            .to_owned(),
    )
}

/// A node that has edited its phone `n` and caught up a few times: both
/// of its pool's connections have prepared the statement that reads a
/// phone's row.
async fn warm_node(db: &TestDb, n: u32) -> (Arc<dyn Store>, Mirror) {
    let store = db
        .store_with(&store::StoreOptions {
            max_connections: 2,
            ..Default::default()
        })
        .await;
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", n, 1)],
            &audit("setup"),
        )
        .await
        .unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    for i in 0..3 {
        edit(&*store, &mirror, n, &format!("before {i}"))
            .await
            .unwrap();
        watcher::catch_up(&mirror, &*store).await.unwrap();
    }
    (store, mirror)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_keep_working_after_a_column_changes_type() {
    let db = TestDb::postgres().await;
    let (a, mirror_a) = warm_node(&db, 0xa).await;
    let (b, mirror_b) = warm_node(&db, 0xb).await;

    // `execute` connects to this test's own database.
    execute(
        &db,
        "ALTER TABLE phones ALTER COLUMN mac TYPE TEXT COLLATE \"POSIX\"",
    )
    .await;
    execute(
        &db,
        "ALTER TABLE tenants ALTER COLUMN name TYPE varchar(200)",
    )
    .await;

    // Each node's first edit and first catch-up after the change meet its
    // stale statements, and succeed all the same.
    edit(&*b, &mirror_b, 0xb, "after")
        .await
        .expect("an edit after the change succeeds");
    watcher::catch_up(&mirror_a, &*a)
        .await
        .expect("a catch-up after the change succeeds");
    assert_eq!(label(&mirror_a, 0xb).as_deref(), Some("after"));

    edit(&*a, &mirror_a, 0xa, "after").await.unwrap();
    watcher::catch_up(&mirror_b, &*b).await.unwrap();
    assert_eq!(label(&mirror_b, 0xa).as_deref(), Some("after"));
    assert_eq!(label(&mirror_b, 0xb).as_deref(), Some("after"));

    // A reload (`reload-all`) reads every table afresh.
    let reloaded = Mirror::new();
    watcher::full_load(&reloaded, &*a).await.unwrap();
    assert_eq!(label(&reloaded, 0xa).as_deref(), Some("after"));
}

//! A node that was down while its PostgreSQL failed over to a standby at
//! the same address reloads in full at its first catch-up. The promoted
//! standby keeps the database id and, once its transaction ids reach the
//! node's cursor (taken on the lost primary), passes the rewind check:
//! before, the node kept a tenant only the lost primary had and never saw
//! the new primary's changes below its cursor (a token revoked there went
//! on answering). What tells the two apart is the WAL timeline, read with
//! every load and catch-up; here the mirror is given another one than the
//! server's, as the lost primary's would be.

mod common;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

/// A mirror as the node left it on the lost primary: holding `vanish`,
/// which the database lacks, missing `newco`, which the database added
/// under ids the cursor has passed, with the timeline `timeline`.
async fn mirror_from_the_lost_primary(
    store: &dyn Store,
    timeline: Option<u32>,
) -> (Mirror, Option<u32>) {
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let (mut data, _, meta) = store.load_all().await.unwrap();
    store
        .apply(&[tenant("newco", "US")], &audit("on the new primary"))
        .await
        .unwrap();
    let (_, past_it, _) = store.load_all().await.unwrap();
    let mut vanish = tenant_row("{}");
    vanish.id = 999;
    vanish.slug = "vanish".into();
    data.tenants.push(vanish);
    let mirror = Mirror::new();
    let server = meta.timeline;
    mirror.reset(
        data,
        past_it,
        Meta { timeline, ..meta },
        LoadedFrom::Snapshot,
    );
    (mirror, server)
}

fn serves(mirror: &Mirror, slug: &str) -> bool {
    mirror.load().tenant_by_slug(slug).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_from_another_timeline_reloads_in_full() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    // Read by the real query, in the load's transaction.
    let (_, _, meta) = store.load_all().await.unwrap();
    let Some(server) = meta.timeline else {
        panic!("a primary's timeline is readable: {meta:?}");
    };
    let (mirror, _) = mirror_from_the_lost_primary(&*store, Some(server + 1)).await;
    assert!(serves(&mirror, "vanish") && !serves(&mirror, "newco"));
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert!(
        serves(&mirror, "newco"),
        "the new primary's tenant is served"
    );
    assert!(
        !serves(&mirror, "vanish"),
        "the lost primary's tenant is gone"
    );
    assert_eq!(mirror.load().meta().timeline, Some(server));
    // The catch-ups after are plain ones, on the server's timeline.
    store
        .apply(&[tenant("later", "US")], &audit("after"))
        .await
        .unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert!(serves(&mirror, "later"));
    assert_eq!(mirror.load().meta().timeline, Some(server));
}

/// A snapshot of the release before has no timeline: the first catch-up
/// takes the server's, and does not reload for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_timeline_is_adopted() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let (mirror, server) = mirror_from_the_lost_primary(&*store, None).await;
    assert!(server.is_some());
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert_eq!(mirror.load().meta().timeline, server);
    assert!(
        serves(&mirror, "vanish"),
        "no evidence of a failover, no reload"
    );
}

/// SQLite has no timeline: it neither reloads nor forgets one known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_has_no_timeline() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let (mirror, server) = mirror_from_the_lost_primary(&*store, Some(7)).await;
    assert_eq!(server, None);
    store
        .apply(&[tenant("later", "US")], &audit("after"))
        .await
        .unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert!(serves(&mirror, "later") && serves(&mirror, "vanish"));
    assert_eq!(mirror.load().meta().timeline, Some(7));
}

/// A role refused the functions the timeline is read with: the node
/// loads and catches up as before timelines were read, keeping the
/// timeline it knew, rather than stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_the_role_may_not_read_stops_nothing() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let role = format!("tl_{:016x}", rand::random::<u64>());
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
        // In this database only: built-in functions are its catalog's rows.
        "REVOKE EXECUTE ON FUNCTION pg_current_wal_lsn() FROM PUBLIC".into(),
    ] {
        execute(&db, &sql).await;
    }
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    let refused = store::open(
        &format!("{scheme}://{role}@{host}"),
        dialtone_sync::testing::test_key(),
        &StoreOptions::default(),
    )
    .await
    .unwrap();

    let read = async {
        store
            .apply(&[tenant("acme", "US")], &audit("setup"))
            .await
            .unwrap();
        let (data, cursor, meta) = refused.load_all().await.unwrap();
        assert_eq!(meta.timeline, None);
        let mirror = Mirror::new();
        mirror.reset(
            data,
            cursor,
            Meta {
                timeline: Some(5),
                ..meta
            },
            LoadedFrom::Database,
        );
        store
            .apply(&[tenant("newco", "US")], &audit("after"))
            .await
            .unwrap();
        watcher::catch_up(&mirror, &*refused).await.unwrap();
        assert!(serves(&mirror, "acme") && serves(&mirror, "newco"));
        assert_eq!(mirror.load().meta().timeline, Some(5));
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(read)).await;
    drop(refused);
    execute(&db, &format!("DROP OWNED BY {role}")).await;
    execute(&db, &format!("DROP ROLE {role}")).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

//! PostgreSQL as deployed: where dialtone's tables are, and what refuses
//! a node before it serves. An empty schema put ahead of the tables on the
//! role's search_path (a DBA's `CREATE SCHEMA <role>`) is not migrated
//! into or read; tables in two schemas of the path are refused by name;
//! a path that names another schema on purpose keeps working; a standby
//! is refused; a pooler that moves a session's statements is named.

#[macro_use]
mod common;

use std::sync::Arc;

use common::*;
use dialtone_sync::store::StoreOptions;
use dialtone_sync::testing::{test_key, PrivatePostgres, TestDb};
use dialtone_sync::*;
use sqlx::{Connection, Executor};

async fn execute(url: &str, statements: &[&str]) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut c).await.unwrap();
    }
    c.close().await.unwrap();
}

/// The database's name, for `ALTER DATABASE`.
fn name_of(url: &str) -> &str {
    url.rsplit_once('/').map(|(_, name)| name).unwrap()
}

async fn open(url: &str) -> Arc<dyn Store> {
    dialtone_sync::open(url, test_key(), &StoreOptions::default())
        .await
        .unwrap()
}

/// Schemas that hold a table of dialtone's.
async fn schemas_holding(url: &str) -> Vec<String> {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let found = sqlx::query_scalar(
        "SELECT schemaname::text FROM pg_tables WHERE tablename = 'dialtone_meta' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_schema_ahead_on_the_path_is_not_used() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    store
        .apply(
            &[tenant("acme", "US"), phone("acme", 1, 1)],
            &audit("setup"),
        )
        .await
        .unwrap();
    assert_eq!(schemas_holding(&db.url).await, ["public"]);

    // The default path is `"$user", public`: a schema named after the
    // role now comes first.
    execute(&db.url, &["CREATE SCHEMA AUTHORIZATION CURRENT_USER"]).await;

    // A node restarted now.
    let restarted = open(&db.url).await;
    restarted.migrate().await.unwrap();
    let rows = db_rows(&*restarted).await;
    assert_eq!((rows.tenants.len(), rows.phones.len()), (1, 1));
    assert_eq!(schemas_holding(&db.url).await, ["public"]);
    // Its writes land beside the rows it read.
    restarted
        .apply(&[phone("acme", 2, 1)], &audit("after"))
        .await
        .unwrap();
    assert_eq!(db_rows(&*store).await.phones.len(), 2);
    restarted.close().await;
    store.close().await;
}

/// A running node's connections stay on its schema when a table of the
/// same name appears ahead of it on the path (an older node migrating
/// into a new empty schema): its next connections read it otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_reads_its_own_schema_when_another_appears_ahead() {
    let db = TestDb::postgres().await;
    db.store()
        .await
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    let running = open(&db.url).await;
    running.check_schema().await.unwrap();
    execute(
        &db.url,
        &[
            "CREATE SCHEMA AUTHORIZATION CURRENT_USER",
            "CREATE TABLE dialtone.tenants (LIKE public.tenants)",
        ],
    )
    .await;
    assert_eq!(db_rows(&*running).await.tenants.len(), 1);
    running.close().await;
}

/// A large import's second connection (`bulk_read.rs`) is its own, not
/// the pool's: it reads the schema the first is pinned to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_imports_second_reader_reads_the_pinned_schema() {
    counters();
    let (db, store, mut batch) = stored_big_fleet().await;
    execute(
        &db.url,
        &[
            "CREATE SCHEMA AUTHORIZATION CURRENT_USER",
            "CREATE TABLE dialtone.lines (LIKE public.lines)",
        ],
    )
    .await;
    phone_mut(&mut batch, 7).label = Some("moved to reception".into());
    let before = large_reads("import", "two_connections");
    let report = store.apply(&batch[2..], &audit("import")).await.unwrap();
    assert_eq!(large_reads("import", "two_connections"), before + 1);
    assert_eq!(report.phones.updated, 1, "{report:?}");
    assert_eq!(report.changed(), 1, "{report:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_two_schemas_of_the_path_are_refused_by_name() {
    let db = TestDb::postgres().await;
    let name = name_of(&db.url).to_string();
    // Migrated once into `app` on purpose, once into public.
    execute(
        &db.url,
        &[
            "CREATE SCHEMA app",
            &format!("ALTER DATABASE {name} SET search_path = app"),
        ],
    )
    .await;
    let in_app = db.store().await;
    in_app
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    in_app.close().await;
    assert_eq!(schemas_holding(&db.url).await, ["app"]);
    // A path naming another schema on purpose is kept.
    let again = open(&db.url).await;
    again.check_schema().await.unwrap();
    assert_eq!(db_rows(&*again).await.tenants.len(), 1);
    again.close().await;

    execute(
        &db.url,
        &[&format!("ALTER DATABASE {name} SET search_path = public")],
    )
    .await;
    db.store().await.close().await;
    assert_eq!(schemas_holding(&db.url).await, ["app", "public"]);

    execute(
        &db.url,
        &[&format!(
            "ALTER DATABASE {name} SET search_path = app, public"
        )],
    )
    .await;
    let both = open(&db.url).await;
    for checked in [both.migrate().await, both.check_schema().await] {
        match checked {
            Err(e @ SyncError::SchemaAmbiguous { .. }) => {
                let text = e.to_string();
                assert!(text.contains("(app, public)"), "{text}");
                assert!(text.contains("search_path"), "{text}");
            }
            other => panic!("two schemas of tables were not refused: {other:?}"),
        }
    }
    both.close().await;
}

/// A new database whose path names no schema that exists has nowhere to
/// migrate into: said so, not PostgreSQL's "no schema has been selected".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_of_no_schema_is_named() {
    let db = TestDb::postgres().await;
    let name = name_of(&db.url).to_string();
    execute(
        &db.url,
        &[&format!("ALTER DATABASE {name} SET search_path = nowhere")],
    )
    .await;
    let store = open(&db.url).await;
    match store.migrate().await {
        Err(e @ SyncError::NoSchema(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("(nowhere)") && text.contains("CREATE SCHEMA"),
                "{text}"
            );
        }
        other => panic!("a path of no schema was not named: {other:?}"),
    }
    store.close().await;
}

/// A server in recovery takes the reads of a schema check, and then
/// fails every write and the change listener: refused before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_is_refused() {
    let pg = PrivatePostgres::start();
    let url = pg.url();
    let store = open(&url).await;
    store.migrate().await.unwrap();
    store.close().await;

    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let data: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    std::fs::write(std::path::Path::new(&data).join("standby.signal"), "").unwrap();
    pg.stop_server();
    pg.start_server();

    let standby = open(&url).await;
    for checked in [standby.check_schema().await, standby.migrate().await] {
        match checked {
            Err(e @ SyncError::Standby(_)) => {
                let text = e.to_string();
                assert!(text.contains("127.0.0.1"), "{text}");
                assert!(text.contains("point nodes at the primary"), "{text}");
            }
            other => panic!("a standby was not refused: {other:?}"),
        }
    }
    standby.close().await;
}

/// pgbouncer's transaction pooling hands a client's next statement to a
/// server session that already holds sqlx's statement of that name: the
/// error says to use session pooling, not only which statement exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_name_taken_in_the_session_names_the_pooler() {
    let db = TestDb::postgres().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // What another client left on the server session.
    c.execute("PREPARE sqlx_s_1 AS SELECT 1").await.unwrap();
    let e = sqlx::query_scalar::<_, i32>("SELECT 2")
        .fetch_one(&mut c)
        .await
        .unwrap_err();
    let e = SyncError::from(e);
    assert!(matches!(e, SyncError::PoolerMode(_)), "{e:?}");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(
        text.contains("sqlx_s_1") && text.contains("pool_mode = session"),
        "{text}"
    );
    c.close().await.unwrap();
}

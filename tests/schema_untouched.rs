//! Dry runs and the commands that only read never migrate: a new release
//! tried out against a database the running nodes use (`import --dry-run`,
//! `token list`) leaves its schema as it was, whatever `auto_migrate`
//! says, and says to run `dialtone migrate`. The commands that write still
//! migrate.

mod common;

use std::path::Path;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::Backend;

fn migrations(backend: Backend) -> std::path::PathBuf {
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(name)
}

/// The database as the release before this one left it: every migration
/// but the last. Returns the version it is at.
async fn migrate_all_but_the_last(db: &TestDb, scratch: &Path) -> i64 {
    let mut files: Vec<_> = std::fs::read_dir(migrations(db.backend))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files.pop();
    std::fs::create_dir_all(scratch).unwrap();
    for file in &files {
        std::fs::copy(file, scratch.join(file.file_name().unwrap())).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(scratch).await.unwrap();
    match db.backend {
        Backend::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
            let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                .await
                .unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
    }
    version(db.backend, &db.url).await.expect("migrated")
}

/// The highest migration applied, `None` for a database with no schema.
async fn version(backend: Backend, url: &str) -> Option<i64> {
    let query = "SELECT max(version) FROM _sqlx_migrations WHERE success";
    let found = match backend {
        Backend::Sqlite => {
            // No file, no schema.
            let pool = sqlx::SqlitePool::connect(url).await.ok()?;
            let found = sqlx::query_scalar::<_, Option<i64>>(query)
                .fetch_one(&pool)
                .await;
            pool.close().await;
            found
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let found = sqlx::query_scalar::<_, Option<i64>>(query)
                .fetch_one(&pool)
                .await;
            pool.close().await;
            found
        }
    };
    found.ok().flatten()
}

fn dialtone_run(dir: &Path, url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = dialtone(dir, url);
    // Migrating is allowed, so only the command's own choice keeps the
    // schema as it is.
    cmd.env("DIALTONE_DATABASE__AUTO_MIGRATE", "true")
        .args(args);
    let out = run(cmd);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn refused_as_unmigrated(what: &str, (code, out, err): (Option<i32>, String, String)) {
    assert_eq!(code, Some(1), "{what}: {out}{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dialtone: checking the database schema:")
            && last.contains("run `dialtone migrate`"),
        "{what}: {err}"
    );
}

fn an_older_schema_is_left_as_it_is(backend: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(backend));
    let dir = tempfile::tempdir().unwrap();
    let older = rt.block_on(migrate_all_but_the_last(&db, &dir.path().join("older")));
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(1, 3));
    let dry_run = [
        "import",
        "--dry-run",
        tenants.to_str().unwrap(),
        phones.to_str().unwrap(),
    ];
    let schema = || rt.block_on(version(backend, &db.url));

    refused_as_unmigrated(
        "import --dry-run",
        dialtone_run(dir.path(), &db.url, &dry_run),
    );
    assert_eq!(schema(), Some(older), "import --dry-run migrated");
    refused_as_unmigrated(
        "token list",
        dialtone_run(dir.path(), &db.url, &["token", "list"]),
    );
    assert_eq!(schema(), Some(older), "token list migrated");

    // The commands that write still migrate when allowed; then the dry
    // run goes through.
    let create = [
        "token",
        "create",
        "--scope",
        "global-admin",
        "--name",
        "ops",
    ];
    let (code, _, err) = dialtone_run(dir.path(), &db.url, &create);
    assert_eq!(code, Some(0), "{err}");
    assert!(schema() > Some(older), "token create did not migrate");
    let (code, out, err) = dialtone_run(dir.path(), &db.url, &dry_run);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("would import: "), "{out}");
}

#[test]
fn dry_runs_and_reads_leave_an_older_sqlite_schema_as_it_is() {
    an_older_schema_is_left_as_it_is(Backend::Sqlite);
}

#[test]
fn dry_runs_and_reads_leave_an_older_postgres_schema_as_it_is() {
    an_older_schema_is_left_as_it_is(Backend::Postgres);
}

/// The embedded SQLite database is created and migrated by the first
/// command that writes (`serve`, `import`); a dry run against a file that
/// has no schema yet says so and creates none.
#[test]
fn a_dry_run_on_a_fresh_sqlite_database_creates_no_schema() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let tenants = tenants.to_str().unwrap();
    let result = dialtone_run(dir.path(), &url, &["import", "--dry-run", tenants]);
    refused_as_unmigrated("import --dry-run", result);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        rt.block_on(version(Backend::Sqlite, &url)),
        None,
        "a schema was created"
    );

    let (code, out, err) = dialtone_run(dir.path(), &url, &["import", tenants]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("imported: tenants +1"), "{out}");
}

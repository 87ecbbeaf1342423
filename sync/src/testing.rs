//! Throwaway databases for tests (feature `testing`). PostgreSQL comes from
//! the server `scripts/test` starts (`DIALTONE_TEST_PG_URL`); each test gets
//! a database of its own, which `restore.rs` dumps and restores.
//! [`PrivatePostgres`] is a whole cluster for tests that stop the server;
//! a [`Relay`] in front of one makes its connections go silent.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::Connection;

use crate::crypto::SecretKey;
use crate::store::{self, Backend, Store, StoreOptions};

pub mod logs;
mod relay;
mod restore;
pub use relay::Relay;
pub use restore::Backup;

pub fn test_key() -> SecretKey {
    SecretKey::parse(&"5a".repeat(32)).expect("valid key")
}

/// The shared test server, or a clear failure: tests never silently skip.
pub fn pg_server_url() -> String {
    std::env::var("DIALTONE_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("DIALTONE_TEST_PG_URL is not set: run the tests through scripts/test, which starts PostgreSQL")
    })
}

fn with_database(url: &str, db: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{db}")
}

pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::sqlite(),
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> TestDb {
        let server = pg_server_url();
        let name = format!("t_{:016x}", rand::thread_rng().gen::<u64>());
        let mut conn = sqlx::PgConnection::connect(&server)
            .await
            .expect("connect to test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        TestDb {
            url: with_database(&server, &name),
            backend: Backend::Postgres,
            _dir: None,
        }
    }

    /// A migrated store with the test key.
    pub async fn store(&self) -> Arc<dyn Store> {
        self.store_with(&StoreOptions::default()).await
    }

    pub async fn store_with(&self, options: &StoreOptions) -> Arc<dyn Store> {
        let store = store::open(&self.url, test_key(), options)
            .await
            .expect("open store");
        store.migrate().await.expect("migrate");
        store
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false)
}

/// A PostgreSQL cluster of its own, for tests that stop and start the server.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = PathBuf::from(std::env::var("DIALTONE_TEST_PG_BIN").unwrap_or_else(|_| {
            panic!("DIALTONE_TEST_PG_BIN is not set: run the tests through scripts/test")
        }));
        let dir = tempfile::Builder::new()
            .prefix("dialtone-pg")
            .tempdir()
            .expect("temp dir");
        let pg = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
        };
        if is_root() {
            Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(pg.dir.path())
                .status()
                .expect("chown");
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "dialtone",
                "--auth=trust",
                "--no-sync",
            ],
        );
        pg.start_server();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let status = if is_root() {
            let mut line = shell_quote(&exe.display().to_string());
            for a in args {
                line.push(' ');
                line.push_str(&shell_quote(a));
            }
            Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", &line])
                .status()
        } else {
            Command::new(&exe).args(args).status()
        }
        .expect("run PostgreSQL tool");
        assert!(status.success(), "{tool} {args:?} failed");
    }

    pub fn start_server(&self) {
        let log = self.dir.path().join("log").display().to_string();
        let opts = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    pub fn stop_server(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://dialtone@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl").display().to_string();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            let line = std::iter::once(exe.as_str())
                .chain(args)
                .map(shell_quote)
                .collect::<Vec<_>>()
                .join(" ");
            Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", &line])
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Data builders for tests of every crate: one set, so a fixture means the
/// same thing everywhere. MACs use real vendor OUIs and numbers the
/// reserved fictional ranges (docs/test-data.md).
pub mod build {
    use crate::store::{
        DirectoryEntryInput, DirectorySourceInput, LineInput, PhoneInput, TenantInput,
    };
    use std::sync::Arc;

    use crate::{
        Audit, Cursor, Dataset, DirectoryNumber, Family, Id, LoadedFrom, Mac, Meta, Mirror,
        Mutation, Phone, SourceKind, Tenant,
    };

    pub fn tenant(slug: &str, region: &str) -> Mutation {
        Mutation::UpsertTenant(TenantInput {
            slug: slug.into(),
            name: format!("{slug} Ltd"),
            default_region: region.into(),
            settings: "{}".into(),
        })
    }

    pub fn line(ext: &str, password: &str) -> LineInput {
        LineInput {
            extension: ext.into(),
            display_name: format!("Desk {ext}"),
            auth_user: ext.into(),
            password: Some(password.into()),
            registrar: "sip.example.net".into(),
            proxy: None,
            settings: "{}".into(),
        }
    }

    /// A Yealink phone (OUI 00:15:65) numbered `n`.
    pub fn phone(tenant: &str, n: u32, lines: usize) -> Mutation {
        Mutation::UpsertPhone(PhoneInput {
            tenant: tenant.into(),
            mac: format!("001565{n:06x}").parse().expect("a valid MAC"),
            family: Family::Yealink,
            model: Some("T46S".into()),
            label: None,
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            lines: (0..lines)
                .map(|i| line(&format!("{}", 100 + i), &format!("pw-{n}-{i}")))
                .collect(),
        })
    }

    /// A tenant row as the mirror holds it: `acme`, id 1, with `settings`.
    pub fn tenant_row(settings: &str) -> Tenant {
        Tenant {
            id: 1,
            slug: "acme".into(),
            name: "Acme".into(),
            default_region: "US".into(),
            settings: settings.into(),
            updated_at: 0,
        }
    }

    /// A phone row as the mirror holds it: no model, label, variables or
    /// credentials.
    pub fn phone_row(id: Id, tenant_id: Id, mac: Mac, family: Family) -> Phone {
        Phone {
            id,
            tenant_id,
            mac,
            family,
            model: None,
            label: None,
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            updated_at: 1,
        }
    }

    /// A directory entry with `numbers` as work numbers.
    pub fn entry(tenant: &str, id: &str, name: &str, numbers: &[&str]) -> Mutation {
        Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
            tenant: tenant.into(),
            external_id: id.into(),
            name: name.into(),
            company: None,
            numbers: work_numbers(numbers),
        })
    }

    /// `numbers` as a directory entry's work numbers.
    pub fn work_numbers<S: AsRef<str>>(numbers: &[S]) -> Vec<DirectoryNumber> {
        numbers
            .iter()
            .map(|n| DirectoryNumber {
                number: n.as_ref().into(),
                kind: "work".into(),
            })
            .collect()
    }

    /// A mirror holding `data`, as a full load from the database leaves it.
    pub fn mirror_of(data: Dataset) -> Arc<Mirror> {
        let mirror = Arc::new(Mirror::new());
        mirror.reset(
            data,
            Cursor::default(),
            Meta::default(),
            LoadedFrom::Database,
        );
        mirror
    }

    pub fn source(
        tenant: &str,
        name: &str,
        kind: SourceKind,
        settings: serde_json::Value,
        secret: Option<&str>,
        timeout_ms: i32,
    ) -> Mutation {
        Mutation::UpsertDirectorySource(DirectorySourceInput {
            tenant: tenant.into(),
            name: name.into(),
            kind,
            priority: 10,
            enabled: true,
            settings: settings.to_string(),
            secret: secret.map(Into::into),
            timeout_ms,
        })
    }

    pub fn audit(action: &str) -> Audit {
        Audit {
            tenant: None,
            actor: "test".into(),
            action: action.into(),
            entity: "test".into(),
            entity_key: String::new(),
            detail: serde_json::json!({}),
        }
    }
}

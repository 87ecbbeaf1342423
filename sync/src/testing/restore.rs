//! A test database dumped and restored with the server's own `pg_dump` and
//! `pg_restore` (`DIALTONE_TEST_PG_BIN`), as an operator would: whole, or a
//! section at a time to stop a restore half-way for certain.

use std::path::PathBuf;
use std::process::Command;

use sqlx::Connection;

use super::{pg_server_url, TestDb};

/// A custom-format dump, removed with its value.
pub struct Backup {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn pg_bin() -> PathBuf {
    PathBuf::from(std::env::var("DIALTONE_TEST_PG_BIN").unwrap_or_else(|_| {
        panic!("DIALTONE_TEST_PG_BIN is not set: run the tests through scripts/test")
    }))
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a PostgreSQL client tool");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestDb {
    /// `pg_dump --format=custom` of this PostgreSQL database.
    pub fn pg_dump(&self) -> Backup {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("backup.dump");
        run(Command::new(pg_bin().join("pg_dump"))
            .args(["--format=custom", "--file"])
            .arg(&path)
            .arg(&self.url));
        Backup { _dir: dir, path }
    }

    /// `pg_restore` of `backup` into this database, with `options`
    /// (`--section=…`, `--clean`, `--single-transaction`).
    pub fn pg_restore(&self, backup: &Backup, options: &[&str]) {
        run(Command::new(pg_bin().join("pg_restore"))
            .args(options)
            .arg("--dbname")
            .arg(&self.url)
            .arg(&backup.path));
    }

    /// Drops this database, ending every connection to it, and creates it
    /// again empty: the first step of a restore without `--clean`.
    pub async fn recreate(&self) {
        let name = self.url.rsplit_once('/').map_or("", |(_, name)| name);
        let mut server = sqlx::PgConnection::connect(&pg_server_url())
            .await
            .expect("connect to test PostgreSQL");
        for sql in [
            format!("DROP DATABASE {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(&sql)
                .execute(&mut server)
                .await
                .expect("recreate the test database");
        }
    }
}

//! TLS to PostgreSQL. The test server (scripts/lib/services.sh) has a
//! certificate for 127.0.0.1 from a throwaway CA (`DIALTONE_TEST_PG_CA`):
//! with `sslmode=verify-full` against that CA, `serve` connects and every
//! session it holds is encrypted; against another CA it is refused, saying
//! why. A URL that would let a session run in the clear to another host is
//! warned of.

mod common;

use std::path::Path;

use common::*;
use dialtone_sync::testing::TestDb;
use sqlx::Connection;

fn test_server_ca() -> String {
    std::env::var("DIALTONE_TEST_PG_CA").unwrap_or_else(|_| {
        panic!("DIALTONE_TEST_PG_CA is not set: run the tests through scripts/test, which starts PostgreSQL with TLS")
    })
}

fn verify_full(url: &str, ca: &str) -> String {
    format!("{url}?sslmode=verify-full&sslrootcert={ca}")
}

/// A CA that never signed the test server's certificate.
fn another_ca(dir: &Path) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    write_file(dir, "another-ca.crt", &ca.pem())
        .display()
        .to_string()
}

#[tokio::test]
async fn serve_verifies_the_server_and_its_sessions_are_encrypted() {
    let db = TestDb::postgres().await;
    let url = verify_full(&db.url, &test_server_ca());
    let dir = tempfile::tempdir().unwrap();
    let mut migrate = dialtone(dir.path(), &url);
    migrate.arg("migrate");
    let out = run(migrate);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let server = Server::start(dir.path(), &url, &[]);

    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("verify-full against the test server's CA");
    let own: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(own, "this test's own session is not encrypted");
    // Only this test's server uses this test's database.
    let (sessions, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(sessions > 0, "serve holds no session: {}", server.stderr());
    assert_eq!(encrypted, sessions, "serve's sessions in the clear");
    assert_eq!(server.stop(), 0);
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let url = verify_full(&db.url, &another_ca(dir.path()));
    let mut migrate = dialtone(dir.path(), &url);
    migrate.arg("migrate");
    let out = run(migrate);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot reach database") && err.contains("invalid peer certificate"),
        "{err}"
    );
}

#[test]
fn a_session_that_may_run_in_the_clear_to_another_host_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let check = |url: &str| {
        let mut cmd = dialtone(dir.path(), url);
        cmd.arg("check-config");
        let out = run(cmd);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{url}: {err}");
        err
    };
    let err = check("postgres://dialtone:hunter2@db.example.net/dialtone");
    assert!(
        err.contains("WARN")
            && err.contains("database.url: PostgreSQL at db.example.net with sslmode=prefer")
            && err.contains("sslmode=verify-full&sslrootcert="),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    for quiet in [
        "postgres://dialtone@db.example.net/dialtone?sslmode=verify-full&sslrootcert=/etc/dialtone/db-ca.crt",
        "postgres://dialtone@127.0.0.1/dialtone",
    ] {
        let err = check(quiet);
        assert!(!err.contains("database.url"), "{quiet}: {err}");
    }
}

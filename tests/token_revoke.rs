//! `dialtone token revoke` of no active token: the operator is told, and
//! the audit log does not say a token was revoked.

mod common;

use common::*;

fn revoke(dir: &std::path::Path, url: &str, id: &str) -> std::process::Output {
    let mut cmd = dialtone(dir, url);
    cmd.args(["token", "revoke", id]);
    run(cmd)
}

fn revoke_rows(url: &str) -> Vec<String> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(
            "SELECT entity_key FROM audit_log \
             WHERE entity = 'api_token' AND action = 'revoke' ORDER BY id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
    })
}

#[test]
fn revoking_no_active_token_fails_and_audits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "ops"],
    );

    let out = revoke(dir.path(), &url, "999");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no active token with id 999"), "{err}");
    assert!(revoke_rows(&url).is_empty(), "{:?}", revoke_rows(&url));

    let out = revoke(dir.path(), &url, "1");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("token 1 revoked"));

    let out = revoke(dir.path(), &url, "1");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no active token with id 1"), "{err}");
    assert_eq!(revoke_rows(&url), ["1"]);
}

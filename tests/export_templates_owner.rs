//! A phone's template in an export names the phone's tenant, and the
//! import writes it only onto a phone of that tenant: a phone moved to
//! another tenant since keeps no template of its old one. And a file with
//! templates is checked against the database as a dry run opens it: its
//! own errors are told first, and nothing is created or migrated (a
//! mistyped database URL stays a mistake, not a new database and key).

mod common;

use std::path::Path;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::Backend;

const MAC: &str = "001565000001";

fn dt(dir: &Path, url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = dialtone(dir, url);
    cmd.args(args);
    let out = run(cmd);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn ok(dir: &Path, url: &str, args: &[&str]) -> String {
    let (code, out, err) = dt(dir, url, args);
    assert_eq!(code, Some(0), "dialtone {args:?}: {err}");
    out
}

fn phone_template(tenant: &str, mac: &str) -> serde_json::Value {
    serde_json::json!({
        "scope": "phone", "family": "yealink", "tenant": tenant, "mac": mac,
        "file_pattern": "{mac}.cfg", "body": format!("#!version:1.0.0.1\n# {tenant}'s\n"),
    })
}

fn a_moved_phone_keeps_no_template_of_its_old_tenant(backend: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(backend));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    ok(path, &db.url, &["migrate"]);
    let seed = serde_json::json!({
        "tenants": [{"slug": "acme", "name": "Acme"}, {"slug": "beta", "name": "Beta"}],
        "phones": [{"tenant": "beta", "mac": MAC, "family": "yealink", "model": "T46S"}],
        "templates": [phone_template("beta", MAC)],
    });
    let seed = write_file(path, "seed.json", &seed.to_string());
    ok(path, &db.url, &["import", seed.to_str().unwrap()]);

    let exported = ok(
        path,
        &db.url,
        &["export", "--tenant", "beta", "--kind", "templates", "-"],
    );
    assert!(
        exported.contains(&format!(r#""tenant":"beta","mac":"{MAC}""#)),
        "{exported}"
    );
    let beta = write_file(path, "beta.json", &exported);

    // The move deletes the phone's templates: they were beta's.
    let moved = serde_json::json!({
        "phones": [{"tenant": "acme", "mac": MAC, "family": "yealink", "model": "T46S"}],
    });
    let moved = write_file(path, "moved.json", &moved.to_string());
    ok(path, &db.url, &["import", moved.to_str().unwrap()]);

    let (code, _, err) = dt(path, &db.url, &["import", beta.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("beta.json:3:1")
            && err.contains(&format!("phone {MAC} is not tenant \"beta\"'s")),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    let rows = rt.block_on(async { db.store().await.load_all().await.unwrap().0 });
    assert!(rows.templates.is_empty(), "{:?}", rows.templates);
}

#[test]
fn a_moved_phone_keeps_no_template_of_its_old_tenant_sqlite() {
    a_moved_phone_keeps_no_template_of_its_old_tenant(Backend::Sqlite);
}

#[test]
fn a_moved_phone_keeps_no_template_of_its_old_tenant_postgres() {
    a_moved_phone_keeps_no_template_of_its_old_tenant(Backend::Postgres);
}

fn templates_file(dir: &Path, mac: &str) -> String {
    let file = serde_json::json!({
        "tenants": [{"slug": "acme", "name": "Acme"}],
        "phones": [{"tenant": "acme", "mac": MAC, "family": "yealink"}],
        "templates": [phone_template("acme", mac)],
    });
    let file = write_file(dir, "templates.json", &file.to_string());
    file.to_str().unwrap().to_string()
}

/// `dialtone import FILE` with the key kept beside the database, as the
/// embedded SQLite default keeps it.
fn import_with_key_file(dir: &Path, url: &str, file: &str) -> (Option<i32>, String) {
    let mut cmd = dialtone(dir, url);
    cmd.env_remove("DIALTONE_SECRETS__KEY")
        .env("DIALTONE_DATABASE__AUTO_MIGRATE", "true")
        .args(["import", file]);
    let out = run(cmd);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn a_file_error_stops_the_run_before_any_database_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let typo = path.join("typo.db");
    let url = format!("sqlite://{}", typo.display());
    let created = || [typo.exists(), path.join("typo.key").exists()];

    // The file's own error is told, and the run stops there.
    let bad = templates_file(path, "not a mac");
    let (code, err) = import_with_key_file(path, &url, &bad);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("templates.json:") && err.contains("(templates[0] mac)"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(created(), [false, false], "{err}");
}

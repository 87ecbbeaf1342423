//! Bulk imports through the binary, on SQLite and PostgreSQL: invalid rows
//! located and nothing written, `--skip-invalid`, a re-import that changes
//! nothing, and `POST /v1/import` taking the same path, seen by a node.

mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::Backend;

/// Enough phones for the bulk path (`store/bulk.rs`).
const PHONES: u32 = 300;

fn import(
    dir: &std::path::Path,
    url: &str,
    args: &[&std::path::Path],
    extra: &[&str],
) -> (bool, String, String) {
    let mut cmd = dialtone(dir, url);
    cmd.arg("import").args(extra).args(args);
    let out = run(cmd);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn bulk_import_body(backend: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(backend));
    let dir = tempfile::tempdir().unwrap();
    let url = db.url.clone();
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);

    // One bad MAC and one unknown tenant among 300 phones: both located,
    // nothing written.
    let mut csv = phones_csv(1, PHONES);
    csv.push_str("acme,00:15:65:zz:00:09,yealink,T46S,1,109,Desk,pw,sip.example.net\n");
    let bad = write_file(dir.path(), "bad.csv", &csv);
    let (ok, _, err) = import(dir.path(), &url, &[&tenants, &bad], &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!("bad.csv:{}:2 (mac)", PHONES + 2)),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    let stranger = phones_csv(1, PHONES).replacen("\nacme,", "\nnobody,", 1);
    let stranger = write_file(dir.path(), "stranger.csv", &stranger);
    let (ok, _, err) = import(dir.path(), &url, &[&tenants, &stranger], &[]);
    assert!(!ok);
    assert!(
        err.contains("stranger.csv:2:1") && err.contains("unknown tenant \"nobody\""),
        "{err}"
    );
    // --skip-invalid writes the rest, in bulk.
    let (ok, out, err) = import(
        dir.path(),
        &url,
        &[&tenants, &stranger],
        &["--skip-invalid"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("phones +{} ~0 =0", PHONES - 1)),
        "{out}"
    );

    // The same file again changes nothing.
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(1, PHONES));
    let (ok, out, err) = import(dir.path(), &url, &[&tenants, &phones], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("phones +1 ~0 ="), "{out}");
    let (ok, out, err) = import(dir.path(), &url, &[&tenants, &phones], &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("phones +0 ~0 ={PHONES}"))
            && out.contains(&format!("lines +0 ~0 ={PHONES}")),
        "{out}"
    );

    // POST /v1/import goes through the same path; a node serves the result.
    let token = create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "t"],
    );
    let server = Server::start(dir.path(), &url, &[]);
    let changed = phones_csv(1, PHONES)
        .replace(",Desk 7,", ",Renamed 7,")
        .replace(",Desk 8,", ",Renamed 8,");
    let response = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
            .post(format!("http://{}/v1/import", server.addr))
            .bearer_auth(&token)
            .header("content-type", "text/csv")
            .body(changed)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let response: serde_json::Value = serde_json::from_str(&response).unwrap();
    let lines = &response["written"]["lines"];
    assert_eq!(
        (lines["updated"].as_u64(), lines["unchanged"].as_u64()),
        (Some(2), Some(PHONES as u64 - 2)),
        "{response}"
    );
    let file = "001565000007.cfg";
    let served = wait_until(Duration::from_secs(10), || {
        http_get(server.prov_addr, &format!("/{file}"))
            .is_some_and(|(_, body)| body.contains("Renamed 7"))
    });
    assert!(
        served.is_some(),
        "the node never served the imported change"
    );
    assert_eq!(server.stop(), 0);
}

#[test]
fn bulk_import_sqlite() {
    bulk_import_body(Backend::Sqlite);
}

#[test]
fn bulk_import_postgres() {
    bulk_import_body(Backend::Postgres);
}

//! Bulk imports through the binary, on SQLite and PostgreSQL: invalid rows
//! located and nothing written, `--skip-invalid`, a re-import that changes
//! nothing, dry runs that count and refuse as the import does and write
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
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(1, PHONES));
    // A dry run migrates nothing: the schema comes first.
    let mut migrate = dialtone(dir.path(), &url);
    migrate.arg("migrate");
    let out = run(migrate);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A dry run is the import rolled back: its counts are the import's,
    // and the tenants it would create are gone again after it.
    let (ok, out, err) = import(dir.path(), &url, &[&tenants, &phones], &["--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("would import: ")
            && out.contains(&format!("phones +{PHONES} ~0 =0"))
            && out.contains("nothing written (dry run)"),
        "{out}"
    );
    let (ok, _, err) = import(dir.path(), &url, &[&phones], &["--dry-run"]);
    assert!(!ok, "the dry run's tenants were kept");
    assert!(
        err.contains("phones.csv:2:1") && err.contains("unknown tenant \"acme\""),
        "{err}"
    );

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
    // A changed line, rehearsed: counted, and still there to import after.
    let renamed = write_file(
        dir.path(),
        "renamed.csv",
        &phones_csv(1, PHONES).replace(",Desk 9,", ",Renamed 9,"),
    );
    for (extra, verb) in [(&["--dry-run"][..], "would import"), (&[][..], "imported")] {
        let (ok, out, err) = import(dir.path(), &url, &[&renamed], extra);
        assert!(ok, "{err}");
        assert!(
            out.starts_with(verb) && out.contains(&format!("lines +0 ~1 ={}", PHONES - 1)),
            "{out}"
        );
    }

    // POST /v1/import goes through the same path; a node serves the result.
    let token = create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "t"],
    );
    let server = Server::start(dir.path(), &url, &[]);
    let changed = phones_csv(1, PHONES)
        .replace(",Desk 7,", ",Renamed 7,")
        .replace(",Desk 8,", ",Renamed 8,")
        .replace(",Desk 9,", ",Renamed 9,");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let post = |query: &str, body: String| -> serde_json::Value {
        let text = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("http://{}/v1/import{query}", server.addr))
                .bearer_auth(&token)
                .header("content-type", "text/csv")
                .body(body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        serde_json::from_str(&text).unwrap()
    };
    // The API's dry run counts as the import does, and writes nothing: the
    // import after it finds the same two lines to change.
    for (query, dry_run) in [("?dry_run=true", true), ("", false)] {
        let response = post(query, changed.clone());
        let lines = &response["written"]["lines"];
        assert_eq!(
            (
                response["dry_run"].as_bool(),
                lines["updated"].as_u64(),
                lines["unchanged"].as_u64()
            ),
            (Some(dry_run), Some(2), Some(PHONES as u64 - 2)),
            "{response}"
        );
    }
    let response = post(
        "?dry_run=true",
        phones_csv(1, 1).replacen("\nacme,", "\nnobody,", 1),
    );
    assert!(
        response.to_string().contains("unknown tenant"),
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

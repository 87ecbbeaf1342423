//! A template's versions: the list is paged newest first and carries no
//! bodies, a version is read by its number, and a diff reads its two.
//! A family or model template keeps every version, and each of these
//! requests read every body it had: tens of megabytes per request.

use axum::http::StatusCode;
use dialtone_sync::store::StoreOptions;
use dialtone_sync::testing::{test_key, Relay, TestDb};
use dialtone_sync::{Backend, TemplateScope};
use serde_json::Value;

use super::{seed_audit, template, Harness};

const FAMILY_FILE: &str = "y0000000000{code}.cfg";

/// Saves the family template again until it has `count` versions, each
/// body `padding` bytes long or more and unlike the others.
async fn save_family_versions(h: &Harness, count: i64, padding: usize) {
    let filler = "#".repeat(padding);
    for n in 2..=count {
        let body = format!("#!version:1.0.0.1\n# family v{n}\n{filler}\n");
        h.store
            .apply(
                &[template(TemplateScope::Family, "", FAMILY_FILE, &body)],
                &seed_audit(),
            )
            .await
            .unwrap();
    }
}

fn numbers(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {page}"))
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect()
}

async fn pages_newest_first_without_bodies(backend: Backend) {
    let h = Harness::new(backend).await;
    save_family_versions(&h, 7, 0).await;
    let path = "/v1/templates/{family_template}/versions";

    let first = h.get("global", &format!("{path}?limit=3")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let first = first.json();
    assert_eq!(numbers(&first), [7, 6, 5]);
    assert_eq!(first["next"], 5);
    let second = h
        .get("global", &format!("{path}?limit=3&before=5"))
        .await
        .json();
    assert_eq!(numbers(&second), [4, 3, 2]);
    let last = h
        .get("global", &format!("{path}?limit=3&before=2"))
        .await
        .json();
    assert_eq!(numbers(&last), [1]);
    assert!(last["next"].is_null(), "{last}");
    let whole = h.get("global", path).await.json();
    assert_eq!(numbers(&whole), [7, 6, 5, 4, 3, 2, 1]);
    assert!(whole["next"].is_null(), "{whole}");

    // What the list says of a version is what that version's body gives.
    for listed in whole["items"].as_array().unwrap() {
        assert!(listed["body"].is_null(), "a listed body: {listed}");
        let one = h
            .get("global", &format!("{path}/{}", listed["version"]))
            .await
            .json();
        let body = one["body"].as_str().unwrap();
        assert_eq!(listed["bytes"], body.len(), "{listed}");
        assert_eq!(listed["digest"], one["digest"], "{listed}");
    }
    let unknown = h.get("global", &format!("{path}/99")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);

    let diff = h
        .get("global", "/v1/templates/{family_template}/diff?from=2&to=6")
        .await
        .json();
    let diff = diff["diff"].as_str().unwrap();
    assert!(
        diff.contains("-# family v2") && diff.contains("+# family v6"),
        "{diff}"
    );
    let missing = h
        .get("global", "/v1/templates/{family_template}/diff?from=99")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_paged_newest_first_without_bodies_sqlite() {
    pages_newest_first_without_bodies(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_paged_newest_first_without_bodies_postgres() {
    pages_newest_first_without_bodies(Backend::Postgres).await;
}

/// Counted on the wire: listing 40 versions of 100 KiB each reads none
/// of their bodies from PostgreSQL, and one version reads its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_versions_reads_no_bodies_from_postgres() {
    const BODY: usize = 100 * 1024;
    let db = TestDb::new(Backend::Postgres).await;
    let (relay, through) = Relay::to(&db.url).await;
    let options = StoreOptions::default();
    let store = dialtone_sync::store::open(&through, test_key(), &options)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let h = Harness::over(db, store, &options).await;
    save_family_versions(&h, 40, BODY).await;
    let path = "/v1/templates/{family_template}/versions";

    let before = relay.bytes_from_server();
    let list = h.get("global", path).await;
    let listed = relay.bytes_from_server() - before;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(numbers(&list.json()).len(), 40);
    assert!(
        listed < BODY as u64,
        "listing 40 versions read {listed} bytes from the database"
    );

    let before = relay.bytes_from_server();
    let one = h.get("global", &format!("{path}/20")).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    let read = relay.bytes_from_server() - before;
    assert!(
        (BODY as u64..2 * BODY as u64).contains(&read),
        "one version read {read} bytes"
    );
}

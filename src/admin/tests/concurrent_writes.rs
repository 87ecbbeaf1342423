//! Writes that meet other writes: an edit from a node whose mirror lags
//! must not put back what it carries over, concurrent imports and
//! template edits must not fail on each other, and `If-Match` is read as
//! RFC 9110 says.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use dialtone_sync::store::TenantInput;
use dialtone_sync::{phone_etag, watcher, Audit, Backend, Mac, Mirror, Mutation, Purpose};
use serde_json::json;
use tower::ServiceExt;

use super::{phone, Harness, ACME_MAC};

fn elsewhere() -> Audit {
    Audit {
        actor: "global elsewhere".into(),
        tenant: None,
        action: "update".into(),
        entity: "phone".into(),
        entity_key: ACME_MAC.into(),
        detail: json!({}),
    }
}

/// What the database holds now, as a node that has caught up reads it.
async fn caught_up(h: &Harness) -> Mirror {
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*h.store).await.unwrap();
    mirror
}

/// The acme phone's tag and its first line's password, as stored.
async fn stored_phone(h: &Harness) -> (String, String) {
    let mirror = caught_up(h).await;
    let state = mirror.load();
    let mac: Mac = ACME_MAC.parse().unwrap();
    let phone = state.phone_by_mac(&mac).unwrap();
    let lines = state.lines_of(phone.id);
    let first = lines.iter().find(|l| l.position == 1).unwrap();
    let password = h
        .state
        .key
        .open(Purpose::LinePassword, first.password.as_ref().unwrap())
        .unwrap();
    (phone_etag(phone, &lines), password)
}

/// A label-only edit of the acme phone as the global admin: no secrets.
async fn put_label(h: &Harness, headers: &[(&str, &str)]) -> super::Reply {
    let path = format!("/v1/phones/{ACME_MAC}");
    h.call(
        Some("global"),
        Method::PUT,
        &path,
        Some(LABEL_ONLY),
        headers,
    )
    .await
}

const LABEL_ONLY: &str = r#"{"tenant": "acme", "family": "yealink", "label": "relabelled",
    "lines": [{"extension": "201", "display_name": "One", "registrar": "sip.example.net"},
              {"extension": "202", "display_name": "Two", "registrar": "sip.example.net"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_edit_from_a_lagging_node_keeps_a_rotated_password() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        // Another node rotates the line's password: in the database, not
        // yet in this harness's mirror.
        h.store
            .apply(
                &[phone(
                    "acme",
                    ACME_MAC,
                    &["rotated-Xq9", "sip-acme-2-Xq9"],
                    None,
                )],
                &elsewhere(),
            )
            .await
            .unwrap();
        let (current, _) = stored_phone(&h).await;
        let reply = put_label(&h, &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "{backend:?}: {}",
            reply.text
        );
        assert!(reply.text.contains("retry"), "{}", reply.text);
        // A tag read from a node that has caught up matches the database,
        // but this node would write its older password back.
        let reply = put_label(&h, &[("if-match", &current)]).await;
        assert_eq!(
            reply.status,
            StatusCode::PRECONDITION_FAILED,
            "{backend:?}: {}",
            reply.text
        );
        assert!(reply.text.contains("retry"), "{}", reply.text);
        assert_eq!(stored_phone(&h).await, (current, "rotated-Xq9".into()));
        // Caught up, the same edit goes through and keeps the new password.
        watcher::catch_up(&h.mirror, &*h.store).await.unwrap();
        let reply = put_label(&h, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{backend:?}: {}", reply.text);
        assert_eq!(stored_phone(&h).await.1, "rotated-Xq9");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_edit_from_a_lagging_node_keeps_new_tenant_settings() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        let changed = TenantInput {
            slug: "acme".into(),
            name: "acme Inc".into(),
            default_region: "US".into(),
            settings: r#"{"sip_domains": ["new.example.net"], "quotas": {"phones": 7}}"#.into(),
        };
        h.store
            .apply(&[Mutation::UpsertTenant(changed)], &elsewhere())
            .await
            .unwrap();
        let mirror = caught_up(&h).await;
        let current = dialtone_sync::etag_of(&**mirror.load().tenant_by_slug("acme").unwrap());
        let edit = r#"{"name": "Acme Renamed"}"#;
        let reply = h
            .call(
                Some("global"),
                Method::PUT,
                "/v1/tenants/acme",
                Some(edit),
                &[],
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "{backend:?}: {}",
            reply.text
        );
        let reply = h
            .call(
                Some("global"),
                Method::PUT,
                "/v1/tenants/acme",
                Some(edit),
                &[("if-match", &current)],
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::PRECONDITION_FAILED,
            "{backend:?}: {}",
            reply.text
        );
        let state = caught_up(&h).await.load();
        let stored = state.tenant_by_slug("acme").unwrap();
        assert!(
            stored.settings.contains("new.example.net"),
            "{}",
            stored.settings
        );
        assert!(
            stored.settings.contains(r#""phones": 7"#),
            "{}",
            stored.settings
        );
    }
}

/// An import document of `count` phones of acme, in MAC order or reversed.
fn import_document(count: u32, reversed: bool, round: u32) -> String {
    let mut phones: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            json!({
                "tenant": "acme", "mac": format!("00156a{i:06x}"), "family": "yealink",
                "label": format!("round {round}"),
                "lines": [{"extension": format!("{}", 3000 + i), "display_name": "Bulk",
                           "registrar": "sip.example.net", "password": "bulk-pass"}],
            })
        })
        .collect();
    if reversed {
        phones.reverse();
    }
    json!({ "phones": phones }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imports_of_the_same_phones_in_opposite_orders_do_not_deadlock() {
    let h = Harness::new(Backend::Postgres).await;
    // Stored first: this is about rows that exist, which each import
    // locks in turn. Under the bulk threshold, so each phone is written on
    // its own.
    let reply = h
        .call(
            Some("global"),
            Method::POST,
            "/v1/import",
            Some(&import_document(150, false, 0)),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    for round in 1..5 {
        let documents: Vec<String> = (0..4)
            .map(|n| import_document(150, n % 2 == 1, round))
            .collect();
        let replies = futures::future::join_all(documents.iter().map(|document| {
            h.call(
                Some("global"),
                Method::POST,
                "/v1/import",
                Some(document),
                &[],
            )
        }))
        .await;
        for reply in replies {
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "round {round}: {}",
                reply.text
            );
        }
    }
}

#[tokio::test]
async fn a_transaction_given_up_for_another_is_busy_with_a_retry_after() {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&dialtone_sync::testing::pg_server_url())
        .await
        .unwrap();
    for code in ["40P01", "40001"] {
        let raise =
            format!("DO $$ BEGIN RAISE EXCEPTION 'given up' USING ERRCODE = '{code}'; END $$");
        let e = sqlx::query(&raise).execute(&mut conn).await.unwrap_err();
        let error = crate::admin::error::ApiError::from(dialtone_sync::SyncError::Database(e));
        assert_eq!(
            (error.status, error.code),
            (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            "{code}"
        );
        let response = axum::response::IntoResponse::into_response(error);
        assert_eq!(response.headers()["retry-after"], "1", "{code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_template_edits_without_if_match_all_pass() {
    let h = Harness::new(Backend::Postgres).await;
    let path = "/v1/templates/{acme_template}";
    for round in 0..10 {
        let bodies: Vec<String> = (0..6)
            .map(|n| format!(r##"{{"body": "# round {round} edit {n}\n"}}"##))
            .collect();
        let replies = futures::future::join_all(
            bodies
                .iter()
                .map(|body| h.call(Some("global"), Method::PUT, path, Some(body), &[])),
        )
        .await;
        for reply in replies {
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "round {round}: {}",
                reply.text
            );
        }
    }
}

/// `PUT /v1/phones/{ACME_MAC}` as the global admin, with `if_match` as raw bytes.
async fn put_with_if_match(h: &Harness, if_match: &[u8]) -> StatusCode {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/phones/{ACME_MAC}"))
        .header("authorization", format!("Bearer {}", h.tokens["global"]))
        .header("content-type", "application/json")
        .header("if-match", HeaderValue::from_bytes(if_match).unwrap())
        .body(Body::from(LABEL_ONLY))
        .unwrap();
    h.app.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_is_read_as_rfc_9110_says() {
    let h = Harness::new(Backend::Sqlite).await;
    let current = h
        .get("global", &format!("/v1/phones/{ACME_MAC}"))
        .await
        .etag();
    // A stale tag with a byte past ASCII is not "no If-Match".
    let garbled = b"\"0123456789ab\xe9\"";
    assert_eq!(
        put_with_if_match(&h, garbled).await,
        StatusCode::BAD_REQUEST
    );
    // Weak tags never match, even the current one.
    let weak = format!("W/{current}");
    assert_eq!(
        put_with_if_match(&h, weak.as_bytes()).await,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(stored_phone(&h).await.0, current, "nothing was written");
    // A list matches when any of its tags does.
    let list = format!("\"0123456789abcdef01234567\", {current}");
    assert_eq!(put_with_if_match(&h, list.as_bytes()).await, StatusCode::OK);
    let stale_list = format!("\"0123456789abcdef01234567\", W/{current}");
    assert_eq!(
        put_with_if_match(&h, stale_list.as_bytes()).await,
        StatusCode::PRECONDITION_FAILED
    );
    // An empty header (a client that always sends one) is not "any".
    let before = stored_phone(&h).await.0;
    for empty in [&b""[..], b" , ", b","] {
        assert_eq!(
            put_with_if_match(&h, empty).await,
            StatusCode::BAD_REQUEST,
            "{:?}",
            String::from_utf8_lossy(empty)
        );
    }
    assert_eq!(stored_phone(&h).await.0, before, "nothing was written");
}

//! A body, query or path the API cannot read is refused with a reason a
//! client can act on: no Rust type names, no echo of a long value, and a
//! list is not taken for an object's fields in order.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::{Harness, ACME_MAC};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_an_object_is_refused_and_nothing_is_made() {
    let h = Harness::new(Backend::Sqlite).await;
    for body in [r#"["positional","Name",null,null]"#, " 5", "\"text\""] {
        let reply = h
            .call(Some("global"), Method::POST, "/v1/tenants", Some(body), &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text
        );
        assert!(
            reply.text.contains("must be a JSON object"),
            "{}",
            reply.text
        );
    }
    let tenant = h.get("global", "/v1/tenants/positional").await;
    assert_eq!(tenant.status, StatusCode::NOT_FOUND, "{}", tenant.text);
    // Bodies a route may leave empty are held to the same rule.
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/resync",
            Some("[[\"001565000001\"]]"),
            &[],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(
        reply.text.contains("must be a JSON object"),
        "{}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misread_body_names_the_field_in_the_clients_terms() {
    let h = Harness::new(Backend::Sqlite).await;
    let path = format!("/v1/phones/{ACME_MAC}");
    let long = "A".repeat(60_000);
    let cases = [
        (
            r#"{"tenant": "acme", "family": "yealink", "lines": [5]}"#.to_string(),
            "lines[0]: invalid type: integer `5`, expected an object",
        ),
        (
            r#"{"tenant": "acme", "family": "yealink", "lines": 5}"#.to_string(),
            "lines: invalid type: integer `5`, expected a list",
        ),
        (
            format!(r#"{{"tenant": "acme", "family": "yealink", "lines": "{long}"}}"#),
            "(60000 characters), expected a list",
        ),
        (
            format!(r#"{{"tenant": "acme", "family": "yealink", "lines": [], "{long}": 1}}"#),
            "(60000 characters): unknown field `AAA",
        ),
        (
            format!(r#"{{"tenant": "acme", "family": "{long}", "lines": []}}"#),
            r#"unknown family \"AAA"#,
        ),
    ];
    for (body, wanted) in cases {
        let reply = h
            .call(Some("acme-admin"), Method::PUT, &path, Some(&body), &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.text
        );
        assert!(reply.text.contains(wanted), "{wanted}: {}", reply.text);
        assert!(reply.text.len() < 1_000, "{} bytes", reply.text.len());
        for rust in ["struct", "Family", "LineBody", "Failed to deserialize"] {
            assert!(!reply.text.contains(rust), "{rust}: {}", reply.text);
        }
    }
}

/// Every list reads `limit` alike: a negative one is refused with the
/// reason, as `/v1/phones` did and `/v1/audit` did not (it read -1 as 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_limit_is_refused_alike_on_every_list() {
    let h = Harness::new(Backend::Sqlite).await;
    for list in [
        "/v1/phones",
        "/v1/audit",
        "/v1/templates",
        "/v1/tenants/acme/directory",
    ] {
        let reply = h.get("acme-admin", &format!("{list}?limit=-1")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{list}: {}",
            reply.text
        );
        assert!(
            reply.text.contains("limit: expected a whole number"),
            "{list}: {}",
            reply.text
        );
    }
}

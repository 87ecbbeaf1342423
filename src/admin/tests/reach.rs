//! `GET /v1/templates/{id}/phones`: the phones a change to a template
//! reaches, which is what "resync affected phones" tells.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;
use serde_json::Value;

use super::{Harness, ACME_MAC, GLOBEX_MAC};

fn macs(reply: &Value) -> Vec<String> {
    let mut macs: Vec<String> = reply["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["mac"].as_str().unwrap().to_string())
        .collect();
    macs.sort();
    macs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_reaches_the_phones_that_resolve_to_it_and_no_others() {
    let h = Harness::new(Backend::Sqlite).await;
    let reached = h
        .get("global", "/v1/templates/{acme_template}/phones")
        .await;
    assert_eq!(reached.status, StatusCode::OK, "{}", reached.text);
    assert_eq!(macs(&reached.json()), [ACME_MAC]);

    // A second acme phone, then a template of its own that overrides the
    // tenant's for it: the tenant template no longer reaches it.
    let created = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/phones",
            Some(r#"{"mac": "001565000009", "tenant": "acme", "family": "yealink", "model": "T46S", "lines": [{"extension": "209", "display_name": "New", "registrar": "sip.example.net", "password": "new-pw"}]}"#),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let both = h
        .get("acme-admin", "/v1/templates/{acme_template}/phones")
        .await;
    assert_eq!(macs(&both.json()), [ACME_MAC, "001565000009"]);
    let own = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/templates",
            Some(r##"{"scope": "phone", "mac": "001565000009", "family": "yealink", "file_pattern": "{mac}.cfg", "body": "#!version:1.0.0.1\n# its own\n"}"##),
            &[],
        )
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.text);
    let own_id = own.json()["id"].as_i64().unwrap();
    let tenant = h
        .get("acme-admin", "/v1/templates/{acme_template}/phones")
        .await;
    assert_eq!(macs(&tenant.json()), [ACME_MAC]);
    let phone = h
        .get("acme-admin", &format!("/v1/templates/{own_id}/phones"))
        .await;
    assert_eq!(macs(&phone.json()), ["001565000009"]);

    // The family template reaches every tenant's T46S: global admins only.
    let family = h
        .get("global", "/v1/templates/{family_template}/phones")
        .await;
    assert_eq!(macs(&family.json()), [ACME_MAC, GLOBEX_MAC, "001565000009"]);
    let hidden = h
        .get("acme-admin", "/v1/templates/{family_template}/phones")
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    // Another tenant's template is not there at all for acme.
    let other = h
        .get("acme-admin", "/v1/templates/{globex_template}/phones")
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    let limited = h
        .get("global", "/v1/templates/{family_template}/phones?limit=2")
        .await;
    assert_eq!(limited.json()["phones"].as_array().unwrap().len(), 2);
    assert_eq!(limited.json()["truncated"], true);
    let bad = h
        .get("global", "/v1/templates/{family_template}/phones?limit=0")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
}

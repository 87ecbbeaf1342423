//! A phone's text fields are bounded (every node holds every phone), and
//! its model, which names files, is a plain name.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::{Harness, ACME_MAC};

fn body(model: &str, label: &str, display_name: &str) -> String {
    serde_json::json!({
        "tenant": "acme", "family": "yealink", "model": model, "label": label,
        "lines": [{"extension": "200", "display_name": display_name, "registrar": "sip.example.net"}],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_fields_and_path_like_models_are_refused() {
    let h = Harness::new(Backend::Sqlite).await;
    let path = format!("/v1/phones/{ACME_MAC}");
    let refused = [
        body("T46S", &"x".repeat(257), "Front"),
        body("T46S", "Desk", &"y".repeat(10_000)),
        body("/etc/cron.d/x", "Desk", "Front"),
        body("../T46S", "Desk", "Front"),
        body(".hidden", "Desk", "Front"),
    ];
    for refused in refused {
        let reply = h
            .call(Some("acme-admin"), Method::PUT, &path, Some(&refused), &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.text
        );
        assert!(
            reply.text.contains("256 bytes") || reply.text.contains("model:"),
            "{}",
            reply.text
        );
    }
    assert!(!h.get("acme-admin", &path).await.text.contains("cron"));
    // At the bound, and a model with a space (Poly's "VVX 450"), are fine.
    let fine = body("VVX 450", &"x".repeat(256), "Front");
    let reply = h
        .call(Some("acme-admin"), Method::PUT, &path, Some(&fine), &[])
        .await;
    assert!(
        reply.status.is_success(),
        "{}: {}",
        reply.status,
        reply.text
    );
}

/// A phone a global admin moves to another tenant, without naming its
/// passwords, arrives without the old tenant's secrets; an edit within
/// the tenant keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_phone_leaves_its_secrets_behind() {
    let h = Harness::new(Backend::Sqlite).await;
    let path = format!("/v1/phones/{ACME_MAC}");
    let moved = |tenant: &str| {
        serde_json::json!({
            "tenant": tenant, "family": "yealink", "model": "T46S",
            "lines": [{"extension": "200", "display_name": "Front", "registrar": "sip.example.net"}],
        })
        .to_string()
    };
    let has_password = |text: &str| {
        let view: serde_json::Value = serde_json::from_str(text).unwrap();
        view["lines"][0]["has_password"].as_bool().unwrap()
    };
    let kept = h
        .call(
            Some("global"),
            Method::PUT,
            &path,
            Some(&moved("acme")),
            &[],
        )
        .await;
    assert!(kept.status.is_success(), "{}", kept.text);
    assert!(
        has_password(&kept.text),
        "an edit in place kept the password: {}",
        kept.text
    );
    let reply = h
        .call(
            Some("global"),
            Method::PUT,
            &path,
            Some(&moved("globex")),
            &[],
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    assert!(!has_password(&reply.text), "{}", reply.text);
}

/// A node whose mirror lags has not seen a phone move to another tenant:
/// the old tenant's edit or delete is refused (409), not applied to the
/// phone that is now the other tenant's; nor is a template for it, which
/// would render the new owner's line passwords.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_write_a_phone_that_moved_while_its_node_lagged() {
    let h = Harness::new(Backend::Sqlite).await;
    let path = format!("/v1/phones/{ACME_MAC}");
    // Moved to globex straight in the database: this harness's mirror only
    // catches up on its own writes, so it still shows the phone as acme's.
    let audit = dialtone_sync::Audit {
        actor: "elsewhere".into(),
        tenant: None,
        action: "update".into(),
        entity: "phone".into(),
        entity_key: ACME_MAC.into(),
        detail: serde_json::json!({}),
    };
    h.store
        .apply(
            &[super::phone("globex", ACME_MAC, &["sip-globex-Xq9"], None)],
            &audit,
        )
        .await
        .unwrap();
    let edit = body("T46S", "Taken back", "Front");
    let reply = h
        .call(Some("acme-admin"), Method::PUT, &path, Some(&edit), &[])
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    let reply = h
        .call(Some("acme-admin"), Method::DELETE, &path, None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    let steal = format!(
        r#"{{"scope": "phone", "mac": "{ACME_MAC}", "family": "yealink", "file_pattern": "{{mac}}.cfg", "body": "{{{{ lines }}}}\n"}}"#
    );
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/templates",
            Some(&steal),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    // globex still has it, as it was, once the node has caught up.
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    let stored = h.get("globex-admin", &path).await;
    assert!(stored.status.is_success(), "{}", stored.text);
    assert!(!stored.text.contains("Taken back"), "{}", stored.text);
    let templates = h.get("globex-admin", "/v1/templates?scope=phone").await;
    assert!(templates.status.is_success(), "{}", templates.text);
    assert!(!templates.text.contains(ACME_MAC), "{}", templates.text);
}

/// A phone moved to another tenant shows in both tenants' audit views:
/// the tenant it left sees that it left, and nothing of where it went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_phone_shows_in_the_audit_of_the_tenant_it_left() {
    let h = Harness::new(Backend::Sqlite).await;
    let path = format!("/v1/phones/{ACME_MAC}");
    let moved = serde_json::json!({
        "tenant": "globex", "family": "yealink", "model": "T46S", "label": "Globex lobby",
        "lines": [{"extension": "200", "display_name": "Front", "registrar": "sip.example.net"}],
    })
    .to_string();
    let reply = h
        .call(Some("global"), Method::PUT, &path, Some(&moved), &[])
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let rows = |token: &'static str| {
        let h = &h;
        async move {
            let reply = h.get(token, "/v1/audit").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            let rows: serde_json::Value = serde_json::from_str(&reply.text).unwrap();
            rows["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|row| row["entity_key"] == ACME_MAC)
                .cloned()
                .collect::<Vec<_>>()
        }
    };
    let acme = rows("acme-admin").await;
    assert_eq!(acme.len(), 1, "{acme:?}");
    assert_eq!(acme[0]["action"], "move_out");
    let shown = acme[0].to_string();
    assert!(
        !shown.contains("globex") && !shown.contains("Globex"),
        "{shown}"
    );
    let globex = rows("globex-admin").await;
    assert!(
        globex.iter().any(|row| row["action"] == "update"),
        "{globex:?}"
    );
}

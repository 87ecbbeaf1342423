//! What names a phone, a line, a template's model and a directory entry:
//! a write that could never be provisioned, registered or kept apart is
//! refused with the field at fault.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;
use serde_json::json;

use super::{Harness, Reply};

async fn post(h: &Harness, role: &str, path: &str, body: serde_json::Value) -> Reply {
    let body = body.to_string();
    h.call(Some(role), Method::POST, path, Some(&body), &[])
        .await
}

fn refused_naming(reply: &Reply, field: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains(field), "{field}: {}", reply.text);
}

fn model_template(model: &str, body: &str) -> serde_json::Value {
    json!({ "scope": "model", "model": model, "family": "yealink",
        "file_pattern": "y0000000000{code}.cfg", "body": body })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_template_applies_whatever_the_case_and_only_once() {
    let h = Harness::new(Backend::Sqlite).await;
    let saved = post(
        &h,
        "global",
        "/v1/templates",
        model_template("t46s", "#!version:1.0.0.1\n# for every t46s\n"),
    )
    .await;
    assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.text);
    // y000000000066.cfg is the T46S's common file.
    let served = String::from_utf8(h.served("y000000000066.cfg")).unwrap();
    assert!(served.contains("# for every t46s"), "{served}");

    let again = post(
        &h,
        "global",
        "/v1/templates",
        model_template("T46S", "#!version:1.0.0.1\n# shadowed\n"),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert!(again.text.contains("t46s"), "{}", again.text);

    for model in [" T46S", "T46S/../x\nA"] {
        let reply = post(&h, "global", "/v1/templates", model_template(model, "#\n")).await;
        refused_naming(&reply, "model");
    }
    // In mixed case it would apply only to phones recorded in that very
    // spelling: refused, saying which spelling to write.
    let mixed = post(&h, "global", "/v1/templates", model_template("T54w", "#\n")).await;
    refused_naming(&mixed, "model");
    assert!(mixed.text.contains("T54W"), "{}", mixed.text);
    assert!(!mixed.text.contains("  "), "{}", mixed.text);
    // A check of the new key says the same as its create.
    let check = post(
        &h,
        "global",
        "/v1/templates/validate",
        model_template("T54w", "#\n"),
    )
    .await;
    refused_naming(&check, "model");
    // One stored before this was refused is still checked as it is edited
    // (the admin page checks the stored key's fields).
    h.store
        .apply(
            &[dialtone_sync::Mutation::UpsertTemplate(
                dialtone_sync::store::TemplateInput {
                    scope: dialtone_sync::TemplateScope::Model,
                    family: dialtone_sync::Family::Yealink,
                    scope_key: "T54w".into(),
                    file_pattern: "y0000000000{code}.cfg".into(),
                    body: "#\n".into(),
                    updated_by: "ops".into(),
                    keep_versions: None,
                },
            )],
            &super::seed_audit(),
        )
        .await
        .unwrap();
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    let stored = post(
        &h,
        "global",
        "/v1/templates/validate",
        model_template("T54w", "#\n"),
    )
    .await;
    assert!(!stored.text.contains("mixed case"), "{}", stored.text);
}

fn phone(mac: &str, extension: &str, auth_user: Option<&str>) -> serde_json::Value {
    let mut line = json!({ "extension": extension, "display_name": "One",
        "registrar": "sip.example.net" });
    if let Some(user) = auth_user {
        line["auth_user"] = json!(user);
    }
    json!({ "mac": mac, "tenant": "acme", "family": "yealink", "lines": [line] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_phone_needs_a_mac_a_phone_can_have() {
    let h = Harness::new(Backend::Sqlite).await;
    for mac in ["000000000000", "ffffffffffff", "01005e000001"] {
        let reply = post(&h, "acme-admin", "/v1/phones", phone(mac, "201", None)).await;
        refused_naming(&reply, "mac");
    }
    for mac in [
        "001565000010",
        "00:15:65:00:00:11",
        "00-15-65-00-00-12",
        "0015.6500.0013",
        // Spreadsheets' shapes, read as they always were.
        "0015-6500-0014",
        "001565-000015",
    ] {
        let reply = post(&h, "acme-admin", "/v1/phones", phone(mac, "201", None)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{mac}: {}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_user_holds_nothing_that_breaks_registration() {
    let h = Harness::new(Backend::Sqlite).await;
    let injected = "201\nstatic.auto_provision.server.url = http://x/";
    let reply = post(
        &h,
        "acme-admin",
        "/v1/phones",
        phone("001565000020", injected, None),
    )
    .await;
    refused_naming(&reply, "extension");
    for extension in ["2 01", "201@x", "201:x", "<201>"] {
        let body = phone("001565000023", extension, None);
        refused_naming(
            &post(&h, "acme-admin", "/v1/phones", body).await,
            "extension",
        );
    }
    for user in ["a b", "201\n"] {
        let body = phone("001565000021", "201", Some(user));
        refused_naming(
            &post(&h, "acme-admin", "/v1/phones", body).await,
            "auth_user",
        );
    }
    // What phones and platforms use: feature codes, E.164, a bare '#',
    // and Digest names of the user@domain form.
    for (mac, extension, user) in [
        ("001565000022", "+1-201_a.b!~*'()&=+$,;?/%2F", "201"),
        ("001565000024", "*97#", "201@sip.example.net"),
        ("001565000025", "+15551234567", "alice.smith"),
    ] {
        let reply = post(
            &h,
            "acme-admin",
            "/v1/phones",
            phone(mac, extension, Some(user)),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{extension}: {}",
            reply.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_entry_key_prefix_is_not_for_hand_written_ids() {
    let h = Harness::new(Backend::Sqlite).await;
    let entry = |id: &str| {
        json!({ "external_id": id, "name": "Alice",
            "numbers": [{ "number": "+1 555 555 0142", "kind": "work" }] })
    };
    let path = "/v1/tenants/acme/directory";
    let reply = post(&h, "acme-admin", path, entry("name:alice")).await;
    refused_naming(&reply, "reserved for entries imported without an id");
    let reply = post(&h, "acme-admin", path, entry("alice")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

/// A line's display name defaults to its extension, as in an import (and
/// as its auth user does): the documented default, not a 422 for a
/// missing field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_without_a_display_name_shows_its_extension() {
    let h = Harness::new(Backend::Sqlite).await;
    for (mac, name) in [("001565000030", None), ("001565000031", Some(" "))] {
        let mut line = json!({ "extension": "204", "registrar": "sip.example.net" });
        if let Some(name) = name {
            line["display_name"] = json!(name);
        }
        let body = json!({ "mac": mac, "tenant": "acme", "family": "yealink", "lines": [line] });
        let reply = post(&h, "acme-admin", "/v1/phones", body).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{name:?}: {}",
            reply.text
        );
        let created: serde_json::Value = serde_json::from_str(&reply.text).unwrap();
        assert_eq!(created["lines"][0]["display_name"], "204", "{}", reply.text);
    }
}

/// An entry an import keyed by its name keeps that key: a new name would
/// leave it under the old one, which its export writes as an id no import
/// takes, so one tenant's rename stopped a restore of every tenant. Its
/// name may change in case, which keeps the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_keyed_by_its_name_is_not_renamed() {
    use dialtone_sync::store::DirectoryEntryInput;
    use dialtone_sync::{DirectoryNumber, Mutation};
    let h = Harness::new(Backend::Sqlite).await;
    let imported = Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
        tenant: "acme".into(),
        external_id: dialtone_sync::checks::generated_entry_key("Bob Smith"),
        name: "Bob Smith".into(),
        company: None,
        numbers: vec![DirectoryNumber {
            number: "+1 555 555 0143".into(),
            kind: "work".into(),
        }],
    });
    h.store
        .apply(&[imported], &super::seed_audit())
        .await
        .unwrap();
    dialtone_sync::watcher::full_load(&h.mirror, &*h.store)
        .await
        .unwrap();
    let put = |name: &str| {
        let body = json!({ "name": name,
            "numbers": [{ "number": "+1 555 555 0143", "kind": "work" }] })
        .to_string();
        let h = &h;
        async move {
            h.call(
                Some("acme-admin"),
                Method::PUT,
                "/v1/tenants/acme/directory/name:bob%20smith",
                Some(&body),
                &[],
            )
            .await
        }
    };
    refused_naming(&put("Robert Smith").await, "keyed by its name");
    let reply = put("BOB  smith ").await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let reply = put("BOB SMITH").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// A device user with spaces around it would be trimmed by an import: a
/// blank one came back as none, and the phone's export as a row no import
/// takes (a password without a user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_user_is_not_padded() {
    let h = Harness::new(Backend::Sqlite).await;
    for user in [" ", " desk", "desk "] {
        let body = json!({ "mac": "001565000009", "tenant": "acme", "family": "yealink",
            "http_user": user, "http_password": "x" });
        refused_naming(
            &post(&h, "acme-admin", "/v1/phones", body).await,
            "http_user must not start or end with spaces",
        );
    }
}

//! `POST /v1/phones/{mac}/replace`: a hardware swap keeps everything but
//! the MAC, refuses a MAC that is any tenant's phone (also one only the
//! database has, or one a concurrent swap takes), and reaches no other
//! tenant's phone.

use axum::http::{Method, StatusCode};
use dialtone_sync::{AuditQuery, Backend, Mac, TemplateScope};
use serde_json::json;

use super::{phone, seed_audit, template, Harness, Reply, ACME_MAC, GLOBEX_MAC};

const NEW_MAC: &str = "0015650000aa";

pub(super) async fn replace(h: &Harness, role: &str, mac: &str, new_mac: &str) -> Reply {
    let body = json!({ "new_mac": new_mac }).to_string();
    let path = format!("/v1/phones/{mac}/replace");
    h.call(Some(role), Method::POST, &path, Some(&body), &[])
        .await
}

/// What a phone of `mac` is served for its own file, or `None` when the
/// provisioning core knows no such phone.
fn served_config(h: &Harness, mac: &str) -> Option<String> {
    let file = format!("{mac}.cfg");
    h.mirror.load().phone_by_mac(&mac.parse::<Mac>().unwrap())?;
    Some(String::from_utf8(h.served(&file)).unwrap())
}

/// The acme phone's own template of its config file, shown by the mirror.
async fn with_desk_template(h: &Harness) {
    h.store
        .apply(
            &[template(
                TemplateScope::Phone,
                ACME_MAC,
                "{mac}.cfg",
                "# the desk's own\naccount.1.password = {{ lines[0].password }}\n",
            )],
            &seed_audit(),
        )
        .await
        .unwrap();
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_phone_keeps_its_lines_passwords_and_own_templates() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        with_desk_template(&h).await;
        let before = served_config(&h, ACME_MAC).unwrap();
        assert!(before.contains("sip-acme-1-Xq9"), "{before}");
        assert!(before.contains("the desk's own"), "{before}");

        // The replacement's MAC in another spelling than the stored one.
        let reply = replace(&h, "acme-admin", ACME_MAC, "00:15:65:00:00:AA").await;
        assert_eq!(reply.status, StatusCode::OK, "{backend:?}: {}", reply.text);
        let view = reply.json();
        assert_eq!(view["mac"], NEW_MAC, "{}", reply.text);
        assert_eq!(view["lines"].as_array().unwrap().len(), 2, "{}", reply.text);
        assert_eq!(view["label"], "acme front desk", "{}", reply.text);
        assert!(!reply.etag().is_empty());

        // The new hardware gets what the old one got (its passwords
        // included, and its own template); the old MAC is no phone any more.
        assert_eq!(served_config(&h, NEW_MAC).unwrap(), before);
        assert_eq!(served_config(&h, ACME_MAC), None);
        let gone = h.get("acme-admin", &format!("/v1/phones/{ACME_MAC}")).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text);

        let audit = h
            .store
            .audit_log(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let row = audit.iter().find(|a| a.action == "replace").unwrap();
        assert_eq!(row.entity_key, ACME_MAC);
        assert_eq!(row.tenant.as_deref(), Some("acme"));
        assert!(row.summary.to_string().contains(NEW_MAC), "{}", row.summary);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_reaches_no_other_tenants_phone_and_takes_no_phones_mac() {
    let h = Harness::new(Backend::Sqlite).await;
    let audit_rows = h.audit_rows().await;
    // Another tenant's phone is answered as a missing one.
    let reply = replace(&h, "globex-admin", ACME_MAC, NEW_MAC).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    let missing = replace(&h, "globex-admin", "0015650000ff", NEW_MAC).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    assert_eq!(
        reply.json()["error"]["message"]
            .as_str()
            .map(|m| m.replace(ACME_MAC, "0015650000ff")),
        missing.json()["error"]["message"]
            .as_str()
            .map(str::to_string),
        "{} / {}",
        reply.text,
        missing.text
    );
    // A reader may not.
    let reply = replace(&h, "acme-read", ACME_MAC, NEW_MAC).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    // Another tenant's MAC is taken, in the words a free-for-all create gets.
    let reply = replace(&h, "acme-admin", ACME_MAC, GLOBEX_MAC).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(
        reply
            .text
            .contains(&format!("phone {GLOBEX_MAC} already exists")),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("globex"), "{}", reply.text);
    // Bad input.
    // Held to a new phone's shapes, as a create is: the export of a phone
    // at the broadcast address would not import.
    for bad in [
        "not-a-mac",
        "ff:ff:ff:ff:ff:ff",
        "000000000000",
        "01:00:5e:00:00:01",
    ] {
        let reply = replace(&h, "acme-admin", ACME_MAC, bad).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            reply.text
        );
        assert!(reply.text.contains("new_mac"), "{}", reply.text);
    }
    let reply = replace(&h, "acme-admin", ACME_MAC, ACME_MAC).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            &format!("/v1/phones/{ACME_MAC}/replace"),
            Some(r#"{"mac": "0015650000aa"}"#),
            &[],
        )
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.text);
    assert_eq!(h.audit_rows().await, audit_rows);
    assert!(served_config(&h, ACME_MAC).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_only_the_database_has_is_taken() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::new(backend).await;
        // Another node has just created the phone: the database has it,
        // this node's mirror not yet.
        h.store
            .apply(
                &[phone("globex", NEW_MAC, &["sip-globex-Xq9"], None)],
                &seed_audit(),
            )
            .await
            .unwrap();
        let reply = replace(&h, "acme-admin", ACME_MAC, NEW_MAC).await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "{backend:?}: {}",
            reply.text
        );
        assert!(
            reply
                .text
                .contains(&format!("phone {NEW_MAC} already exists")),
            "{}",
            reply.text
        );
        dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
            .await
            .unwrap();
        let state = h.mirror.load();
        let acme = state.phone_by_mac(&ACME_MAC.parse().unwrap()).unwrap();
        let globex = state.phone_by_mac(&NEW_MAC.parse().unwrap()).unwrap();
        assert_ne!(acme.tenant_id, globex.tenant_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_swaps_racing_for_one_mac_leave_one_phone_with_it() {
    let h = Harness::new(Backend::Postgres).await;
    let (a, b) = tokio::join!(
        replace(&h, "acme-admin", ACME_MAC, NEW_MAC),
        replace(&h, "globex-admin", GLOBEX_MAC, NEW_MAC),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} / {}",
        a.text,
        b.text
    );
    let refused = if a.status == StatusCode::CONFLICT {
        &a
    } else {
        &b
    };
    assert!(
        refused
            .text
            .contains(&format!("phone {NEW_MAC} already exists")),
        "{}",
        refused.text
    );
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    let state = h.mirror.load();
    let kept = [ACME_MAC, GLOBEX_MAC]
        .iter()
        .filter(|m| state.phone_by_mac(&m.parse().unwrap()).is_some())
        .count();
    assert_eq!(kept, 1);
    assert!(state.phone_by_mac(&NEW_MAC.parse().unwrap()).is_some());
}

/// A swap locks the phone, then moves its templates; an edit of one of
/// those templates locked the template, then the phone, and the two
/// deadlocked on PostgreSQL (answered 503 after a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_swap_and_an_edit_of_the_phones_template_do_not_deadlock() {
    let h = Harness::new(Backend::Postgres).await;
    with_desk_template(&h).await;
    let state = h.mirror.load();
    let id = state
        .templates()
        .find(|t| t.scope == TemplateScope::Phone)
        .unwrap()
        .id;
    let path = format!("/v1/templates/{id}");
    let macs = [ACME_MAC, NEW_MAC];
    for round in 0..40 {
        let (from, to) = (macs[round % 2], macs[(round + 1) % 2]);
        let etag = h.get("acme-admin", &path).await.etag();
        let body = json!({ "body": format!("# round {round}\n") }).to_string();
        let headers = [("if-match", etag.as_str())];
        let (swap, edit) = tokio::join!(
            replace(&h, "acme-admin", from, to),
            h.call(
                Some("acme-admin"),
                Method::PUT,
                &path,
                Some(&body),
                &headers,
            ),
        );
        assert_eq!(swap.status, StatusCode::OK, "round {round}: {}", swap.text);
        assert!(
            !edit.status.is_server_error(),
            "round {round}: {} {}",
            edit.status,
            edit.text
        );
    }
}

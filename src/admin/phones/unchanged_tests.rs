//! Rows the previous release stored, past today's text checks, stay
//! editable: sent back as read with another field changed, they pass;
//! changed to another value the checks refuse, they do not.

use axum::http::{Method, StatusCode};
use dialtone_sync::store::{LineInput, PhoneInput, TenantInput};
use dialtone_sync::{watcher, Backend, Family, Mutation};
use serde_json::{json, Value};

use super::as_checked;
use crate::admin::tests::{seed_audit, Harness, Reply, ACME_MAC};

/// Acme's phone as the previous release could store it: a line break in
/// the line's name, a control character in the label and the password, a
/// noncharacter in the extension, the authentication user as a
/// spreadsheet wrote it.
fn stored_phone() -> Mutation {
    Mutation::UpsertPhone(PhoneInput {
        tenant: "acme".into(),
        mac: ACME_MAC.parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: Some("Front\u{1b}desk".into()),
        variables: "{}".into(),
        http_user: None,
        http_password: None,
        lines: vec![LineInput {
            extension: "200\u{fdd0}".into(),
            display_name: "Front\nDesk".into(),
            auth_user: "4.47701E+11".into(),
            password: Some("p\u{1}w".into()),
            registrar: "sip.example.net\u{2028}".into(),
            proxy: Some("edge\u{85}.example.net".into()),
            settings: "{}".into(),
        }],
    })
}

/// The phone as a client sends it back after reading it, with the
/// password it knows.
fn phone_body() -> Value {
    json!({"tenant": "acme", "family": "yealink", "model": "T46S", "label": "Front\u{1b}desk",
        "lines": [{"extension": "200\u{fdd0}", "display_name": "Front\nDesk",
            "auth_user": "4.47701E+11", "password": "p\u{1}w",
            "registrar": "sip.example.net\u{2028}", "proxy": "edge\u{85}.example.net"}]})
}

async fn seeded(mutation: Mutation) -> Harness {
    let h = Harness::new(Backend::Sqlite).await;
    h.store.apply(&[mutation], &seed_audit()).await.unwrap();
    watcher::catch_up(&h.mirror, &*h.store).await.unwrap();
    h
}

async fn put(h: &Harness, role: &str, path: &str, body: &Value) -> Reply {
    let body = body.to_string();
    h.call(Some(role), Method::PUT, path, Some(&body), &[])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_phone_sent_back_as_read_is_edited() {
    let h = seeded(stored_phone()).await;
    let path = format!("/v1/phones/{ACME_MAC}");
    let mut body = phone_body();
    body["model"] = json!("T46U");
    let reply = put(&h, "acme-admin", &path, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["model"], "T46U");
    assert_eq!(reply.json()["lines"][0]["display_name"], "Front\nDesk");
    // A password left out is kept, and passes as before.
    body["lines"][0].as_object_mut().unwrap().remove("password");
    let reply = put(&h, "acme-admin", &path, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    // Each field changed to another value the checks refuse, or a stored
    // value sent at another line's place, is refused by its name.
    let changed = [
        ("/label", json!("Back\u{1b}desk"), "label"),
        (
            "/lines/0/display_name",
            json!("Back\nOffice"),
            "display_name",
        ),
        (
            "/lines/0/registrar",
            json!("sip.example.org\u{2028}"),
            "registrar",
        ),
        ("/lines/0/proxy", json!("edge\u{85}.example.org"), "proxy"),
        ("/lines/0/password", json!("q\u{1}w"), "password"),
        ("/lines/0/extension", json!("201\u{fdd0}"), "extension"),
        ("/lines/0/auth_user", json!("4.47702E+11"), "auth_user"),
    ];
    for (pointer, value, field) in changed {
        let mut body = phone_body();
        *body.pointer_mut(pointer).unwrap() = value;
        let reply = put(&h, "acme-admin", &path, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{pointer}: {}",
            reply.text
        );
        let message = reply.json()["error"]["message"].to_string();
        assert!(message.starts_with(&format!("\"{field}")), "{message}");
    }
    // A name or user left out takes the extension: a new value of its
    // own field, which a stored extension passes only for its own field.
    for (left_out, field) in [("display_name", "display_name"), ("auth_user", "auth_user")] {
        let mut body = phone_body();
        body["lines"][0].as_object_mut().unwrap().remove(left_out);
        let reply = put(&h, "acme-admin", &path, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{left_out} left out: {}",
            reply.text
        );
        let message = reply.json()["error"]["message"].to_string();
        assert!(message.starts_with(&format!("\"{field}")), "{message}");
    }
    let mut body = phone_body();
    let first = body["lines"][0].clone();
    body["lines"] = json!([{"extension": "199", "registrar": "sip.example.net"}, first]);
    let reply = put(&h, "acme-admin", &path, &body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
}

/// Only the newer checks are waived: an unchanged value past a length or
/// an older rule is refused as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lengths_and_older_rules_still_judge_a_stored_value() {
    let h = Harness::new(Backend::Sqlite).await;
    let long = format!("{}\n", "x".repeat(300));
    let mut stored = stored_phone();
    if let Mutation::UpsertPhone(phone) = &mut stored {
        phone.lines[0].display_name = long.clone();
        phone.lines[0].extension = "20 0".into();
    }
    h.store.apply(&[stored], &seed_audit()).await.unwrap();
    watcher::catch_up(&h.mirror, &*h.store).await.unwrap();
    let path = format!("/v1/phones/{ACME_MAC}");
    let mut body = phone_body();
    body["lines"][0]["display_name"] = json!(long);
    body["lines"][0]["extension"] = json!("200");
    let reply = put(&h, "acme-admin", &path, &body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("at most 256 bytes"), "{}", reply.text);
    let mut body = phone_body();
    body["lines"][0]["display_name"] = json!("Front Desk");
    body["lines"][0]["extension"] = json!("20 0");
    let reply = put(&h, "acme-admin", &path, &body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("SIP user part"), "{}", reply.text);
}

/// A registrar or proxy stored as a bare IPv6 address, before the
/// brackets were required, passes sent back as it is; a new bare address
/// does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_bare_ipv6_registrar_sent_back_is_edited() {
    let mut stored = stored_phone();
    if let Mutation::UpsertPhone(phone) = &mut stored {
        phone.lines[0].registrar = "2001:db8::5".into();
        phone.lines[0].proxy = Some("fd00::2".into());
    }
    let h = seeded(stored).await;
    let path = format!("/v1/phones/{ACME_MAC}");
    let mut body = phone_body();
    body["lines"][0]["registrar"] = json!("2001:db8::5");
    body["lines"][0]["proxy"] = json!("fd00::2");
    body["model"] = json!("T46U");
    let reply = put(&h, "acme-admin", &path, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    for (field, value) in [("registrar", "2001:db8::6"), ("proxy", "fd00::3")] {
        let mut changed = body.clone();
        changed["lines"][0][field] = json!(value);
        let reply = put(&h, "acme-admin", &path, &changed).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            reply.text
        );
        assert!(reply.text.contains("in brackets"), "{}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_tenant_sent_back_as_read_is_edited() {
    let h = seeded(Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme\u{3164}".into(),
        default_region: "US".into(),
        settings: json!({"sip_domains": ["sip.example.net"], "ntp_server": "pool\u{b}ntp",
            "keys": [{"label": "a\u{2028}b"}]})
        .to_string(),
    }))
    .await;
    for role in ["acme-admin", "global"] {
        let sent = json!({"name": "Acme\u{3164}", "default_region": "US",
            "settings": {"sip_domains": ["sip.example.net"], "ntp_server": "pool\u{b}ntp",
                "keys": [{"label": "a\u{2028}b"}], "language": "English"}});
        let reply = h.put_acme(role, sent.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{role}: {}", reply.text);
        assert_eq!(reply.json()["settings"]["language"], "English");

        let changed = [
            ("/name", json!("Acme\u{3164}\u{3164}"), "tenant name"),
            (
                "/settings/ntp_server",
                json!("pool\u{b}ntp2"),
                "settings.ntp_server",
            ),
            (
                "/settings/keys/0/label",
                json!("a\u{2029}b"),
                "settings.keys[0].label",
            ),
            (
                "/settings/language",
                json!("pool\u{b}ntp"),
                "settings.language",
            ),
        ];
        for (pointer, value, says) in changed {
            let mut body = sent.clone();
            *body.pointer_mut(pointer).unwrap() = value;
            let reply = h.put_acme(role, body).await;
            assert_eq!(
                reply.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{role} {pointer}: {}",
                reply.text
            );
            assert!(
                reply.text.contains(says),
                "{role} {pointer}: {}",
                reply.text
            );
        }
    }
}

#[test]
fn an_unchanged_value_is_checked_with_its_size() {
    let sent = "a\u{1}\u{2028}\u{fdd0}\u{1fffe}";
    let checked = as_checked(sent, Some(sent), super::shown);
    assert_eq!(checked, "ax一一𠀀");
    assert_eq!(checked.len(), sent.len());
    assert_eq!(checked.chars().count(), sent.chars().count());
    assert_eq!(as_checked(sent, Some("other"), super::shown), sent);
    assert_eq!(as_checked(sent, None, super::shown), sent);
}

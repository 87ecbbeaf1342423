//! A phone's HTTP login is whole or absent: a password without a user,
//! given or kept, left the phone's files (SIP passwords and all) to anyone
//! who knew its MAC. And a user name is one every phone can send.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::{Harness, GLOBEX_MAC};

const GLOBEX_FILE: &str = "/001565000002.cfg";

/// globex's phone as an update sends it, with `login` (JSON members).
fn globex_update(login: &str) -> String {
    format!(
        r#"{{"tenant": "globex", "family": "yealink", "model": "T46S", {login}
            "lines": [{{"extension": "200", "display_name": "globex line 1", "registrar": "sip.example.net"}}]}}"#
    )
}

async fn put_globex(h: &Harness, login: &str) -> super::Reply {
    let path = format!("/v1/phones/{GLOBEX_MAC}");
    let body = globex_update(login);
    h.call(Some("globex-admin"), Method::PUT, &path, Some(&body), &[])
        .await
}

fn is_locked(h: &Harness) -> bool {
    let asked = h.provisioner.provision(&dialtone_tftp::Request {
        path: GLOBEX_FILE,
        remote: Some("192.0.2.10".parse().unwrap()),
        protocol: dialtone_tftp::Protocol::Http,
        ..Default::default()
    });
    matches!(
        asked,
        Err(dialtone_tftp::ProvisionError::Unauthorized { .. })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_needs_a_user() {
    let h = Harness::new(Backend::Sqlite).await;
    let body =
        r#"{"mac": "001565000003", "tenant": "acme", "family": "yealink", "http_password": "x"}"#;
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/phones",
            Some(body),
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
        reply
            .text
            .contains("http_user: required when http_password is set"),
        "{}",
        reply.text
    );
}

/// An update that leaves the user out while the password is kept is
/// refused, saying how to remove the login, and the phone stays locked;
/// removing the password with the user removes the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_cannot_keep_a_password_without_its_user() {
    let h = Harness::new(Backend::Sqlite).await;
    assert!(is_locked(&h), "globex's phone starts with a login");
    for login in ["", r#""http_user": "","#, r#""http_user": null,"#] {
        let reply = put_globex(&h, login).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{login}: {}",
            reply.text
        );
        let reason = reply.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            reason.starts_with("http_user: required while the phone has an HTTP password")
                && reason.contains(r#""http_password": """#),
            "{login}: {}",
            reply.text
        );
        assert!(is_locked(&h), "{login}: the phone was opened");
    }
    let shown = h.get("global", &format!("/v1/phones/{GLOBEX_MAC}")).await;
    assert_eq!(shown.json()["http_user"], "desk");
    assert_eq!(shown.json()["has_http_password"], true);

    // Given again, the user keeps the login as it was.
    let reply = put_globex(&h, r#""http_user": "desk","#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["has_http_password"], true);
    assert!(is_locked(&h));

    let reply = put_globex(&h, r#""http_password": "","#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["http_user"], serde_json::Value::Null);
    assert_eq!(reply.json()["has_http_password"], false);
    assert!(!is_locked(&h), "no login left to ask for");
}

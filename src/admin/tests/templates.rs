//! Templates through the API: a bad template never goes live, rollback
//! restores the exact earlier bytes, previews change nothing, and of two
//! edits from the same read exactly one lands.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::{Harness, ACME_MAC};

const FILE: &str = "001565000001.cfg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_template_is_refused_with_its_line_and_the_phone_keeps_its_file() {
    let h = Harness::new(Backend::Sqlite).await;
    let live = h.served(FILE);
    let show = h.get("acme-admin", "/v1/templates/{acme_template}").await;
    let etag = show.etag();
    let broken = r#"{"body": "line one\nline two\naccount.1.label = {{ lines[0].display_name \n"}"#;
    let reply = h
        .call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/templates/{acme_template}",
            Some(broken),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "template_error");
    assert_eq!(error["details"]["line"], 3, "{}", reply.text);
    assert!(
        error["details"]["column"].as_u64().is_some(),
        "{}",
        reply.text
    );
    assert!(error["details"]["template"]
        .as_str()
        .unwrap()
        .contains("{mac}.cfg"));
    // Nothing changed: same version, same tag, same bytes for the phone.
    let after = h.get("acme-admin", "/v1/templates/{acme_template}").await;
    assert_eq!(after.etag(), etag);
    assert_eq!(after.json()["version"], 2);
    assert_eq!(h.served(FILE), live);

    // A template that parses but cannot render for its phones is refused too.
    let unknown = r#"{"body": "x = {{ phone.mac | no_such_filter }}\n"}"#;
    let reply = h
        .call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/templates/{acme_template}",
            Some(unknown),
            &[],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(h.served(FILE), live);

    // Validation as you type: the same answer without saving.
    let draft = r#"{"scope": "tenant", "tenant": "acme", "family": "yealink", "file_pattern": "{mac}.cfg", "body": "a\n{% if %}\n"}"#;
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/templates/validate",
            Some(draft),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reply.json()["error"]["details"]["line"],
        2,
        "{}",
        reply.text
    );
    let wrong_file = r#"{"scope": "tenant", "tenant": "acme", "family": "yealink", "file_pattern": "nonsense.cfg", "body": "a\n"}"#;
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/templates/validate",
            Some(wrong_file),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.text.contains("{mac}.cfg"),
        "names the known patterns: {}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_exact_earlier_bytes() {
    let h = Harness::new(Backend::Sqlite).await;
    let v2_bytes = h.served(FILE);
    assert!(String::from_utf8_lossy(&v2_bytes).contains("# acme v2"));
    let etag = h
        .get("global", "/v1/templates/{acme_template}")
        .await
        .etag();
    let v3 = r##"{"body": "#!version:1.0.0.1\n# acme v3\naccount.1.label = {{ lines[0].display_name }}\n"}"##;
    let reply = h
        .call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/templates/{acme_template}",
            Some(v3),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["version"], 3);
    assert!(String::from_utf8_lossy(&h.served(FILE)).contains("# acme v3"));

    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/templates/{acme_template}/rollback",
            Some(r#"{"version": 2}"#),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["version"], 4, "a rollback is a new version");
    assert_eq!(h.served(FILE), v2_bytes, "the phone gets v2's bytes again");

    let versions = h
        .get("acme-admin", "/v1/templates/{acme_template}/versions")
        .await
        .json();
    let versions = &versions["items"];
    let numbers: Vec<i64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [4, 3, 2, 1]);
    assert_eq!(
        versions[0]["digest"], versions[2]["digest"],
        "v4 is v2's body"
    );
    let diff = h
        .get(
            "acme-admin",
            "/v1/templates/{acme_template}/diff?from=3&to=4",
        )
        .await
        .json();
    let diff = diff["diff"].as_str().unwrap();
    assert!(
        diff.contains("-# acme v3") && diff.contains("+# acme v2"),
        "{diff}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_changes_nothing_and_shows_the_diff() {
    let h = Harness::new(Backend::Sqlite).await;
    let live = h.served(FILE);
    let audit = h.audit_rows().await;
    let version = h.mirror.load().version();
    let request = r##"{"mac": "001565000001", "file": "001565000001.cfg", "template_id": {acme_template},
        "body": "#!version:1.0.0.1\n# preview\naccount.1.password = {{ lines[0].password }}\n"}"##;
    let reply = h
        .call(
            Some("acme-read"),
            Method::POST,
            "/v1/preview",
            Some(request),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let file = &reply.json()["files"][0];
    assert_eq!(file["file"], FILE);
    assert_eq!(file["from_draft"], true);
    assert_eq!(file["changed"], true);
    assert!(
        file["body"]
            .as_str()
            .unwrap()
            .contains("account.1.password = ********"),
        "secrets are masked: {file}"
    );
    let diff = file["diff"].as_str().unwrap();
    assert!(
        diff.contains("-# acme v2") && diff.contains("+# preview"),
        "{diff}"
    );
    assert_eq!(h.served(FILE), live);
    assert_eq!(h.audit_rows().await, audit);
    assert_eq!(h.mirror.load().version(), version);

    // Every file of the phone, as it gets them now.
    let files = h
        .get("acme-read", &format!("/v1/phones/{ACME_MAC}/files"))
        .await
        .json();
    let names: Vec<&str> = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert!(names.contains(&FILE), "{names:?}");
    assert!(files["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["changed"] == false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edits_from_one_read_give_one_success_and_one_412() {
    // PostgreSQL: the check and the write race for real on two connections.
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let h = Harness::new(backend).await;
        for path in [
            "/v1/templates/{acme_template}",
            "/v1/phones/001565000001",
            "/v1/tenants/acme",
        ] {
            let etag = h.get("global", path).await.etag();
            assert!(!etag.is_empty(), "{path} has an ETag");
            let body = |n: u32| match path {
                "/v1/tenants/acme" => format!(r#"{{"name": "Acme {n}"}}"#),
                "/v1/phones/001565000001" => format!(
                    r#"{{"tenant": "acme", "family": "yealink", "label": "edit {n}", "lines": [{{"extension": "200", "display_name": "D", "registrar": "sip.example.net"}}]}}"#
                ),
                _ => format!(r##"{{"body": "# edit {n}\n"}}"##),
            };
            let (a, b) = (body(1), body(2));
            let headers = [("if-match", etag.as_str())];
            let (first, second) = tokio::join!(
                h.call(Some("acme-admin"), Method::PUT, path, Some(&a), &headers),
                h.call(Some("acme-admin"), Method::PUT, path, Some(&b), &headers),
            );
            let mut statuses = [first.status.as_u16(), second.status.as_u16()];
            statuses.sort();
            assert_eq!(
                statuses,
                [200, 412],
                "{backend:?} {path}: {} / {}",
                first.text,
                second.text
            );
            let refused = if first.status == StatusCode::PRECONDITION_FAILED {
                &first
            } else {
                &second
            };
            assert_eq!(refused.json()["error"]["code"], "precondition_failed");
            // The stale tag is refused from now on; the new one works.
            let stale = h
                .call(
                    Some("acme-admin"),
                    Method::PUT,
                    path,
                    Some(&body(3)),
                    &headers,
                )
                .await;
            assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
            let fresh = h.get("acme-admin", path).await.etag();
            let ok = h
                .call(
                    Some("acme-admin"),
                    Method::PUT,
                    path,
                    Some(&body(4)),
                    &[("if-match", &fresh)],
                )
                .await;
            assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_write_only() {
    let h = Harness::new(Backend::Sqlite).await;
    let phone = h.get("global", "/v1/phones/001565000002").await.json();
    assert_eq!(phone["has_http_password"], true);
    assert_eq!(phone["lines"][0]["has_password"], true);
    // An update that leaves the passwords out keeps them.
    let update = r#"{"tenant": "globex", "family": "yealink", "model": "T46S", "http_user": "desk", "label": "renamed",
        "lines": [{"extension": "200", "display_name": "globex line 1", "auth_user": "globex200", "registrar": "sip.example.net"}]}"#;
    let reply = h
        .call(
            Some("global"),
            Method::PUT,
            "/v1/phones/001565000002",
            Some(update),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["has_http_password"], true);
    assert_eq!(reply.json()["lines"][0]["has_password"], true);
    // acme's template renders the SIP password: it survives such an update.
    let update = r#"{"tenant": "acme", "family": "yealink", "model": "T46S", "label": "renamed too",
        "lines": [{"extension": "200", "display_name": "acme line 1", "registrar": "sip.example.net"}]}"#;
    let reply = h
        .call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/phones/001565000001",
            Some(update),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let served = String::from_utf8(h.served(FILE)).unwrap();
    assert!(
        served.contains("account.1.password = sip-acme-1-Xq9"),
        "the phone still gets its SIP password: {served}"
    );
    // The audit trail of that write holds no secret either.
    let audit = h.get("global", "/v1/audit?entity=phone").await;
    assert!(
        audit.text.contains("renamed") || audit.text.contains("001565000002"),
        "{}",
        audit.text
    );
    let sources = h
        .get("global", "/v1/tenants/globex/directory-sources/cnam")
        .await
        .json();
    assert_eq!(sources["has_secret"], true);
}

/// The source test call against the slapd scripts/test runs: a right bind
/// finds a name, a wrong password reports the bind error, and neither
/// echoes the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_source_test_binds_and_searches_the_real_server() {
    let url = std::env::var("DIALTONE_TEST_LDAP_URL")
        .expect("DIALTONE_TEST_LDAP_URL is not set: run the tests through scripts/test");
    let base =
        std::env::var("DIALTONE_TEST_LDAP_BASE").unwrap_or_else(|_| "dc=example,dc=com".into());
    let password =
        std::env::var("DIALTONE_TEST_LDAP_BIND_PASSWORD").unwrap_or_else(|_| "secret".into());
    let h = Harness::new(Backend::Sqlite).await;
    let create = |secret: &str| {
        serde_json::json!({
            "name": "corp-ldap", "kind": "ldap", "timeout_ms": 2000, "secret": secret,
            "settings": { "url": url, "bind_dn": format!("cn=admin,{base}"), "base_dn": format!("ou=people,{base}"),
                          "name_attributes": ["displayName", "cn"] },
        })
        .to_string()
    };
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/directory-sources",
            Some(&create(&password)),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    // (The test server's password is the word "secret": too common to grep
    // for; the wrong password below is searched for instead.)
    let test = |number: &'static str| {
        let h = &h;
        async move {
            let body = format!(r#"{{"number": "{number}"}}"#);
            h.call(
                Some("acme-admin"),
                Method::POST,
                "/v1/tenants/acme/directory-sources/corp-ldap/test",
                Some(&body),
                &[],
            )
            .await
        }
    };
    let found = test("+1 555 010 1234").await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    let report = found.json();
    assert_eq!(report["outcome"], "found", "{report}");
    assert_eq!(report["name"], "Alice Example");
    assert!(
        report["first_ms"].as_f64().is_some() && report["repeat_ms"].as_f64().is_some(),
        "{report}"
    );
    assert_eq!(test("+1 555 010 9999").await.json()["outcome"], "not_found");

    let wrong = r#"{"kind": "ldap", "secret": "not-the-password", "timeout_ms": 2000,
        "settings": {"url": "URL", "bind_dn": "cn=admin,BASE", "base_dn": "ou=people,BASE", "name_attributes": ["cn"]}}"#
        .replace("URL", &url)
        .replace("BASE", &base);
    let reply = h
        .call(
            Some("acme-admin"),
            Method::PUT,
            "/v1/tenants/acme/directory-sources/corp-ldap",
            Some(&wrong),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let failed = test("+1 555 010 1234").await.json();
    assert_eq!(failed["outcome"], "error", "{failed}");
    // A coarse class, never the server's own words.
    assert_eq!(failed["error"], "auth", "{failed}");
    assert!(!failed.to_string().contains("not-the-password"));
}

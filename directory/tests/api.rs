//! The lookup routes, driven the way PBXes call them: mod_cidlookup
//! (digits only, key in the query, body is the name), Asterisk `CURL()`,
//! OpenCNAM-style clients. Plus keys and tenant isolation on every route.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::*;
use dialtone_directory::{LookupOptions, LookupService};
use dialtone_sync::{ApiTokenInput, Mutation, TokenScope};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Api {
    router: axum::Router,
    acme_key: String,
    globex_key: String,
    admin_key: String,
    revoked_key: String,
    _db: dialtone_sync::testing::TestDb,
}

async fn api() -> Api {
    let (acme_key, acme_token) = lookup_token("acme");
    let (globex_key, globex_token) = lookup_token("globex");
    let (revoked_key, revoked_token) = lookup_token("acme");
    let admin_key = dialtone_sync::generate_token();
    let admin_token = Mutation::CreateApiToken(ApiTokenInput {
        name: "ops".into(),
        token_hash: dialtone_sync::token_hash(&admin_key),
        scope: TokenScope::GlobalAdmin,
        tenant: None,
        expires_at: None,
    });
    let (db, store, _) = mirror_of(&[
        tenant("acme", "US"),
        tenant("globex", "US"),
        // The same number in both tenants, under different names.
        entry("acme", "a1", "Alice Example", &["+1 (555) 010-1234"]),
        entry("globex", "g1", "Globex Reception", &["555.010.1234"]),
        entry("globex", "g2", "Globex Only", &["555-010-1299"]),
        acme_token,
        globex_token,
        revoked_token,
        admin_token,
    ])
    .await;
    let id = store
        .load_all()
        .await
        .unwrap()
        .0
        .api_tokens
        .iter()
        .find(|t| t.token_hash.as_ref() == dialtone_sync::token_hash(&revoked_key))
        .unwrap()
        .id;
    store
        .apply(&[Mutation::RevokeApiToken { id }], &audit("setup"))
        .await
        .unwrap();
    let mirror = std::sync::Arc::new(dialtone_sync::Mirror::new());
    dialtone_sync::watcher::full_load(&mirror, &*store)
        .await
        .unwrap();
    // These tests are about request shapes and keys, not speed: the first
    // lookup builds the tenant's directory index off the workers, and on a
    // loaded CI machine that outlasted the 300 ms default deadline, which
    // answers "" (the name unknown) instead of the entry.
    let options = LookupOptions {
        deadline: std::time::Duration::from_secs(5),
        ..LookupOptions::default()
    };
    let service = LookupService::new(mirror, None, options);
    Api {
        router: dialtone_directory::http::router(service),
        acme_key,
        globex_key,
        admin_key,
        revoked_key,
        _db: db,
    }
}

struct Reply {
    status: StatusCode,
    content_type: String,
    /// `X-Content-Type-Options: nosniff`: names are tenants' text.
    nosniff: bool,
    body: String,
}

impl Api {
    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let nosniff = response
            .headers()
            .get(header::X_CONTENT_TYPE_OPTIONS)
            .is_some_and(|v| v == "nosniff");
        let body = String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        Reply {
            status,
            content_type,
            nosniff,
            body,
        }
    }
}

#[tokio::test]
async fn mod_cidlookup_shaped_requests_get_the_name_as_the_body() {
    let api = api().await;
    let ua = [("user-agent", "freeswitch-cidlookup/1.0")];
    let hit = api
        .get(
            &format!("/v1/lookup?number=15550101234&key={}", api.acme_key),
            &ua,
        )
        .await;
    assert_eq!(
        (hit.status, hit.body.as_str()),
        (StatusCode::OK, "Alice Example")
    );
    assert!(
        hit.content_type.starts_with("text/plain"),
        "{}",
        hit.content_type
    );
    assert!(hit.nosniff, "a name may be read as HTML");
    let refused = api.get("/v1/lookup?number=15550101234", &ua).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(refused.nosniff, "a refusal may be read as HTML");
    // A miss is an empty body, never "UNKNOWN" or an error page: mod_cidlookup
    // ignores the status and would show whatever the body says.
    let miss = api
        .get(
            &format!("/v1/lookup?number=15550109999&key={}", api.acme_key),
            &ua,
        )
        .await;
    assert_eq!((miss.status, miss.body.as_str()), (StatusCode::OK, ""));
    let bad_key = api
        .get("/v1/lookup?number=15550101234&key=dt_nope", &ua)
        .await;
    assert_eq!(
        (bad_key.status, bad_key.body.as_str()),
        (StatusCode::UNAUTHORIZED, "")
    );
    let bad_number = api
        .get(&format!("/v1/lookup?number=abc&key={}", api.acme_key), &ua)
        .await;
    assert_eq!(
        (bad_number.status, bad_number.body.as_str()),
        (StatusCode::BAD_REQUEST, "")
    );
}

#[tokio::test]
async fn asterisk_curl_and_opencnam_shaped_requests() {
    let api = api().await;
    // Set(CALLERID(name)=${CURL(http://.../v1/lookup?number=${CALLERID(num)}&key=K)})
    let ua = [
        ("user-agent", "asterisk-libcurl-agent/1.0"),
        ("accept", "*/*"),
    ];
    let hit = api
        .get(
            &format!("/v1/lookup?number=%2B15550101234&key={}", api.acme_key),
            &ua,
        )
        .await;
    assert_eq!(
        (hit.status, hit.body.as_str()),
        (StatusCode::OK, "Alice Example")
    );
    let national = api
        .get(
            &format!("/v1/lookup?number=(555)%20010-1234&key={}", api.acme_key),
            &ua,
        )
        .await;
    assert_eq!(national.body, "Alice Example");
    let miss = api
        .get(
            &format!("/v1/lookup?number=%2B15550109999&key={}", api.acme_key),
            &ua,
        )
        .await;
    assert_eq!((miss.status, miss.body.as_str()), (StatusCode::OK, ""));

    let pbx = api
        .get(
            &format!(
                "/v3/phone/+15550101234?format=pbx&auth_token={}",
                api.acme_key
            ),
            &[],
        )
        .await;
    assert_eq!(pbx.body, "Alice Example");
    let accept_pbx = api
        .get(
            "/v3/phone/+15550101234",
            &[
                ("accept", "text/pbx"),
                ("authorization", &format!("Bearer {}", api.acme_key)),
            ],
        )
        .await;
    assert_eq!(accept_pbx.body, "Alice Example");
    // The scheme's case is free, as on the admin API.
    let lower_scheme = api
        .get(
            "/v3/phone/+15550101234",
            &[
                ("accept", "text/pbx"),
                ("authorization", &format!("bearer {}", api.acme_key)),
            ],
        )
        .await;
    assert_eq!(lower_scheme.body, "Alice Example");
    let json = api
        .get(
            &format!("/v3/phone/+15550101234?auth_token={}", api.acme_key),
            &[],
        )
        .await;
    let value: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(
        (value["name"].as_str(), value["number"].as_str()),
        (Some("Alice Example"), Some("+15550101234"))
    );
}

#[tokio::test]
async fn json_mode_explains_errors() {
    let api = api().await;
    let hit = api
        .get(
            &format!(
                "/v1/lookup?number=5550101234&format=json&key={}",
                api.acme_key
            ),
            &[],
        )
        .await;
    let value: serde_json::Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(value["name"], "Alice Example");
    assert_eq!(value["source"], "local");
    assert_eq!(value["found"], true);
    let bad = api
        .get(
            &format!("/v1/lookup?number=)(uid=*&key={}", api.acme_key),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let value: serde_json::Value = serde_json::from_str(&bad.body).unwrap();
    assert_eq!(value["error"]["code"], "invalid_number");
    assert!(value["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not a phone number"));
    // A caller's number with `&format=json` appended, as a PBX writes it
    // into the URL: the refusal the PBX shows as the name holds none of
    // the caller's text.
    let injected = api
        .get(
            &format!(
                "/v1/lookup?number=CallYourBankNow&format=json&key={}",
                api.acme_key
            ),
            &[],
        )
        .await;
    assert_eq!(injected.status, StatusCode::BAD_REQUEST);
    assert!(!injected.body.contains("CallYourBank"), "{}", injected.body);
    for uri in [
        "/v1/lookup?number=5550101234&format=json".to_string(),
        format!(
            "/v1/lookup?number=5550101234&format=json&key={}",
            api.revoked_key
        ),
    ] {
        let refused = api.get(&uri, &[]).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{uri}");
        let value: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
        assert_eq!(value["error"]["code"], "unauthorized");
    }
}

/// The PBX writes the caller's number into the URL as the caller sent it:
/// one that breaks the query (a second `number`, bytes that are not
/// UTF-8) still gets an empty body in plain-text mode, since any text
/// would be shown as the caller's name, and the JSON error shape in JSON
/// mode.
#[tokio::test]
async fn a_caller_id_that_breaks_the_query_gets_an_empty_body() {
    let api = api().await;
    let key = &api.acme_key;
    for uri in [
        format!("/v1/lookup?number=1&number=5550101234&key={key}"),
        format!("/v1/lookup?number=5550101234&tenant=globex&tenant=acme&key={key}"),
        format!("/v1/lookup?number=%FF%FE&key={key}"),
        format!("/v3/phone/%FF%FE?format=pbx&key={key}"),
        format!("/v3/phone/5550101234?format=pbx&key={key}&key={key}"),
        // README's FreeSWITCH line states the format before the number, so
        // a caller's `&format=json` repeats it.
        format!("/v1/lookup?key={key}&format=text&number=5550101234&format=json"),
        // The same key under its other name, after a caller's number.
        format!(
            "/v1/lookup?number=5550101234&key={}&auth_token={key}",
            api.globex_key
        ),
        format!(
            "/v3/phone/5550101234?auth_token={key}&key={}&format=pbx",
            api.globex_key
        ),
    ] {
        let reply = api.get(&uri, &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            reply.body
        );
        assert_eq!(reply.body, "", "{uri}");
        assert!(reply.content_type.starts_with("text/plain"), "{uri}");
    }
    // A field repeated is refused as plain text even where `format=json`
    // is given, before or after it: the PBX asked for text, and the
    // caller's number carried `&format=json` and a second field.
    for uri in [
        format!("/v1/lookup?key={key}&format=text&number=1&format=json"),
        format!("/v1/lookup?key={key}&number=1&format=json&number=2"),
        format!("/v1/lookup?format=json&number=1&number=2&key={key}"),
    ] {
        let reply = api.get(&uri, &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(reply.body, "", "{uri}");
        assert!(reply.content_type.starts_with("text/plain"), "{uri}");
    }
    // A key in the URL beside the PBX's own in the header.
    let bearer = format!("Bearer {key}");
    let uri = format!("/v1/lookup?number=5550101234&key={}", api.globex_key);
    let reply = api.get(&uri, &[("authorization", &bearer)]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.body, "");
    for (uri, code) in [
        (format!("/v3/phone/%FF?key={key}"), "invalid_number"),
        (
            format!("/v3/phone/5550101234?number=1&number=2&key={key}"),
            "bad_request",
        ),
    ] {
        let reply = api.get(&uri, &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            reply.body
        );
        let value: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(value["error"]["code"], code, "{uri}");
    }
}

/// Text after an extension marker is ignored when reading a number, so
/// without a length bound any amount of it would be a valid lookup (and a
/// key the service remembers).
#[tokio::test]
async fn numbers_padded_past_any_real_length_are_refused() {
    let api = api().await;
    let padded = format!("5550101234x{}", "a".repeat(4000));
    for uri in [
        format!(
            "/v1/lookup?number={padded}&format=json&key={}",
            api.acme_key
        ),
        format!("/v3/phone/{padded}?key={}", api.acme_key),
    ] {
        let reply = api.get(&uri, &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        let value: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(value["error"]["code"], "invalid_number");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains("too long"),
            "{value}"
        );
    }
    // The same number with a real extension still answers.
    let hit = api
        .get(
            &format!(
                "/v1/lookup?number=5550101234x205&format=json&key={}",
                api.acme_key
            ),
            &[],
        )
        .await;
    assert_eq!(hit.status, StatusCode::OK, "{}", hit.body);
}

#[tokio::test]
async fn a_key_never_sees_another_tenants_entries() {
    let api = api().await;
    let as_acme = |path: &str| format!("{path}&key={}", api.acme_key);
    // The shared number answers with the key's own tenant's name on every route.
    assert_eq!(
        api.get(&as_acme("/v1/lookup?number=5550101234"), &[])
            .await
            .body,
        "Alice Example"
    );
    assert_eq!(
        api.get(
            &format!("/v1/lookup?number=5550101234&key={}", api.globex_key),
            &[]
        )
        .await
        .body,
        "Globex Reception"
    );
    assert_eq!(
        api.get(&as_acme("/v3/phone/5550101234?format=pbx"), &[])
            .await
            .body,
        "Alice Example"
    );
    // A globex-only number is a miss for acme, on every route and format.
    assert_eq!(
        api.get(&as_acme("/v1/lookup?number=5550101299"), &[])
            .await
            .body,
        ""
    );
    assert_eq!(
        api.get(&as_acme("/v3/phone/5550101299?format=pbx"), &[])
            .await
            .body,
        ""
    );
    let json = api
        .get(&as_acme("/v3/phone/5550101299?format=json"), &[])
        .await;
    assert!(!json.body.contains("Globex"), "{}", json.body);
    // Naming the other tenant does not help.
    for path in [
        "/v1/lookup?number=5550101299&tenant=globex",
        "/v3/phone/5550101299?format=pbx&tenant=globex",
    ] {
        let refused = api.get(&as_acme(path), &[]).await;
        assert_eq!(
            (refused.status, refused.body.as_str()),
            (StatusCode::FORBIDDEN, ""),
            "{path}"
        );
    }
    let unknown = api
        .get(
            &as_acme("/v1/lookup?number=5550101299&tenant=nosuch&format=json"),
            &[],
        )
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::FORBIDDEN,
        "existence of tenants is not revealed"
    );
    // A global key must say which tenant it asks for.
    let bearer = format!("Bearer {}", api.admin_key);
    let admin = [("authorization", bearer.as_str())];
    assert_eq!(
        api.get("/v1/lookup?number=5550101299", &admin).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.get("/v1/lookup?number=5550101299&tenant=globex", &admin)
            .await
            .body,
        "Globex Only"
    );
    // In the URL, which PBXes and proxies log, only a lookup key is taken.
    let in_url = format!(
        "/v1/lookup?number=5550101299&tenant=globex&key={}",
        api.admin_key
    );
    assert_eq!(api.get(&in_url, &[]).await.status, StatusCode::FORBIDDEN);
}

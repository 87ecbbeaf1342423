//! What a tenant's token stores or has compiled is bounded: every node
//! holds every tenant and source, and a draft is compiled like a template.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;

use super::Harness;

/// Sends `body` as `role` and expects a 422 that says `why`.
async fn refused(h: &Harness, role: &str, method: Method, path: &str, body: &str, why: &str) {
    let reply = h.call(Some(role), method, path, Some(body), &[]).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains(why), "{why}: {}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_names_settings_secrets_and_drafts_are_refused() {
    let h = Harness::new(Backend::Sqlite).await;
    let long_name = serde_json::json!({ "name": "n".repeat(257) }).to_string();
    let tenant = "/v1/tenants/acme";
    refused(
        &h,
        "acme-admin",
        Method::PUT,
        tenant,
        &long_name,
        "at most 256 characters",
    )
    .await;

    let source = |settings: serde_json::Value, secret: &str| {
        serde_json::json!({ "name": "cnam2", "kind": "http", "settings": settings, "secret": secret })
            .to_string()
    };
    let url = "http://127.0.0.1:9/v2/{e164}";
    let padded = serde_json::json!({ "url": url, "ca_pem": "x".repeat(70_000) });
    let path = "/v1/tenants/acme/directory-sources";
    for (body, why) in [
        (source(padded, "k"), "settings is 68 KiB; at most 64 KiB"),
        (
            source(serde_json::json!({ "url": url }), &"s".repeat(5000)),
            "secret: at most 4096 bytes",
        ),
        (
            serde_json::json!({ "name": "x\nprovisioning: ban 198.51.100.7", "kind": "http",
                "settings": { "url": url } })
            .to_string(),
            "none of them control characters",
        ),
        (
            serde_json::json!({ "name": "x\u{2028}provisioning: ban 198.51.100.7", "kind": "http",
                "settings": { "url": url } })
            .to_string(),
            "name holds U+2028, a line break",
        ),
    ] {
        refused(&h, "acme-admin", Method::POST, path, &body, why).await;
    }
    let fits = source(serde_json::json!({ "url": url }), "k");
    let reply = h
        .call(Some("acme-admin"), Method::POST, path, Some(&fits), &[])
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);

    // A draft past the template size quota (256 KiB by default).
    let draft = serde_json::json!({
        "mac": "001565000001", "file": "001565000001.cfg", "template_id": "{acme_template}",
        "body": format!("#!version:1.0.0.1\n#{}\n", "x".repeat(300_000)),
    })
    .to_string()
    .replace("\"{acme_template}\"", "{acme_template}");
    refused(
        &h,
        "acme-read",
        Method::POST,
        "/v1/preview",
        &draft,
        "quota_exceeded",
    )
    .await;
}

/// A device user without a password would lock the phone out of every
/// fetch; the API says so instead of storing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_user_needs_a_password() {
    let h = Harness::new(Backend::Sqlite).await;
    refused(
        &h,
        "acme-admin",
        Method::POST,
        "/v1/phones",
        r#"{"mac": "001565000003", "tenant": "acme", "family": "yealink", "http_user": "desk"}"#,
        "http_password: required when http_user is set",
    )
    .await;
}

/// A tenant's token names its tenant, and the admin page lists tenants by
/// name: a bidi override, an invisible character or a control character
/// would let one name pass for another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_name_holds_no_control_or_format_character() {
    let h = Harness::new(Backend::Sqlite).await;
    for (name, code) in [
        ("\u{202e}cni xemelG", "U+202E"),
        ("Globex\u{2060} Inc", "U+2060"),
        ("Globex\u{ad} Inc", "U+00AD"),
        ("Globex\u{e0020}Inc", "U+E0020"),
        ("Globex\nInc", "U+000A"),
        // Default-ignorable yet no format characters: a Hangul filler
        // alone is a blank-looking name.
        ("\u{3164}", "U+3164"),
        ("Globex\u{fe0f} Inc", "U+FE0F"),
        ("Glo\u{34f}bex Inc", "U+034F"),
    ] {
        let reply = h
            .put_acme("acme-admin", serde_json::json!({ "name": name }))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?}: {}",
            reply.text
        );
        assert!(
            reply.text.contains("tenant name holds") && reply.text.contains(code),
            "{name:?}: {}",
            reply.text
        );
    }
    let created = serde_json::json!({ "slug": "initech", "name": "Init\u{200b}ech" }).to_string();
    refused(
        &h,
        "global",
        Method::POST,
        "/v1/tenants",
        &created,
        "U+200B",
    )
    .await;
    let plain = h
        .put_acme(
            "acme-admin",
            serde_json::json!({ "name": "Acme Zoë Ålund GmbH" }),
        )
        .await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.text);
    assert_eq!(plain.json()["name"], "Acme Zoë Ålund GmbH");
}

/// A phone's JSON is bounded as a whole, not only object by object: 48
/// lines of 64 KiB settings each made a phone of 2 MiB (the request body's
/// cap), held on every node and parsed for every page of a list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phones_json_together_is_held_to_its_quota() {
    let h = Harness::new(Backend::Sqlite).await;
    let phone = |mac: &str, variables: usize, settings: &[usize]| {
        let lines: Vec<serde_json::Value> = settings
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                serde_json::json!({ "extension": format!("30{i}"), "display_name": "Desk",
                    "registrar": "sip.example.net", "settings": { "pad": "s".repeat(*bytes) } })
            })
            .collect();
        serde_json::json!({ "mac": mac, "tenant": "acme", "family": "yealink",
            "variables": { "pad": "v".repeat(variables) }, "lines": lines })
        .to_string()
    };
    // 10 + 4 + 4 KiB: each object fits its own 64 KiB, the phone does not
    // fit the default 16 KiB.
    let large = phone("001565000031", 10_000, &[4_000, 4_000]);
    refused(
        &h,
        "acme-admin",
        Method::POST,
        "/v1/phones",
        &large,
        "phone_json_bytes",
    )
    .await;
    let fits = phone("001565000032", 8_000, &[4_000, 3_000]);
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/phones",
            Some(&fits),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    // Shown as stored.
    let shown: serde_json::Value = serde_json::from_str(&reply.text).unwrap();
    assert_eq!(shown["variables"]["pad"].as_str().unwrap().len(), 8_000);
    assert_eq!(
        shown["lines"][1]["settings"]["pad"].as_str().unwrap().len(),
        3_000
    );

    // A global admin raises it for the tenant; then the phone fits.
    let raised = r#"{"name": "Acme", "settings": {"quotas": {"phone_json_bytes": 65536}}}"#;
    let reply = h
        .call(
            Some("global"),
            Method::PUT,
            "/v1/tenants/acme",
            Some(raised),
            &[],
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/phones",
            Some(&large),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

/// A tenant's own token changes its region at most once per ten minutes:
/// each change renormalizes its whole directory on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_switch_its_region_back_and_forth() {
    let h = Harness::new(Backend::Sqlite).await;
    let put = |role: &'static str, region: &'static str| {
        h.put_acme(
            role,
            serde_json::json!({ "name": "Acme", "default_region": region }),
        )
    };
    let first = put("acme-admin", "GB").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let back = put("acme-admin", "US").await;
    assert_eq!(back.status, StatusCode::TOO_MANY_REQUESTS, "{}", back.text);
    assert!(back.text.contains("rate_limited"), "{}", back.text);
    let retry: u64 = back.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((500..=600).contains(&retry), "{retry}");
    // The same region again, or another field, is no change of region.
    let same = put("acme-admin", "GB").await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.text);
    // Another tenant is not held, nor is the operator.
    let globex = h
        .call(
            Some("globex-admin"),
            Method::PUT,
            "/v1/tenants/globex",
            Some(r#"{"name": "Globex", "default_region": "GB"}"#),
            &[],
        )
        .await;
    assert_eq!(globex.status, StatusCode::OK, "{}", globex.text);
    let operator = put("global", "US").await;
    assert_eq!(operator.status, StatusCode::OK, "{}", operator.text);
}

/// Every fetch naming a tenant's phone is checked against its
/// `provisioning_networks`: a list is at most 256 readable networks, and
/// only the operator's token changes it (a tenant's is dropped unread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_networks_are_few_and_readable() {
    let h = Harness::new(Backend::Sqlite).await;
    let put = |role: &'static str, networks: serde_json::Value| {
        h.put_acme(
            role,
            serde_json::json!({
                "name": "Acme",
                "settings": { "provisioning_networks": networks },
            }),
        )
    };
    let many: Vec<String> = (0..257)
        .map(|n| format!("10.{}.{}.0/24", n / 256, n % 256))
        .collect();
    for (networks, why) in [
        (serde_json::json!(many), "at most 256"),
        (
            serde_json::json!(["10.0.0.0/8", "not a network"]),
            "is not a network",
        ),
        (serde_json::json!("10.0.0.0/8"), "must be a list"),
    ] {
        let refused = put("global", networks.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            refused.text
        );
        assert!(refused.text.contains(why), "{}", refused.text);
        // A tenant's token: dropped unread, its other edits go through.
        let dropped = put("acme-admin", networks).await;
        assert_eq!(dropped.status, StatusCode::OK, "{}", dropped.text);
    }
    let stored = |reply: &super::Reply| reply.json()["settings"]["provisioning_networks"].clone();
    let ok = put("global", serde_json::json!(["192.0.2.0/24", "2001:db8::1"])).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(
        stored(&ok),
        serde_json::json!(["192.0.2.0/24", "2001:db8::1"])
    );
    // The tenant's own token cannot move them (another organization's
    // range would list that organization's new phones to it): the stored
    // list stays, whatever it sends, `null` included.
    for networks in [
        serde_json::json!(["198.51.100.0/24"]),
        serde_json::Value::Null,
    ] {
        let kept = put("acme-admin", networks).await;
        assert_eq!(kept.status, StatusCode::OK, "{}", kept.text);
        assert_eq!(
            stored(&kept),
            serde_json::json!(["192.0.2.0/24", "2001:db8::1"])
        );
    }
    // `null` is no list, as before.
    let none = put("global", serde_json::Value::Null).await;
    assert_eq!(none.status, StatusCode::OK, "{}", none.text);
}

/// A body past the API's 2 MiB cap is 413 in the API's error shape,
/// whoever sends it and however the route reads it (parsed as JSON, or
/// taken whole where an empty body is allowed): the client can only send
/// less, which a 400 does not say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_cap_is_413() {
    let h = Harness::new(Backend::Sqlite).await;
    let huge = serde_json::json!({ "name": "n".repeat(3 << 20) }).to_string();
    for (method, path) in [
        (Method::PUT, "/v1/tenants/acme"),
        (Method::POST, "/v1/tenants/acme/resync"),
        (Method::POST, "/v1/tenants/acme/directory-sources/cnam/test"),
    ] {
        for role in ["global", "acme-admin"] {
            let reply = h
                .call(Some(role), method.clone(), path, Some(&huge), &[])
                .await;
            assert_eq!(
                reply.status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{role} {path}: {}",
                reply.text
            );
            assert_eq!(
                reply.json()["error"]["code"],
                "too_large",
                "{role} {path}: {}",
                reply.text
            );
        }
    }
}

/// An object nested past what the export's file can carry back into an
/// import: one tenant's phone would have made the whole platform's export
/// fail to import. Refused on every object a tenant stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_nested_past_the_bound_are_refused() {
    let h = Harness::new(Backend::Sqlite).await;
    let nested = |levels: usize| -> serde_json::Value {
        let text = format!("{}1{}", "[".repeat(levels - 1), "]".repeat(levels - 1));
        serde_json::json!({ "a": serde_json::from_str::<serde_json::Value>(&text).unwrap() })
    };
    let phone = |variables: serde_json::Value| {
        serde_json::json!({ "tenant": "acme", "mac": "001565000099", "family": "yealink",
            "model": "T46S", "lines": [], "variables": variables })
        .to_string()
    };
    refused(
        &h,
        "acme-admin",
        Method::POST,
        "/v1/phones",
        &phone(nested(33)),
        "variables nests 33 levels deep; at most 32",
    )
    .await;
    let tenant = serde_json::json!({ "name": "Acme", "settings": nested(40) }).to_string();
    refused(
        &h,
        "acme-admin",
        Method::PUT,
        "/v1/tenants/acme",
        &tenant,
        "settings nests 40 levels deep",
    )
    .await;
    let fits = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/phones",
            Some(&phone(nested(32))),
            &[],
        )
        .await;
    assert!(fits.status.is_success(), "{}", fits.text);
}

//! `POST /v1/import` takes a platform's worth of phones in one body, so a
//! token that may not import is refused before any of it is read.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use dialtone_sync::Backend;
use futures::stream::{self, StreamExt};
use tower::ServiceExt;

use super::Harness;

/// A body that sends one MiB and then never ends.
fn endless() -> Body {
    let first = stream::once(async { Ok::<_, std::io::Error>(Bytes::from(vec![b'{'; 1 << 20])) });
    Body::from_stream(first.chain(stream::pending()))
}

fn import(h: &Harness, role: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/v1/import")
        .header("authorization", format!("Bearer {}", h.tokens[role]))
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_is_refused_before_the_body_is_read() {
    let h = Harness::new(Backend::Sqlite).await;
    for role in ["acme-admin", "acme-read"] {
        let reply = tokio::time::timeout(
            Duration::from_secs(60),
            h.app.clone().oneshot(import(&h, role, endless())),
        )
        .await
        .expect("answered without waiting for a body that never ends")
        .unwrap();
        assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{role}");
    }
}

/// The body's encoding is judged as a file's is by `dialtone import`: a
/// byte-order mark is no fault, UTF-16 is named as such, and text that is
/// not UTF-8 is placed by line and column (a CSV's by its cell), not by a
/// byte offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_body_is_read_as_a_file_is() {
    let h = Harness::new(Backend::Sqlite).await;
    let tenant = b"{\"tenants\": [{\"slug\": \"acme\", \"name\": \"Acme\"}]}\r\n";
    let with_bom = [b"\xef\xbb\xbf".as_slice(), tenant].concat();
    let (status, text) = send(&h, "application/json", with_bom).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    let (status, text) = send(
        &h,
        "application/json",
        b"{\"tenants\": [\n\"\xff\"]}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
    let error = &reply["error"]["details"]["errors"][0];
    assert_eq!(
        (&error["line"], &error["column"]),
        (&2.into(), &2.into()),
        "{text}"
    );
    assert!(text.contains("not UTF-8 text"), "{text}");

    let csv = b"slug,name\nacme,Acme\nglobex,Glob\xe9x\n".to_vec();
    let (status, text) = send(&h, "text/csv", csv).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
    let error = &reply["error"]["details"]["errors"][0];
    assert_eq!(
        (&error["line"], &error["field"]),
        (&3.into(), &"name".into()),
        "{text}"
    );

    for (content_type, text) in [("text/csv", "slug\tname\r\n"), ("application/json", "{}")] {
        let mut utf16 = vec![0xff, 0xfe];
        utf16.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let (status, reply) = send(&h, content_type, utf16).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        assert!(
            reply.contains("UTF-16 text: save the file as CSV UTF-8"),
            "{reply}"
        );
    }
}

/// `body` sent as `content_type` by a global admin: the status and reply.
async fn send(h: &Harness, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/import")
        .header("authorization", format!("Bearer {}", h.tokens["global"]))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let reply = h.app.clone().oneshot(request).await.unwrap();
    let status = reply.status();
    let bytes = axum::body::to_bytes(reply.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A number a spreadsheet mangled is refused alike by the import and by
/// the API's own writes, with its remedy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spreadsheets_numbers_are_refused_by_every_writer() {
    let h = Harness::new(Backend::Sqlite).await;
    let csv = "tenant,name,work\nacme,Alice,\"15,551,234,567\"\n";
    let (status, text) = import_csv(&h, csv).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("grouped in thousands"), "{text}");

    let entry = serde_json::json!({"external_id": "a1", "name": "Alice", "numbers": [{"number": "4.47701E+11", "kind": "work"}]});
    let reply = h
        .call(
            Some("acme-admin"),
            Method::POST,
            "/v1/tenants/acme/directory",
            Some(&entry.to_string()),
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
        reply.text.contains("format the column as text"),
        "{}",
        reply.text
    );

    let phone = serde_json::json!({
        "tenant": "acme", "family": "yealink",
        "lines": [{"extension": "101", "auth_user": "4.47701E+11", "registrar": "sip.example.net"}],
    });
    let path = format!("/v1/phones/{}", super::ACME_MAC);
    let reply = h
        .call(
            Some("acme-admin"),
            Method::PUT,
            &path,
            Some(&phone.to_string()),
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
            .contains("auth_user: \\\"4.47701E+11\\\" looks like"),
        "{}",
        reply.text
    );
}

/// `text` as a CSV import, as a global admin: the status and the reply.
async fn import_csv(h: &Harness, text: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/import")
        .header("authorization", format!("Bearer {}", h.tokens["global"]))
        .header("content-type", "text/csv")
        .body(Body::from(text.to_string()))
        .unwrap();
    let reply = h.app.clone().oneshot(request).await.unwrap();
    let status = reply.status();
    let bytes = axum::body::to_bytes(reply.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A tenants CSV of `slug,name` renames: the tenant's settings and region
/// are kept as this node's mirror holds them, and a row the tenants API
/// would refuse is refused here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renaming_tenants_csv_keeps_settings_and_region() {
    let h = Harness::new(Backend::Sqlite).await;
    let region = serde_json::json!({ "name": "acme Inc", "default_region": "GB" });
    let reply = h.put_acme("global", region).await;
    assert!(reply.status.is_success(), "{}", reply.text);

    let (status, text) = import_csv(&h, "slug,name\nacme,Acme Renamed\n").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let view: serde_json::Value =
        serde_json::from_str(&h.get("global", "/v1/tenants/acme").await.text).unwrap();
    assert_eq!(view["name"], "Acme Renamed");
    assert_eq!(view["default_region"], "GB");
    assert_eq!(
        view["settings"],
        serde_json::json!({ "sip_domains": ["sip.example.net"] })
    );

    let (status, text) = import_csv(&h, "slug,name\nacme,\"Acme\u{202e}\"\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("tenant name holds U+202E"), "{text}");
}

/// `?replace_directory=true` deletes the entries of each tenant the
/// document has entries for that it leaves out, as `dialtone import
/// --replace-directory` does; a tenant it has none of keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_may_replace_the_directories_it_holds() {
    let h = Harness::new(Backend::Sqlite).await;
    let entry = |tenant: &str, id: &str, name: &str| {
        format!(
            r#"{{"tenant": "{tenant}", "external_id": "{id}", "name": "{name}", "numbers": [{{"number": "+1 212 555 01{id}"}}]}}"#
        )
    };
    let first = format!(
        r#"{{"directory": [{}, {}, {}]}}"#,
        entry("acme", "11", "Alice"),
        entry("acme", "12", "Bob"),
        entry("globex", "19", "Gina")
    );
    let reply = h
        .call(
            Some("global"),
            Method::POST,
            "/v1/import",
            Some(&first),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let state = h.mirror.load();
    let names = |state: &dialtone_sync::MirrorState, slug: &str| {
        let tenant = state.tenant_by_slug(slug).unwrap();
        let mut names: Vec<String> = state
            .directory_of(tenant.id)
            .iter()
            .map(|e| e.name.to_string())
            .collect();
        names.sort();
        names
    };
    // The harness's own entries are acme's and globex's too.
    let (acme_before, globex_before) = (names(&state, "acme"), names(&state, "globex"));
    assert!(acme_before.len() > 2 && globex_before.contains(&"Gina".to_string()));
    let again = format!(r#"{{"directory": [{}]}}"#, entry("acme", "11", "Alice"));
    let import =
        |query: &'static str| h.call(Some("global"), Method::POST, query, Some(&again), &[]);
    // All of acme's but Alice is more than the half a replacement may
    // delete unless told: refused, nothing written.
    let reply = import("/v1/import?replace_directory=true").await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(
        reply.text.contains("would delete") && reply.text.contains("max_deleted_percent"),
        "{}",
        reply.text
    );
    assert_eq!(names(&h.mirror.load(), "acme"), acme_before);
    for (query, says) in [
        (
            "/v1/import?replace_directory=true&max_deleted_percent=101",
            "from 0 to 100",
        ),
        (
            "/v1/import?max_deleted_percent=100",
            "goes with replace_directory=true",
        ),
    ] {
        let reply = import(query).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.text
        );
        assert!(reply.text.contains(says), "{query}: {}", reply.text);
    }
    let reply = import("/v1/import?replace_directory=true&max_deleted_percent=100").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let answer = reply.json();
    assert_eq!(answer["replaced_directories"], serde_json::json!(["acme"]));
    assert_eq!(
        answer["written"]["directory_entries"]["deleted"],
        acme_before.len() - 1,
        "{answer}"
    );
    let state = h.mirror.load();
    assert_eq!(names(&state, "acme"), ["Alice"]);
    assert_eq!(names(&state, "globex"), globex_before);
}

/// The answer carries the import's warnings, each naming its line: a
/// number listed by entries that share neither a name nor a company is
/// written, and said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_answers_its_warnings() {
    let h = Harness::new(Backend::Sqlite).await;
    let (status, text) = import_csv(
        &h,
        "tenant,external_id,name,company,work\n\
         acme,h1,John Smith,,+1 212 555 0177\n\
         acme,h2,Jane Smith,,+1 212 555 0177\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let warnings = answer["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{answer}");
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.starts_with("request:2: \"+1 212 555 0177\" is listed by 2 entries of tenant acme"),
        "{warning}"
    );
    let (status, text) = import_csv(
        &h,
        "tenant,external_id,name,company,work\nacme,h3,Alone,,+1 212 555 0178\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("\"warnings\":[]"), "{text}");
}

//! The generated OpenAPI document: served without a token, 3.x, every
//! route of the router in it, every `$ref` resolvable, every operation
//! secured and with its error responses.

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;
use serde_json::Value;

use super::Harness;

pub(super) const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/tenants", &["get", "post"]),
    ("/v1/tenants/{slug}", &["get", "put", "delete"]),
    ("/v1/tenants/{slug}/fleet", &["get"]),
    ("/v1/phones", &["get", "post"]),
    ("/v1/phones/{mac}", &["get", "put", "delete"]),
    ("/v1/phones/{mac}/history", &["get"]),
    ("/v1/phones/{mac}/files", &["get"]),
    ("/v1/phones/{mac}/resync", &["post"]),
    ("/v1/phones/{mac}/replace", &["post"]),
    ("/v1/tenants/{slug}/resync", &["post"]),
    ("/v1/resyncs", &["get"]),
    ("/v1/templates", &["get", "post"]),
    ("/v1/templates/validate", &["post"]),
    ("/v1/shipped-templates", &["get"]),
    ("/v1/shipped-templates/{family}/{file_pattern}", &["get"]),
    ("/v1/templates/{id}", &["get", "put", "delete"]),
    ("/v1/templates/{id}/versions", &["get"]),
    ("/v1/templates/{id}/versions/{version}", &["get"]),
    ("/v1/templates/{id}/diff", &["get"]),
    ("/v1/templates/{id}/phones", &["get"]),
    ("/v1/templates/{id}/rollback", &["post"]),
    ("/v1/preview", &["post"]),
    ("/v1/tenants/{slug}/directory", &["get", "post"]),
    (
        "/v1/tenants/{slug}/directory/{external_id}",
        &["get", "put", "delete"],
    ),
    ("/v1/tenants/{slug}/directory-sources", &["get", "post"]),
    (
        "/v1/tenants/{slug}/directory-sources/{name}",
        &["get", "put", "delete"],
    ),
    (
        "/v1/tenants/{slug}/directory-sources/{name}/test",
        &["post"],
    ),
    ("/v1/tokens", &["get", "post"]),
    ("/v1/whoami", &["get"]),
    ("/v1/tokens/{id}", &["delete"]),
    ("/v1/audit", &["get"]),
    ("/v1/import", &["post"]),
    ("/v1/tenants/{slug}/unclaimed", &["get"]),
    ("/v1/tenants/{slug}/unclaimed/{mac}/claim", &["post"]),
    ("/v1/unclaimed", &["get"]),
    ("/v1/unclaimed/counts", &["get"]),
    ("/v1/bans", &["get"]),
    ("/v1/bans/{source}", &["delete"]),
];

fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_every_route_and_resolves() {
    let h = Harness::new(Backend::Sqlite).await;
    let reply = h.call(None, Method::GET, "/openapi.json", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "application/json"
    );
    let doc = reply.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in ROUTES {
        for method in *methods {
            let op = &paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is not documented"))[*method];
            assert!(op.is_object(), "{method} {path} is not documented");
            assert!(op["security"].is_array(), "{method} {path} has no security");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path}: no success response"
            );
            // Every parameter in the path template is declared.
            for name in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{'))
                .map(|s| s.trim_end_matches('}'))
            {
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} undeclared"
                );
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    path_parameter_agrees_with_the_server(&format!("{method} {path}"), p);
                }
            }
            // And every declared path parameter is in the template: one
            // that is not (a query struct without `parameter_in = Query`)
            // makes the document invalid, and clients cannot call it.
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    let name = p["name"].as_str().unwrap_or_default();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: declares path parameter {name}, not in the path"
                    );
                }
            }
        }
    }
    assert_eq!(
        paths.len(),
        ROUTES.len(),
        "documented paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "$ref {r} does not resolve"
        );
    }
}

/// Every operation lists the refusals any of its calls can meet, each in
/// the API's error shape: a token's (401 none or a bad one, 403 a lookup
/// token or one whose scope falls short), a body's (408 a tenant's that
/// did not arrive in time, 413 one past the cap) and, where the route
/// waits on the database, a busy or failing database's (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_the_refusals_it_can_meet() {
    let h = Harness::new(Backend::Sqlite).await;
    let doc = h
        .call(None, Method::GET, "/openapi.json", None, &[])
        .await
        .json();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let name = format!("{method} {path}");
            let responses = &op["responses"];
            let lists = |status: &str| responses[status].is_object();
            let bearer = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            if bearer {
                assert!(lists("401") && lists("403"), "{name}: {responses}");
            }
            if op["requestBody"].is_object() {
                assert!(lists("408") && lists("413"), "{name}: {responses}");
            }
            // A route in the database's router: its share's 429 says so.
            // The render pool's 503s are checked in `render_busy.rs`.
            let uses_database = responses["429"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("database"));
            if uses_database {
                assert!(lists("503"), "{name}: {responses}");
            }
            for (status, response) in responses.as_object().expect("responses") {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{name}: {status}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        ROUTES
            .iter()
            .map(|(_, methods)| methods.len())
            .sum::<usize>()
    );
}

/// The document's 429s are the router's: with every place the node gives
/// tenants taken, a tenant's call to each route is refused `busy` exactly
/// where the document says it can be, with its `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_that_use_the_database_document_their_429() {
    let h = Harness::new(Backend::Sqlite).await;
    let doc = h
        .call(None, Method::GET, "/openapi.json", None, &[])
        .await
        .json();
    // Other tenants' places, not acme's: acme is within its own share.
    let held: Vec<_> = (1_000_000..1_000_100)
        .map_while(|tenant| h.database_share.admit(tenant).ok())
        .collect();
    assert!(
        !held.is_empty() && held.len() < 100,
        "{} places",
        held.len()
    );
    let mut refused = 0;
    for (path, methods) in ROUTES {
        let concrete = path
            .replace("{slug}", "acme")
            .replace("{mac}", super::ACME_MAC)
            .replace("{id}", "{acme_template}")
            .replace("{version}", "1")
            .replace("{external_id}", "e1")
            .replace("{name}", "cnam")
            .replace("{family}", "yealink")
            .replace("{file_pattern}", "x.cfg");
        for method in *methods {
            // The share's 429, told from a handler's own (a source test's).
            let documented = doc["paths"][*path][*method]["responses"]
                .get("429")
                .filter(|r| {
                    r["description"]
                        .as_str()
                        .is_some_and(|d| d.contains("database"))
                })
                .cloned();
            let body = (*method != "get" && *method != "delete").then_some("{}");
            let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = h.call(Some("acme-admin"), verb, &concrete, body, &[]).await;
            let busy = reply.status == StatusCode::TOO_MANY_REQUESTS;
            assert_eq!(
                busy,
                documented.is_some(),
                "{method} {path}: answered {}, 429 documented: {documented:?}",
                reply.status
            );
            if let Some(response) = documented {
                refused += 1;
                assert_eq!(reply.json()["error"]["code"], "busy", "{}", reply.text);
                assert!(reply.headers.contains_key("retry-after"), "{method} {path}");
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{method} {path}: {response}"
                );
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path}"
                );
                // And what the share's layer answers a tenant's body it
                // reads first.
                let responses = &doc["paths"][*path][*method]["responses"];
                assert!(
                    responses["408"].is_object() && responses["413"].is_object(),
                    "{method} {path}: {responses}"
                );
            }
        }
    }
    assert!(refused > 20, "only {refused} routes use the database");
    drop(held);
}

/// The admin page is served with a CSP that forbids inline script, and has
/// none: every script and style comes from /ui/ itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_forbids_inline_script() {
    let h = Harness::new(Backend::Sqlite).await;
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/fleet.js", "text/javascript"),
        ("/ui/templates.js", "text/javascript"),
        ("/ui/resync.js", "text/javascript"),
        ("/ui/unclaimed.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let reply = h.call(None, Method::GET, path, None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    let page = h.call(None, Method::GET, "/ui/", None, &[]).await.text;
    let scripts: Vec<&str> = page.split("<script").skip(1).collect();
    assert!(
        !scripts.is_empty() && scripts.iter().all(|s| s.trim_start().starts_with("src=")),
        "inline script in the page"
    );
    assert!(
        !page.contains("onclick=") && !page.contains("onload="),
        "inline handlers"
    );
    let redirect = h.call(None, Method::GET, "/ui", None, &[]).await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
}

/// A path parameter's declared format accepts every value the server
/// does (a client that checks the document never refuses a good value),
/// and a slug's is exactly the server's rule; ids start at 1. A route that
/// leaves the format out fails here too.
fn path_parameter_agrees_with_the_server(op: &str, parameter: &Value) {
    let schema = &parameter["schema"];
    let pattern = || {
        let text = schema["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{op}: {} has no pattern", parameter["name"]));
        regex::Regex::new(text).unwrap()
    };
    match parameter["name"].as_str().unwrap_or_default() {
        "slug" => {
            let pattern = pattern();
            let long = "a".repeat(63);
            let too_long = "a".repeat(64);
            for sample in [
                "demo", "a", "0", "a-", "a-b-9", &long, &too_long, "-a", "A", "a_b", "a b", "é", "",
            ] {
                assert_eq!(
                    pattern.is_match(sample),
                    crate::admin::tenants::check_slug(sample).is_ok(),
                    "{op}: slug {sample:?}"
                );
            }
        }
        "mac" => {
            let pattern = pattern();
            for sample in [
                "0015654aa937",
                "00:15:65:4A:A9:37",
                "00-15-65-4a-a9-37",
                "0015.654a.a937",
                "0015654aa93",
                "0015654aa9377",
                "zz15654aa937",
                "../../etc/passwd",
            ] {
                if sample.parse::<dialtone_sync::Mac>().is_ok() {
                    assert!(pattern.is_match(sample), "{op}: MAC {sample:?}");
                }
            }
            assert!(!pattern.is_match("../../etc/passwd"), "{op}");
        }
        "id" | "version" => assert_eq!(schema["minimum"], 1, "{op}: {}", parameter["name"]),
        "name" => assert_eq!(schema["maxLength"], 64, "{op}: name"),
        _ => {}
    }
}

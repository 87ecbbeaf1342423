//! The admin page in a real browser: Debian's Chromium, headless, driven by
//! playwright-core (tests/ui/admin_page.mjs) against `dialtone serve
//! --demo`. scripts/test installs Chromium and playwright-core and sets
//! DIALTONE_TEST_UI_DIR; screenshots land in a folder of each run's own
//! under target/ui-artifacts/ (tests/common/browser.rs).

mod common;

use common::browser::{artifacts_dir, BrowserScript};
use common::*;
use serde_json::{json, Value};

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> Value {
    let response = client
        .request(method, url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// A phone's SIP side: `aor` registered with the test Kamailio, and every
/// request relayed to it (a resync's NOTIFY) answered with 200 OK, echoing
/// the headers the sender matches the answer by. Lives as long as the test.
fn registered_phone(aor: &str) {
    let socket = common::sip::register(aor);
    socket.set_read_timeout(None).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            if request.starts_with("SIP/2.0") {
                continue;
            }
            let mut answer = String::from("SIP/2.0 200 OK\r\n");
            for line in request.split("\r\n").take_while(|l| !l.is_empty()) {
                let name = line
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"]
                    .contains(&name.as_str())
                {
                    answer.push_str(line);
                    answer.push_str("\r\n");
                }
            }
            answer.push_str("Content-Length: 0\r\n\r\n");
            let _ = socket.send_to(answer.as_bytes(), from);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_edits_previews_saves_and_rolls_back_a_template() {
    let script = BrowserScript::new("admin_page.mjs");
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // Resyncs go through the test Kamailio to the demo phones registered
    // below, so the page's resync table shows real answers.
    let proxy_addr = common::sip::proxy().to_string();
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &[
            ("DIALTONE_RESYNC__PROXY", &proxy_addr),
            ("DIALTONE_RESYNC__LISTEN", "127.0.0.1:0"),
            ("DIALTONE_RESYNC__T1_MS", "50"),
            ("DIALTONE_RESYNC__T2_MS", "200"),
        ],
    );
    let token = create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "browser"],
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let api = format!("http://{}", server.addr);
    let mut tenants = Value::Null;
    for _ in 0..200 {
        let reply = client
            .get(format!("{api}/v1/tenants"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if reply.status() == 200 {
            tenants = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(tenants.is_object(), "the token never reached the API");
    let phones = call(
        &client,
        reqwest::Method::GET,
        format!("{api}/v1/phones?tenant=demo&limit=1000"),
        &token,
        Value::Null,
    )
    .await;
    for phone in phones["items"].as_array().unwrap() {
        if let Some(line) = phone["lines"].as_array().and_then(|l| l.first()) {
            let (ext, registrar) = (&line["extension"], &line["registrar"]);
            registered_phone(&format!(
                "{}@{}",
                ext.as_str().unwrap(),
                registrar.as_str().unwrap()
            ));
        }
    }

    // A second tenant with its own phone, template and admin. (The page
    // itself creates the demo tenant's Yealink template.)
    let post = reqwest::Method::POST;
    call(
        &client,
        post.clone(),
        format!("{api}/v1/tenants"),
        &token,
        json!({ "slug": "other", "name": "other tenant" }),
    )
    .await;
    call(&client, post.clone(), format!("{api}/v1/phones"), &token, json!({
        "mac": "001565bb0001", "tenant": "other", "family": "yealink", "model": "T46S", "label": "other lobby",
        "lines": [{ "extension": "700", "display_name": "other desk", "registrar": "sip.example.net" }],
    }))
    .await;
    call(&client, post.clone(), format!("{api}/v1/templates"), &token, json!({
        "scope": "tenant", "tenant": "other", "family": "yealink", "file_pattern": "{mac}.cfg", "body": "# other\n",
    }))
    .await;
    // A source that fails fast (nothing listens on port 9): its test
    // reports the error and the time it took.
    call(&client, post.clone(), format!("{api}/v1/tenants/demo/directory-sources"), &token, json!({
        "name": "cnam", "kind": "http", "timeout_ms": 500, "settings": { "url": "http://127.0.0.1:9/{e164}" },
    }))
    .await;
    // A mirrored source that never syncs: the page shows its (empty) copy.
    call(&client, post.clone(), format!("{api}/v1/tenants/demo/directory-sources"), &token, json!({
        "name": "ad", "kind": "ldap", "timeout_ms": 500,
        "settings": { "url": "ldap://127.0.0.1:9/", "base_dn": "dc=example,dc=com", "mode": "mirror" },
    }))
    .await;
    let tenant_token = call(
        &client,
        post.clone(),
        format!("{api}/v1/tokens"),
        &token,
        json!({
            "name": "other admin", "scope": "tenant-admin", "tenant": "other",
        }),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let read_token = call(
        &client,
        post,
        format!("{api}/v1/tokens"),
        &token,
        json!({
            "name": "other reader", "scope": "tenant-read", "tenant": "other",
        }),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();

    let artifacts = artifacts_dir("admin_page");
    eprintln!("screenshots in {}", artifacts.display());
    let mut node = script.command();
    node.env("UI_API", &api)
        .env("UI_PROVISIONING", format!("http://{}", server.prov_addr))
        .env("UI_TOKEN", &token)
        .env("UI_TENANT_TOKEN", &tenant_token)
        .env("UI_READ_TOKEN", &read_token)
        .env("UI_MAC", "0015654aa937")
        .env("UI_ARTIFACTS", &artifacts);
    let out = run(node);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("{log}");
    assert!(out.status.success(), "the browser run failed:\n{log}");
    for shot in [
        "editor.png",
        "editor-error.png",
        "preview.png",
        "phone.png",
        "directory.png",
        "tenant-view.png",
        "fleet.png",
        "resync-offer.png",
        "resyncs.png",
    ] {
        let path = artifacts.join(shot);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
            "missing screenshot {}",
            path.display()
        );
    }
    assert!(!server.stderr().contains(&token), "the token was logged");
    assert_eq!(server.stop(), 0);
}

/// More tenants than one page of `/v1/tenants` (100 by default): every
/// tenant picker (Directory, Fleet, Unclaimed) offers the last one, the
/// unclaimed view does not ask for every tenant's list on load and checks
/// every tenant in one request and names tenants with their slugs, a
/// template address that is not a number (a phone's that is not a MAC)
/// makes no request at all, the
/// resyncs poll stops asking once the fleet view is left, and the
/// templates list shows every tenant template, not the first page
/// (tests/ui/tenant_pickers.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_picks_a_tenant_past_the_first_page() {
    const TENANTS: usize = 150;
    let script = BrowserScript::new("tenant_pickers.mjs");
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let slug = |n: usize| format!("t{n:03}");
    let name = |n: usize| format!("Company {n:03}");
    let last = TENANTS - 1;
    // The last tenant by slug provisions from 127.0.0.1, where the test's
    // unknown phone fetches from, and has a phone and a directory entry.
    let tenants: Vec<Value> = (0..TENANTS)
        .map(|n| {
            let mut t = json!({ "slug": slug(n), "name": name(n), "default_region": "US" });
            if n == last {
                t["settings"] = json!({ "provisioning_networks": ["127.0.0.1/32"] });
            }
            t
        })
        .collect();
    let data = json!({
        "tenants": tenants,
        "phones": [{
            "tenant": slug(last), "mac": "001565cc0149", "family": "yealink", "model": "T46S",
            "lines": [{ "extension": "149", "registrar": "sip.example.net" }],
        }],
        "directory": [{
            "tenant": slug(last), "name": "Zed Lastentry", "numbers": [{ "number": "+15550100149" }],
        }],
    });
    let file = write_file(dir.path(), "tenants.json", &data.to_string());
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&file);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "browser"],
    );
    // Resync configured (through the test proxy), so the fleet view polls
    // the resyncs table the test watches stop.
    let proxy_addr = common::sip::proxy().to_string();
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[
            ("DIALTONE_RESYNC__PROXY", &proxy_addr),
            ("DIALTONE_RESYNC__LISTEN", "127.0.0.1:0"),
        ],
    );
    let api = Api::new(server.addr, token.clone());

    // One tenant-scope template per tenant: more than one page of
    // /v1/templates, the last one (by id) the last tenant's.
    for n in 0..TENANTS {
        let template = json!({
            "scope": "tenant", "tenant": slug(n), "family": "yealink",
            "file_pattern": "{mac}.cfg", "body": format!("# {}\n", slug(n)),
        });
        let (status, _, body) = api
            .send(reqwest::Method::POST, "/v1/templates", Some(template), None)
            .await;
        assert_eq!(status, 201, "{body}");
    }

    // An unknown phone asks for its file from the last tenant's network.
    let unclaimed = "001565dd0149";
    let reply = reqwest::Client::new()
        .get(format!("http://{}/{unclaimed}.cfg", server.prov_addr))
        .header(
            "user-agent",
            "Yealink SIP-T46U 108.86.0.20 00:15:65:dd:01:49",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    let listed = format!("/v1/tenants/{}/unclaimed", slug(last));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (status, _, body) = api.send(reqwest::Method::GET, &listed, None, None).await;
        assert_eq!(status, 200, "{body}");
        if body["devices"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the unknown phone was never listed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let mut node = script.command();
    node.env("UI_API", format!("http://{}", server.addr))
        .env("UI_TOKEN", &token)
        .env("UI_TENANTS", TENANTS.to_string())
        .env("UI_LAST", slug(last))
        .env("UI_LAST_NAME", name(last))
        .env("UI_LAST_ENTRY", "Zed Lastentry")
        .env("UI_UNCLAIMED_MAC", unclaimed);
    let out = run(node);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("{log}");
    assert!(out.status.success(), "the browser run failed:\n{log}");
    assert!(!server.stderr().contains(&token), "the token was logged");
    assert_eq!(server.stop(), 0);
}

/// The page when requests fail (tests/ui/failures.mjs): a part read from
/// the database that is refused says so while the rest of its view works,
/// a write answered 202 counts as done, a refused token brings back the
/// log-in form and keeps it, and a slow view never covers a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_survives_failed_requests() {
    let script = BrowserScript::new("failures.mjs");
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mac = "001565ee0001";
    let data = json!({
        "tenants": [{ "slug": "acme", "name": "Acme", "default_region": "US" }],
        "phones": [{
            "tenant": "acme", "mac": mac, "family": "yealink", "model": "T46S",
            "lines": [{ "extension": "201", "registrar": "sip.example.net" }],
        }],
    });
    let file = write_file(dir.path(), "import.json", &data.to_string());
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&file);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "browser"],
    );
    // Unknown phones are listed even outside every tenant's networks: the
    // page claims one from the unassigned list.
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[("DIALTONE_PROVISIONING__RECORD_UNCLAIMED_ANYWHERE", "true")],
    );
    let api = Api::new(server.addr, token.clone());
    let (status, _, template) = api
        .send(
            reqwest::Method::POST,
            "/v1/templates",
            Some(json!({
                "scope": "tenant", "tenant": "acme", "family": "yealink",
                "file_pattern": "{mac}.cfg", "body": "# acme\n",
            })),
            None,
        )
        .await;
    assert_eq!(status, 201, "{template}");
    // A second token, revoked by the script while the page holds it.
    let (status, _, doomed) = api
        .send(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(json!({ "name": "doomed", "scope": "global-admin" })),
            None,
        )
        .await;
    assert_eq!(status, 201, "{doomed}");

    let unclaimed = "001565ee0099";
    let reply = reqwest::Client::new()
        .get(format!("http://{}/{unclaimed}.cfg", server.prov_addr))
        .header(
            "user-agent",
            "Yealink SIP-T46U 108.86.0.20 00:15:65:ee:00:99",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (status, _, body) = api
            .send(reqwest::Method::GET, "/v1/unclaimed", None, None)
            .await;
        assert_eq!(status, 200, "{body}");
        if body["devices"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the unknown phone was never listed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let mut node = script.command();
    node.env("UI_API", format!("http://{}", server.addr))
        .env("UI_TOKEN", &token)
        .env("UI_DOOMED", doomed["token"].as_str().unwrap())
        .env("UI_DOOMED_ID", doomed["id"].to_string())
        .env("UI_TEMPLATE", template["id"].to_string())
        .env("UI_MAC", mac)
        .env("UI_UNCLAIMED_MAC", unclaimed);
    let out = run(node);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("{log}");
    assert!(out.status.success(), "the browser run failed:\n{log}");
    assert!(!server.stderr().contains(&token), "the token was logged");
    assert_eq!(server.stop(), 0);
}

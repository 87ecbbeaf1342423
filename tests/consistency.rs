//! An edit reaches every phone on every node: phones of a tenant are fetched
//! continuously over TFTP and HTTP while edits land through the admin API
//! (templates at every scope, phones, lines, tenant settings); once the
//! edits stop and the nodes catch up, every file of every phone on every
//! node must equal, byte for byte, `dialtone render --all` from the
//! database. Several short rounds, on SQLite with one node and on
//! PostgreSQL with two. The render self-check runs fast throughout and must
//! find nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::{Family, Mac};
use reqwest::Method;
use serde_json::{json, Value};

/// Each round: edits of every kind in turn, then a burst of one kind while
/// the fetchers ask only for the files it changes (the last edit of a file
/// racing its renders is what leaves a stale entry behind).
const MIXED: Duration = Duration::from_millis(1500);
const BURST: Duration = Duration::from_millis(1000);
/// Templates build URLs from it: the same for every node and for `render`.
const BASE_URL: &str = "http://prov.example.net";

/// One phone as the test knows it.
#[derive(Clone)]
struct TestPhone {
    tenant: &'static str,
    mac: Mac,
    family: Family,
    model: &'static str,
}

fn fleet() -> Vec<TestPhone> {
    let mut phones = Vec::new();
    let mut add = |tenant, oui: &str, n: u32, family, model| {
        phones.push(TestPhone {
            tenant,
            mac: format!("{oui}{:06x}", 0x100000 + n).parse().unwrap(),
            family,
            model,
        })
    };
    for n in 0..12 {
        add("acme", "001565", n, Family::Yealink, "T46S");
    }
    for n in 0..6 {
        add("acme", "0004f2", n, Family::Poly, "VVX450");
        add("acme", "0062ec", n, Family::CiscoMpp, "CP-8851-3PCC");
    }
    for n in 0..3 {
        add("other", "001565", 100 + n, Family::Yealink, "T46S");
        add("other", "001565", 200 + n, Family::Yealink, "T54W");
    }
    phones
}

fn fleet_csv(phones: &[TestPhone]) -> String {
    let mut csv =
        String::from("tenant,mac,family,model,line,extension,display_name,password,registrar\n");
    for (i, p) in phones.iter().enumerate() {
        for line in 1..=2 {
            csv.push_str(&format!(
                "{},{},{},{},{line},{},Desk {i}-{line},pw-{i}-{line},sip.example.net\n",
                p.tenant,
                p.mac,
                p.family,
                p.model,
                1000 + i * 10 + line
            ));
        }
    }
    csv
}

/// A body every kind of edit shows up in.
fn body(family: Family, what: &str, n: usize) -> String {
    let lines =
        "{% for line in lines %}line.{{ line.position }} = {{ line.display_name }}\n{% endfor %}";
    let rest =
        "label = {{ phone.label }}\nntp = {{ settings.ntp_server }}\ntenant = {{ tenant.name }}\n";
    match family {
        Family::Yealink => format!("#!version:1.0.0.1\n# {what} edit {n}\n{lines}{rest}"),
        _ => format!("<!-- {what} edit {n} -->\n<x>\n{lines}{rest}</x>\n"),
    }
}

struct Template {
    id: i64,
    etag: String,
    family: Family,
    what: &'static str,
}

/// The edits of one round, through the admin API, one after another.
struct Editor<'a> {
    api: &'a Api,
    templates: Vec<Template>,
    phones: Vec<TestPhone>,
    count: usize,
}

/// Kinds of edit beyond the templates (which come first, in creation order).
const PHONE_EDIT: usize = 6;
const TENANT_EDIT: usize = 7;

impl Editor<'_> {
    /// Templates (family, model, tenant, phone, poly-tenant, mpp-model),
    /// then a phone, the tenant, a phone's lines.
    fn kinds(&self) -> usize {
        self.templates.len() + 3
    }

    async fn create_templates(&mut self, first_yealink: Mac) {
        let y = "yealink";
        for (what, family, pattern, extra) in [
            ("family", y, "{mac}.cfg", json!({})),
            ("model", y, "{mac}.cfg", json!({ "model": "T46S" })),
            ("tenant", y, "{mac}.cfg", json!({ "tenant": "acme" })),
            (
                "phone",
                y,
                "{mac}.cfg",
                json!({ "mac": first_yealink.to_string() }),
            ),
            (
                "poly-tenant",
                "poly",
                "{mac}-phone.cfg",
                json!({ "tenant": "acme" }),
            ),
            (
                "mpp-model",
                "cisco-mpp",
                "{mac}.xml",
                json!({ "model": "CP-8851-3PCC" }),
            ),
        ] {
            let family: Family = family.parse().unwrap();
            let scope = what.rsplit('-').next().unwrap();
            let mut request = json!({
                "scope": scope, "family": family.to_string(), "file_pattern": pattern,
                "body": body(family, what, 0),
            });
            request
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let (status, etag, created) = self
                .api
                .send_past_busy(Method::POST, "/v1/templates", Some(request), None)
                .await;
            assert_eq!(status, 201, "{what}: {created}");
            self.templates.push(Template {
                id: created["id"].as_i64().unwrap(),
                etag,
                family,
                what,
            });
        }
    }

    /// One edit: of `kind` (see [`Editor::kinds`]), or of the next kind in
    /// turn.
    async fn edit(&mut self, kind: Option<usize>) {
        self.count += 1;
        let n = self.count;
        let kinds = self.kinds();
        // A burst edits one phone over and over; mixed edits go round.
        let phone_index = if kind.is_some() { 1 } else { n / kinds };
        match kind.unwrap_or(n % kinds) {
            k if k < self.templates.len() => {
                let t = &mut self.templates[k];
                let (status, etag, answer) = self
                    .api
                    .send_past_busy(
                        Method::PUT,
                        &format!("/v1/templates/{}", t.id),
                        Some(json!({ "body": body(t.family, t.what, n) })),
                        Some(&t.etag),
                    )
                    .await;
                assert_eq!(status, 200, "template {}: {answer}", t.what);
                t.etag = etag;
            }
            k if k == self.templates.len() => {
                // A phone: its label, a line's name, and the number of lines.
                let phone = &self.phones[phone_index % self.phones.len()];
                let lines: Vec<Value> = (1..=1 + n % 2)
                    .map(|line| {
                        json!({ "extension": format!("{}{line}", 7000 + n % 100),
                                "display_name": format!("Edited {n}-{line}"),
                                "registrar": "sip.example.net" })
                    })
                    .collect();
                let (status, _, answer) = self
                    .api
                    .send_past_busy(
                        Method::PUT,
                        &format!("/v1/phones/{}", phone.mac),
                        Some(json!({
                            "tenant": phone.tenant, "family": phone.family.to_string(),
                            "model": phone.model, "label": format!("label {n}"), "lines": lines,
                        })),
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "phone {}: {answer}", phone.mac);
            }
            k if k == self.templates.len() + 1 => {
                let (status, _, answer) = self
                    .api
                    .send_past_busy(
                        Method::PUT,
                        "/v1/tenants/acme",
                        Some(json!({ "name": format!("Acme {n}"), "default_region": "US",
                                     "settings": { "ntp_server": format!("ntp{n}.example.net") } })),
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "tenant: {answer}");
            }
            _ => {
                // Only the phone's own line names: a change that touches
                // no template and no other phone.
                let phone = &self.phones[phone_index % self.phones.len()];
                let (status, _, mut view) = self
                    .api
                    .send_past_busy(
                        Method::GET,
                        &format!("/v1/phones/{}", phone.mac),
                        None,
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "{view}");
                let lines: Vec<Value> = view["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| {
                        json!({ "extension": l["extension"], "display_name": format!("Line {n}"),
                                "registrar": l["registrar"] })
                    })
                    .collect();
                let object = view.as_object_mut().unwrap();
                let update = json!({
                    "tenant": object["tenant"], "family": object["family"], "model": object["model"],
                    "label": object["label"], "lines": lines,
                });
                let (status, _, answer) = self
                    .api
                    .send_past_busy(
                        Method::PUT,
                        &format!("/v1/phones/{}", phone.mac),
                        Some(update),
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "lines of {}: {answer}", phone.mac);
            }
        }
    }
}

/// Fetches `files` over and over from one node until `stop`, over TFTP and
/// HTTP in turn; counts what it fetched.
fn fetch_loop(
    node: (std::net::SocketAddr, std::net::SocketAddr),
    files: Arc<std::sync::RwLock<Arc<Vec<String>>>>,
    offset: usize,
    stop: Arc<AtomicBool>,
    fetched: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (tftp, http) = node;
        let mut i = offset;
        // Bounded by the stop flag and a hard cap, whichever comes first.
        for _ in 0..1_000_000 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let list = files.read().unwrap().clone();
            let file = &list[i % list.len()];
            if i % 2 == 0 {
                tftp_get(tftp, file);
            } else {
                http_get(http, &format!("/{file}"));
            }
            fetched.fetch_add(1, Ordering::Relaxed);
            i += 7;
        }
    })
}

/// `phlem run` booting every phone of the database over TFTP, 100 at a
/// time, until dropped (at most 1,000 boots of each phone).
struct Storm(std::process::Child);

impl Storm {
    fn start(dir: &Path, url: &str, server: &Server) -> Storm {
        let mut cmd = dialtone(dir, url);
        cmd.args(["phlem", "run", "--phones", "database", "--repeat", "1000"])
            .args(["--concurrency", "100", "--quiet", "--target"])
            .arg(format!("tftp://{}", server.tftp_addr))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Storm(cmd.spawn().expect("spawn phlem"))
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file `render --all` wrote for `phones`, by name.
fn expected_files(
    dir: &Path,
    url: &str,
    out: &Path,
    phones: &[TestPhone],
) -> BTreeMap<String, Vec<u8>> {
    let mut cmd = dialtone(dir, url);
    cmd.args(["render", "--all", "--out"])
        .arg(out)
        .env("DIALTONE_PROVISIONING__TEMPLATES_DIR", templates_dir())
        .env("DIALTONE_PROVISIONING__BASE_URL", BASE_URL);
    let output = run(cmd);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut files = BTreeMap::new();
    for phone in phones {
        for name in dialtone_tftp::identify::file_names(phone.family, &phone.mac, Some(phone.model))
        {
            if let Ok(bytes) = std::fs::read(out.join(&name)) {
                files.insert(name, bytes);
            }
        }
    }
    files
}

fn first_difference(served: &[u8], expected: &[u8]) -> String {
    let served = String::from_utf8_lossy(served);
    let expected = String::from_utf8_lossy(expected);
    let line = served
        .lines()
        .zip(expected.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("served {a:?}, expected {b:?}"))
        .unwrap_or_else(|| format!("{} vs {} bytes", served.len(), expected.len()));
    line
}

async fn storm(db_url: &str, nodes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let phones = fleet();
    let tenants = write_file(
        dir.path(),
        "tenants.csv",
        "slug,name,default_region\nacme,Acme,US\nother,Other,GB\n",
    );
    let csv = write_file(dir.path(), "phones.csv", &fleet_csv(&phones));
    let mut cmd = dialtone(dir.path(), db_url);
    cmd.arg("import").arg(&tenants).arg(&csv);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let servers: Vec<Server> = (0..nodes)
        .map(|i| {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            Server::start_with_env(
                &node_dir,
                db_url,
                &[],
                &[
                    ("DIALTONE_PROVISIONING__RENDER_SELF_CHECK_PER_S", "200"),
                    ("DIALTONE_PROVISIONING__BASE_URL", BASE_URL),
                ],
            )
        })
        .collect();
    let token = create_token(
        dir.path(),
        db_url,
        &["--scope", "global-admin", "--name", "storm"],
    );
    let api = Api::new(servers[0].addr, token);
    assert!(
        wait_until(Duration::from_secs(10), || servers
            .iter()
            .all(|s| s.phones() == phones.len() as u64))
        .is_some(),
        "the nodes never saw the import"
    );
    // The token reached node A through the change log.
    for _ in 0..200 {
        if api.send(Method::GET, "/v1/tenants", None, None).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let acme: Vec<TestPhone> = phones
        .iter()
        .filter(|p| p.tenant == "acme")
        .cloned()
        .collect();
    let mut editor = Editor {
        api: &api,
        templates: Vec::new(),
        phones: acme.clone(),
        count: 0,
    };
    editor.create_templates(acme[0].mac).await;
    let acme_files: Vec<String> = acme
        .iter()
        .flat_map(|p| dialtone_tftp::identify::file_names(p.family, &p.mac, Some(p.model)))
        .collect();

    // Each burst and the files it changes.
    let files_of = |keep: &dyn Fn(&TestPhone, &str) -> bool| -> Arc<Vec<String>> {
        Arc::new(
            phones
                .iter()
                .flat_map(|p| {
                    dialtone_tftp::identify::file_names(p.family, &p.mac, Some(p.model))
                        .into_iter()
                        .filter(|name| keep(p, name))
                        .collect::<Vec<_>>()
                })
                .collect(),
        )
    };
    let device = |p: &TestPhone, name: &str| name.contains(&p.mac.to_string());
    let bursts: Vec<(&str, usize, Arc<Vec<String>>)> = vec![
        (
            "tenant template",
            2,
            files_of(&|p, n| {
                p.tenant == "acme"
                    && p.family == Family::Yealink
                    && p.mac != acme[0].mac
                    && device(p, n)
            }),
        ),
        (
            "tenant settings",
            TENANT_EDIT,
            files_of(&|p, n| p.tenant == "acme" && device(p, n)),
        ),
        (
            "phone",
            PHONE_EDIT,
            files_of(&|p, n| p.mac == acme[1].mac && device(p, n)),
        ),
        (
            "family template",
            0,
            files_of(&|p, n| p.model == "T54W" && device(p, n)),
        ),
        (
            "model template",
            5,
            files_of(&|p, n| p.family == Family::CiscoMpp && n.ends_with(".xml") && device(p, n)),
        ),
    ];

    let mut stale_total = 0;
    for (round, (burst, kind, focus)) in bursts.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let fetched = Arc::new(AtomicU64::new(0));
        let files = Arc::new(std::sync::RwLock::new(Arc::new(acme_files.clone())));
        let mut fetchers = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            for j in 0..3 {
                fetchers.push(fetch_loop(
                    (server.tftp_addr, server.prov_addr),
                    files.clone(),
                    i * 3 + j,
                    stop.clone(),
                    fetched.clone(),
                ));
            }
        }
        // A boot storm on each node, as phones rebooting after an outage
        // would make: renders under contention are what race the edits.
        let served = |servers: &[Server]| -> f64 {
            servers
                .iter()
                .map(|s| s.metric_sum("dialtone_provision_requests_total"))
                .sum()
        };
        let served_before = served(&servers);
        let storms: Vec<Storm> = servers
            .iter()
            .map(|s| Storm::start(dir.path(), db_url, s))
            .collect();
        let started = Instant::now();
        let edits_before = editor.count;
        while started.elapsed() < MIXED {
            editor.edit(None).await;
        }
        *files.write().unwrap() = focus.clone();
        let started = Instant::now();
        while started.elapsed() < BURST {
            editor.edit(Some(*kind)).await;
        }
        stop.store(true, Ordering::Relaxed);
        drop(storms);
        let served = served(&servers) - served_before;
        for f in fetchers {
            f.join().unwrap();
        }
        let edits = editor.count - edits_before;

        let out = dir.path().join(format!("render-{round}"));
        let expected = expected_files(dir.path(), db_url, &out, &phones);
        assert!(
            expected.len() > phones.len(),
            "render --all wrote {} files",
            expected.len()
        );
        // Node B catches up on its own: a file may be behind for a moment,
        // but a stale entry stays stale, so what still differs after the
        // catch-up deadline is stale.
        let mut pending: Vec<(usize, &str, &String)> = (0..servers.len())
            .flat_map(|i| {
                expected
                    .keys()
                    .flat_map(move |name| [(i, "tftp", name), (i, "http", name)])
            })
            .collect();
        let fetch = |(i, protocol, name): (usize, &str, &String)| -> Option<Vec<u8>> {
            let server = &servers[i];
            match protocol {
                "tftp" => tftp_get(server.tftp_addr, name),
                _ => http_get(server.prov_addr, &format!("/{name}")).map(|(_, b)| b.into_bytes()),
            }
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            pending.retain(|&target| fetch(target).as_ref() != Some(&expected[target.2]));
            if pending.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let stale: Vec<String> = pending
            .iter()
            .map(|&(i, protocol, name)| match fetch((i, protocol, name)) {
                Some(got) => format!(
                    "node {i} {protocol} {name}: {}",
                    first_difference(&got, &expected[name])
                ),
                None => format!("node {i} {protocol} {name}: no answer"),
            })
            .collect();
        eprintln!(
            "round {round} ({burst} burst): {edits} edits while the nodes served {served} requests ({} from the test's own fetchers); {} files x {} nodes x 2 protocols compared, {} stale",
            fetched.load(Ordering::Relaxed),
            expected.len(),
            servers.len(),
            stale.len()
        );
        for line in stale.iter().take(20) {
            eprintln!("  {line}");
        }
        stale_total += stale.len();
    }
    assert_eq!(stale_total, 0, "stale files served after the edits settled");

    for (i, server) in servers.iter().enumerate() {
        let checked = server.metric_sum("dialtone_render_cache_checked_total");
        let canary = server.metric_sum("dialtone_render_cache_stale_total");
        eprintln!("node {i}: self-check compared {checked} cached files, found {canary} stale");
        assert!(checked > 0.0, "node {i}: the self-check never ran");
        assert_eq!(
            canary,
            0.0,
            "node {i}: the self-check found stale files: {}",
            server.stderr()
        );
    }
    for server in servers {
        assert_eq!(server.stop(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_during_fetches_reach_every_file_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    storm(&sqlite_url(dir.path()), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_during_fetches_reach_every_file_on_two_postgresql_nodes() {
    let db = TestDb::postgres().await;
    storm(&db.url, 2).await;
}

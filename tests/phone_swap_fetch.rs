//! A hardware swap (`POST /v1/phones/{mac}/replace`) while phones fetch.
//! A desk phone with lines and a template of its own is swapped back and
//! forth between two MACs while its file is fetched under both, over TFTP
//! and HTTP, on every node. Each answer must be the desk's full config
//! under the MAC asked for, or "not found": never another phone's file,
//! never another error. Once a node has applied a swap, the old MAC is
//! "not found" there, on its next fetch and every one after: no render
//! cached under the old MAC outlives the swap. On PostgreSQL with two
//! nodes (the second follows the change log), and on SQLite with one.
//! (What the render cache keeps per file name across a swap is
//! `tftp/tests/phone_swap.rs`.)

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dialtone_sync::testing::TestDb;
use reqwest::Method;
use serde_json::json;

/// The desk's MAC before the first swap, its replacement's, and another
/// phone of the same tenant, whose file must never be what either gets.
const OLD: &str = "001565000001";
const NEW: &str = "0015650000aa";
const OTHER: &str = "001565000002";

/// Where the desk is after `round` swaps.
fn at(round: u64) -> &'static str {
    if round % 2 == 0 {
        OLD
    } else {
        NEW
    }
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Tftp,
    Http,
}

#[derive(Clone, Debug, PartialEq)]
enum Answer {
    File(String),
    NotFound,
    Failed(String),
}

impl Answer {
    /// The file's text, for the setup's first fetches.
    fn file(self, what: &str) -> String {
        match self {
            Answer::File(body) => body,
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// A node's phone-facing listeners: TFTP and HTTP.
type Node = (SocketAddr, SocketAddr);

fn fetch(node: Node, via: Via, mac: &str) -> Answer {
    let file = format!("{mac}.cfg");
    match via {
        Via::Tftp => match tftp_read(Ipv4Addr::LOCALHOST, node.0, &file) {
            Ok(bytes) => Answer::File(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e == "File not found" => Answer::NotFound,
            Err(e) => Answer::Failed(format!("TFTP: {e}")),
        },
        Via::Http => match http_get(node.1, &format!("/{file}")) {
            Some((200, body)) => Answer::File(body),
            Some((404, _)) => Answer::NotFound,
            Some((status, body)) => Answer::Failed(format!("HTTP {status}: {body}")),
            None => Answer::Failed("HTTP: no answer".into()),
        },
    }
}

/// What the fetchers and the swapping loop share.
struct Shared {
    /// Swaps sent so far: set before each request goes out.
    issued: AtomicU64,
    /// Per node, the last swap known applied there (its answer, or a
    /// fetch seen to reflect it). A swap is sent only once every node
    /// has applied the one before, so a node is at `confirmed` or at
    /// `issued`, and at `issued` for sure when the two are equal.
    confirmed: Vec<AtomicU64>,
    stop: AtomicBool,
    fetched: AtomicU64,
    /// What the desk's file is under its old MAC, and the other phone's.
    desk_old: String,
    other: String,
    tally: Mutex<Tally>,
}

/// Checked fetches by kind, and what was wrong.
#[derive(Default, Debug)]
struct Tally {
    counts: std::collections::BTreeMap<(&'static str, &'static str), u64>,
    violations: Vec<String>,
}

impl Shared {
    /// The desk's file under `mac`: identical but for the MAC itself.
    fn desk(&self, mac: &str) -> String {
        self.desk_old.replace(OLD, mac)
    }

    /// One fetch, checked against what the node may hold while it ran:
    /// with its state known throughout ("settled"), exactly that state's
    /// answer; while a swap may land ("racing"), the desk's file under the
    /// MAC asked for, or "not found".
    fn fetch_and_check(&self, index: usize, node: Node, via: Via, mac: &str) {
        let from = self.confirmed[index].load(SeqCst);
        let answer = fetch(node, via, mac);
        let to = self.issued.load(SeqCst);
        self.fetched.fetch_add(1, SeqCst);
        let desk = Answer::File(self.desk(mac));
        let (kind, ok) = if mac == OTHER {
            ("other phone", answer == Answer::File(self.other.clone()))
        } else if from == to {
            let settled = if at(to) == mac {
                desk
            } else {
                Answer::NotFound
            };
            ("settled", answer == settled)
        } else {
            ("racing", answer == desk || answer == Answer::NotFound)
        };
        let got = match &answer {
            Answer::File(_) => "file",
            Answer::NotFound => "not found",
            Answer::Failed(_) => "failed",
        };
        let mut tally = self.tally.lock().unwrap();
        *tally.counts.entry((kind, got)).or_default() += 1;
        if !ok && tally.violations.len() < 50 {
            let answer: String = format!("{answer:?}").chars().take(160).collect();
            tally.violations.push(format!(
                "node {index} {via:?} {mac}.cfg (swaps applied {from}, sent {to}): {answer}"
            ));
        }
    }
}

/// Fetches every file over both protocols in turn until `stop`.
fn fetcher(
    shared: Arc<Shared>,
    index: usize,
    node: Node,
    offset: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let order = [
            (Via::Tftp, OLD),
            (Via::Http, NEW),
            (Via::Http, OLD),
            (Via::Tftp, NEW),
            (Via::Tftp, OTHER),
            (Via::Http, OTHER),
        ];
        // Bounded by the stop flag and a hard cap, whichever comes first.
        for i in offset..offset + 1_000_000 {
            if shared.stop.load(SeqCst) {
                return;
            }
            let (via, mac) = order[i % order.len()];
            shared.fetch_and_check(index, node, via, mac);
        }
    })
}

/// At most this long for a follower to apply a write, or a token to reach
/// a node: far above the change log's delay, so only a stuck node fails.
const CATCH_UP: Duration = Duration::from_secs(15);

/// The fetchers run this many more fetches (or a bounded wait passes)
/// before each swap, so the old MAC's file is freshly cached when it lands.
const FETCHES_BETWEEN_SWAPS: u64 = 12;

async fn swaps_during_fetches(db_url: &str, nodes: usize, rounds: u64, tftp: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let mut phones =
        String::from("tenant,mac,family,model,line,extension,display_name,password,registrar\n");
    for (mac, who) in [(OLD, "desk"), (OTHER, "other")] {
        for line in 1..=2 {
            phones.push_str(&format!(
                "acme,{mac},yealink,T46S,{line},{line}0{line},{who} {line},pw-{who}-{line},sip.example.net\n"
            ));
        }
    }
    let phones = write_file(dir.path(), "phones.csv", &phones);
    let mut cmd = dialtone(dir.path(), db_url);
    cmd.arg("import").arg(&tenants).arg(&phones);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Misses of the MAC not in use are the point here, and must not ban
    // the test's address (a banned source is answered "not found" too,
    // which would hide a wrong answer). The self-check renders cached
    // files again and counts any that differ. Templates build URLs from
    // the base URL: one for every node, so their files are the same.
    let env = tftp.with(&[
        ("DIALTONE_PROVISIONING__BASE_URL", "http://prov.example.net"),
        ("DIALTONE_PROVISIONING__BAN_BURST", "1000000"),
        ("DIALTONE_PROVISIONING__BAN_PER_MINUTE", "1000000"),
        ("DIALTONE_PROVISIONING__RENDER_SELF_CHECK_PER_S", "200"),
    ]);
    let servers: Vec<Server> = (0..nodes)
        .map(|i| {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            Server::start_with_env(&node_dir, db_url, &[], &env)
        })
        .collect();
    let node = |i: usize| (servers[i].tftp_addr, servers[i].prov_addr);
    let scope = ["--scope", "global-admin", "--name", "swap"];
    let token = create_token(dir.path(), db_url, &scope);
    let api = Api::new(servers[0].addr, token);
    // The token reaches node 0 through the change log.
    for _ in 0..600 {
        if api.send(Method::GET, "/v1/tenants", None, None).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let body = "# the desk's own at {{ phone.mac }}\n\
        {% for line in lines %}account.{{ line.position }}.password = {{ line.password }}\n{% endfor %}";
    let (status, _, created) = api
        .send(
            Method::POST,
            "/v1/templates",
            Some(
                json!({ "scope": "phone", "family": "yealink", "file_pattern": "{mac}.cfg",
                         "mac": OLD, "body": body }),
            ),
            None,
        )
        .await;
    assert_eq!(status, 201, "{created}");

    let desk_old = fetch(node(0), Via::Http, OLD).file("the desk before any swap");
    for part in ["the desk's own at 001565000001", "pw-desk-1", "pw-desk-2"] {
        assert!(desk_old.contains(part), "{desk_old}");
    }
    assert!(!desk_old.contains(NEW), "{desk_old}");
    let other = fetch(node(0), Via::Http, OTHER).file("the other phone");
    assert!(
        other.contains("pw-other-1") && !other.contains("pw-desk"),
        "{other}"
    );
    // Every node has the desk's template before the first swap.
    for (i, via) in (0..nodes).flat_map(|i| [(i, Via::Tftp), (i, Via::Http)]) {
        let ready = wait_until(CATCH_UP, || {
            fetch(node(i), via, OLD) == Answer::File(desk_old.clone())
                && fetch(node(i), via, NEW) == Answer::NotFound
                && fetch(node(i), via, OTHER) == Answer::File(other.clone())
        });
        assert!(
            ready.is_some(),
            "node {i} {via:?}: {:?}",
            fetch(node(i), via, OLD)
        );
    }

    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        confirmed: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
        fetched: AtomicU64::new(0),
        desk_old,
        other,
        tally: Mutex::default(),
    });
    let fetchers: Vec<_> = (0..nodes)
        .flat_map(|i| [0, 3].map(|offset| (i, offset)))
        .map(|(i, offset)| fetcher(shared.clone(), i, node(i), offset))
        .collect();

    let (mut answered, mut answered_early) = (0, 0);
    for round in 1..=rounds {
        let (from, to) = (at(round - 1), at(round));
        let before = shared.fetched.load(SeqCst);
        for _ in 0..400 {
            if shared.fetched.load(SeqCst) >= before + FETCHES_BETWEEN_SWAPS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.issued.store(round, SeqCst);
        let (status, _, view) = api
            .send_past_busy(
                Method::POST,
                &format!("/v1/phones/{from}/replace"),
                Some(json!({ "new_mac": to })),
                None,
            )
            .await;
        match status {
            // The answering node shows the phone under its new MAC.
            200 => {
                assert_eq!(view["mac"], to, "{view}");
                assert_eq!(view["lines"].as_array().map(Vec::len), Some(2), "{view}");
                shared.confirmed[0].store(round, SeqCst);
                answered += 1;
            }
            202 => answered_early += 1,
            _ => panic!("round {round}: swap {from} -> {to}: {status} {view}"),
        }
        for i in 0..nodes {
            if shared.confirmed[i].load(SeqCst) < round {
                let applied = wait_until(CATCH_UP, || {
                    [Via::Tftp, Via::Http]
                        .iter()
                        .all(|&via| fetch(node(i), via, from) == Answer::NotFound)
                });
                assert!(
                    applied.is_some(),
                    "round {round}: node {i} still serves {from}"
                );
                shared.confirmed[i].store(round, SeqCst);
            }
            // The next fetch after the swap is applied: the old MAC is
            // gone, the new one has the desk's file.
            for via in [Via::Tftp, Via::Http] {
                let old = fetch(node(i), via, from);
                assert_eq!(
                    old,
                    Answer::NotFound,
                    "round {round}: node {i} {via:?} {from}"
                );
                let new = fetch(node(i), via, to);
                assert_eq!(
                    new,
                    Answer::File(shared.desk(to)),
                    "round {round}: node {i} {via:?} {to}"
                );
            }
        }
    }
    shared.stop.store(true, SeqCst);
    for f in fetchers {
        f.join().unwrap();
    }

    let tally = std::mem::take(&mut *shared.tally.lock().unwrap());
    eprintln!(
        "{rounds} swaps ({answered} answered 200, {answered_early} 202) on {nodes} node(s), \
         {tftp:?} TFTP; {} fetches checked: {:?}; {} wrong",
        shared.fetched.load(SeqCst),
        tally.counts,
        tally.violations.len()
    );
    for v in &tally.violations {
        eprintln!("  {v}");
    }
    assert!(tally.violations.is_empty(), "wrong answers during swaps");
    for got in ["file", "not found"] {
        let settled = tally.counts.get(&("settled", got));
        assert!(settled.is_some(), "no settled fetch got {got}: {tally:?}");
    }
    for (i, server) in servers.iter().enumerate() {
        let stale = server.metric_sum("dialtone_render_cache_stale_total");
        assert_eq!(
            stale,
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
async fn swaps_during_fetches_on_two_postgresql_nodes() {
    let db = TestDb::postgres().await;
    swaps_during_fetches(&db.url, 2, 40, TftpMode::Ported).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_during_fetches_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    swaps_during_fetches(&sqlite_url(dir.path()), 1, 30, TftpMode::SinglePort).await;
}

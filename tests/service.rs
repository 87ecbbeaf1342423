//! `dialtone serve` as a service: systemd readiness, Prometheus metrics,
//! graceful drain of TFTP, supervision of the database listener, and the
//! process settings it runs with.

mod common;

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;
use dialtone_sync::testing::TestDb;

/// A metric name, its labels and its value.
type Sample = (String, Vec<(String, String)>, f64);
type Samples = Vec<Sample>;

/// One sample line of the Prometheus text format: `name{labels} value`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let close = inner.find("} ").ok_or("unclosed labels")?;
        let mut body = &inner[..close];
        while !body.is_empty() {
            let eq = body.find("=\"").ok_or("label without value")?;
            let label = &body[..eq];
            if !valid_name(label) || label.contains(':') {
                return Err(format!("bad label name {label:?}"));
            }
            let mut value = String::new();
            let mut chars = body[eq + 2..].char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => value.push(chars.next().ok_or("dangling escape")?.1),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            labels.push((label.to_string(), value));
            body = &body[eq + 2 + end + 1..];
            body = body.strip_prefix(',').unwrap_or(body);
        }
        rest = &inner[close + 1..];
    }
    let value = rest.trim();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok((name.to_string(), labels, value))
}

fn scrape(server: &Server) -> Samples {
    let (status, body) = server.try_get("/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    let mut samples = Vec::new();
    let (mut typed, mut described) = (Vec::new(), std::collections::HashSet::new());
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if words.first() == Some(&"HELP") && words.len() > 2 {
                described.insert(words[1].to_string());
            }
            if words.first() == Some(&"TYPE") {
                typed.push(words[1].to_string());
                assert!(
                    matches!(
                        words.get(2),
                        Some(&("counter" | "gauge" | "histogram" | "summary" | "untyped"))
                    ),
                    "bad TYPE line {line:?}"
                );
            }
            continue;
        }
        samples.push(parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}")));
    }
    for name in typed {
        assert!(described.contains(&name), "{name} has no # HELP line");
    }
    samples
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|(n, ls, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
        .reduce(|a, b| a + b)
}

#[test]
fn metrics_parse_as_prometheus_text_and_have_the_series() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    exercise_demo_node(dir.path(), &url, &server);

    let samples = scrape(&server);
    let has = |name: &str| samples.iter().any(|(n, _, _)| n == name);
    for series in [
        "dialtone_provision_requests_total",
        "dialtone_transfer_duration_seconds_bucket",
        "dialtone_transfer_duration_seconds_count",
        "dialtone_tftp_active_transfers",
        "dialtone_provisioning_banned_sources",
        "dialtone_render_cache_total",
        "dialtone_mirror_lag_seconds",
        "dialtone_mirror_stale_seconds",
        "dialtone_mirror_rows",
        "dialtone_mirror_full_reloads_total",
        "dialtone_lookups_total",
        "dialtone_lookup_duration_seconds_count",
        "dialtone_task_restarts_total",
        "dialtone_task_panics_total",
        "dialtone_degraded",
    ] {
        assert!(has(series), "/metrics lacks {series}");
    }
    let ok = |protocol| {
        value(
            &samples,
            "dialtone_provision_requests_total",
            &[
                ("protocol", protocol),
                ("vendor", "yealink"),
                ("outcome", "ok"),
            ],
        )
    };
    assert!(ok("http") >= Some(1.0) && ok("tftp") >= Some(1.0));
    assert!(
        value(
            &samples,
            "dialtone_provision_requests_total",
            &[("outcome", "not_found")]
        ) >= Some(1.0)
    );
    assert_eq!(
        value(&samples, "dialtone_mirror_rows", &[("table", "phones")]),
        Some(9.0)
    );
    assert_eq!(
        value(&samples, "dialtone_tftp_active_transfers", &[]),
        Some(0.0)
    );
    assert_eq!(server.stop(), 0);
}

#[test]
fn systemd_hears_ready_only_once_serving_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::spawn(
        dir.path(),
        &url,
        &["--demo"],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let mut buf = [0u8; 512];
    // The start moves systemd's start timeout on (a start may wait on the
    // database past its 90 s) until READY, and says nothing of it after.
    let mut starting = 0;
    loop {
        let len = socket
            .recv(&mut buf)
            .expect("a notification before the timeout");
        let message = String::from_utf8_lossy(&buf[..len]).into_owned();
        if message.lines().any(|l| l == "READY=1") {
            break;
        }
        assert!(
            message.lines().any(|l| l == "STATUS=starting")
                && message
                    .lines()
                    .any(|l| l.starts_with("EXTEND_TIMEOUT_USEC=")),
            "{message}"
        );
        starting += 1;
        assert!(starting < 100, "no READY");
    }
    assert!(starting >= 1, "no start notice before READY");
    // At READY every listener answers at once, with the mirror loaded.
    assert_eq!(server.try_get("/readyz").map(|(s, _)| s), Some(200));
    assert_eq!(
        http_get(server.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );
    assert!(tftp_fetch(dir.path(), &url, server.tftp_addr, "0015654aa937.cfg").is_some());

    server.signal("TERM");
    let len = socket.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
    let message = String::from_utf8_lossy(&buf[..len]).into_owned();
    assert!(message.lines().any(|l| l == "STOPPING=1"), "{message}");
    // The stop timeout is extended to cover the whole drain: two grace
    // periods (10 s each here: listeners, then the writers' last batch)
    // and the snapshot, past the unit's 30 s.
    let extended: u64 = message
        .lines()
        .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC: {message}"))
        .parse()
        .unwrap();
    assert!(
        (21_000_000..=3_600_000_000).contains(&extended),
        "{extended}"
    );
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn sigterm_lets_a_slow_transfer_finish_and_refuses_new_requests() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let slow = UdpSocket::bind("127.0.0.1:0").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.send_to(&rrq("0015654aa937.cfg"), server.tftp_addr)
        .unwrap();
    let mut buf = [0u8; 1024];
    let (len, transfer) = slow.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..4], &[0, 3, 0, 1], "DATA block 1");
    let mut received = buf[4..len].to_vec();
    assert_eq!(
        received.len(),
        512,
        "the demo config takes more than one block"
    );

    // Mid-transfer: SIGTERM.
    let stopping = Instant::now();
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // A new request is refused at once, with an error packet.
    let newcomer = UdpSocket::bind("127.0.0.1:0").unwrap();
    newcomer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    newcomer
        .send_to(&rrq("0015654aa937.cfg"), server.tftp_addr)
        .unwrap();
    let (len, _) = newcomer
        .recv_from(&mut buf)
        .expect("an answer while draining");
    assert_eq!(&buf[..2], &[0, 5], "an ERROR packet: {:?}", &buf[..len]);
    assert!(String::from_utf8_lossy(&buf[4..len]).contains("shutting down"));

    // The slow client finishes its transfer.
    let mut block: u16 = 1;
    loop {
        slow.send_to(&[0, 4, (block >> 8) as u8, block as u8], transfer)
            .unwrap();
        if received.len() % 512 != 0 {
            break;
        }
        let (len, _) = slow
            .recv_from(&mut buf)
            .expect("the next block while draining");
        block += 1;
        assert_eq!(&buf[..4], &[0, 3, (block >> 8) as u8, block as u8]);
        received.extend_from_slice(&buf[4..len]);
        if len < 516 {
            slow.send_to(&[0, 4, (block >> 8) as u8, block as u8], transfer)
                .unwrap();
            break;
        }
    }
    let (_, _, served) = http_get_with(server.prov_addr, "/0015654aa937.cfg", &[])
        .map_or((0, vec![], String::new()), |r| r);
    assert!(
        served.is_empty(),
        "HTTP refuses new connections while draining"
    );
    assert!(
        String::from_utf8_lossy(&received).contains("account.1"),
        "the whole file arrived"
    );
    assert_eq!(server.wait_exit(), 0, "exit 0 after the drain");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "within the grace period: {:?}",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_connection_is_restarted_counted_and_degrades_past_the_limit() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &db.url,
        &["--demo"],
        &[
            ("DIALTONE_SUPERVISION__MAX_RESTARTS", "3"),
            ("DIALTONE_SUPERVISION__WINDOW_S", "120"),
        ],
    );
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let listener_pids = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let restarts = || {
        value(
            &scrape(&server),
            "dialtone_task_restarts_total",
            &[("task", "change-listener")],
        )
        .unwrap_or(0.0)
    };
    let mut killed: Vec<i32> = Vec::new();
    for round in 0..5 {
        // A fresh listener (not one terminated in an earlier round, which
        // may linger in pg_stat_activity for a moment).
        let mut pids = Vec::new();
        for _ in 0..400 {
            pids = listener_pids()
                .await
                .into_iter()
                .filter(|p| !killed.contains(p))
                .collect();
            if !pids.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            !pids.is_empty(),
            "round {round}: the listener never came back: {}",
            server.stderr()
        );
        let before = restarts();
        for pid in &pids {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&pool)
                .await
                .unwrap();
        }
        killed.extend(pids);
        // Provisioning never notices.
        assert_eq!(
            http_get(server.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
            Some(200),
            "round {round}"
        );
        let counted = wait_until(Duration::from_secs(20), || restarts() > before);
        assert!(
            counted.is_some(),
            "round {round}: restart not counted: {}",
            server.stderr()
        );
    }
    assert!(restarts() >= 5.0);
    let readyz = server.readyz();
    assert_eq!(readyz["status"], "degraded", "{readyz}");
    assert_eq!(readyz["degraded_tasks"][0], "change-listener");
    assert_eq!(value(&scrape(&server), "dialtone_degraded", &[]), Some(1.0));
    assert_eq!(
        http_get(server.prov_addr, "/0015654aa937.cfg").map(|(s, _)| s),
        Some(200)
    );
    assert_eq!(server.stop(), 0);
}

/// SIGHUP: a shipped template changed on disk is served after the HUP and
/// not before, and a log file renamed away (logrotate) is reopened.
#[test]
fn sighup_reloads_shipped_templates_and_reopens_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // A private copy of the shipped templates, to edit.
    let templates = dir.path().join("templates");
    copy_dir(&templates_dir(), &templates);
    let log = dir.path().join("dialtone.log");
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &[
            (
                "DIALTONE_PROVISIONING__TEMPLATES_DIR",
                templates.to_str().unwrap(),
            ),
            ("DIALTONE_LOG__FILE", log.to_str().unwrap()),
        ],
    );
    let file = "/0015654aa937.cfg";
    let before = http_get(server.prov_addr, file).unwrap().1;
    let path = templates.join("yealink").join("{mac}.cfg.tera");
    let edited = std::fs::read_to_string(&path).unwrap() + "\n# edited on disk\n";
    std::fs::write(&path, edited).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        http_get(server.prov_addr, file).unwrap().1,
        before,
        "not before the HUP"
    );

    // logrotate: move the file away, then HUP.
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("dialtone ready"));
    let rotated = dir.path().join("dialtone.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal("HUP");
    let served = wait_until(Duration::from_secs(10), || {
        http_get(server.prov_addr, file).is_some_and(|(_, body)| body.contains("# edited on disk"))
    });
    assert!(
        served.is_some(),
        "the edited template is served after the HUP"
    );
    let reopened = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains("SIGHUP: shipped templates reloaded"))
    });
    assert!(reopened.is_some(), "the log file was reopened by name");
    assert!(
        !std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("SIGHUP"),
        "nothing after the HUP went to the old file"
    );
    // Another HUP with nothing changed (the next night's logrotate) keeps
    // what is rendered.
    server.signal("HUP");
    let kept = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|text| {
            text.contains("SIGHUP: shipped templates unchanged; rendered files kept")
        })
    });
    assert!(
        kept.is_some(),
        "an unchanged set dropped the rendered files"
    );
    assert_eq!(server.stop(), 0);
}

/// A start whose `templates_dir` does not read whole serves what it could
/// read, and says so: `/readyz` degraded with `shipped-templates`, the
/// reload gauge at 0, until a SIGHUP reads the set whole.
#[test]
fn a_start_with_templates_it_could_not_read_is_degraded_until_a_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let templates = dir.path().join("templates");
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &[(
            "DIALTONE_PROVISIONING__TEMPLATES_DIR",
            templates.to_str().unwrap(),
        )],
    );
    let readyz = server.readyz();
    assert_eq!(readyz["status"], "degraded", "{readyz}");
    assert_eq!(readyz["degraded_tasks"][0], "shipped-templates", "{readyz}");
    let gauge = |server: &Server| {
        let (_, metrics) = server.try_get("/metrics").expect("metrics answer");
        metrics
            .lines()
            .find(|l| l.starts_with("dialtone_config_last_reload_successful "))
            .map(str::to_string)
    };
    assert_eq!(
        gauge(&server).as_deref(),
        Some("dialtone_config_last_reload_successful 0")
    );
    // Phones are still served, from the built-in set.
    assert_eq!(
        http_get(server.prov_addr, "/0015654aa937.cfg").map(|r| r.0),
        Some(200)
    );

    copy_dir(&templates_dir(), &templates);
    server.signal("HUP");
    let ready = wait_until(Duration::from_secs(10), || {
        server.readyz()["status"] == "ready"
    });
    assert!(ready.is_some(), "{}", server.readyz());
    assert_eq!(
        gauge(&server).as_deref(),
        Some("dialtone_config_last_reload_successful 1")
    );
    assert_eq!(server.stop(), 0);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The shipped templates are built in: `serve` and `render` started from a
/// directory with no `templates/` folder, and no `templates_dir`, still
/// render every family's files.
#[test]
fn shipped_templates_do_not_depend_on_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().join("templates").exists());
    let url = sqlite_url(dir.path());
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &[("DIALTONE_PROVISIONING__TEMPLATES_DIR", "")],
    );
    let (status, body) = http_get(server.prov_addr, "/0015654aa937.cfg").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("account.1.enable"), "{body}");
    let base = format!("http://{}", server.prov_addr);
    let mut render = dialtone(dir.path(), &url);
    render
        .args(["render", "0015654aa937", "0015654aa937.cfg"])
        .env("DIALTONE_PROVISIONING__BASE_URL", &base);
    let out = run(render);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim_end(), body.trim_end());
    let all = dir.path().join("all");
    let mut render = dialtone(dir.path(), &url);
    render.args(["render", "--all", "--out"]).arg(&all);
    let out = run(render);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files = std::fs::read_dir(&all).unwrap().count();
    assert!(files >= 10, "{files} files: {}", text(&out.stdout));
}

/// The process runs without transparent huge pages (`main.rs`): its
/// mirror is built once, and faulting it in 2 MiB at a time made cold
/// starts up to twice as long.
#[test]
fn serve_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start(dir.path(), &url, &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let setting = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(str::trim);
    assert_eq!(setting, Some("0"), "{status}");
}

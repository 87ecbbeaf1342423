//! The operator kit in `packaging/`: the Grafana dashboard parses, and
//! every series it and the alert rules query is one a running dialtone
//! exports, with the labels they match on. Compared against a real scrape
//! of `/metrics`, so a renamed metric or label fails here, not on a
//! dashboard that silently shows "No data". (`promtool check rules` and
//! `promtool test rules` check the rules themselves, in scripts/test.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};

/// Series Prometheus makes itself for every target, and the labels it adds
/// to every scraped sample.
const SYNTHETIC_SERIES: &[&str] = &["up"];
const TARGET_LABELS: &[&str] = &["instance", "job"];

fn packaging(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(file)
}

/// What a scrape holds: each sample name with the label names seen on it,
/// and the metric types the `# TYPE` lines declare.
#[derive(Default)]
struct Exported {
    labels: BTreeMap<String, BTreeSet<String>>,
    types: BTreeMap<String, String>,
}

impl Exported {
    fn parse(body: &str) -> Exported {
        let mut exported = Exported::default();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(comment) = line.strip_prefix('#') {
                let words: Vec<&str> = comment.split_whitespace().collect();
                if let ["TYPE", name, kind] = words[..] {
                    exported.types.insert(name.into(), kind.into());
                }
                continue;
            }
            let end = line.find(['{', ' ']).expect("a sample has a value");
            let names = exported.labels.entry(line[..end].into()).or_default();
            if line[end..].starts_with('{') {
                names.extend(label_names(&line[end + 1..]));
            }
        }
        exported
    }

    /// Why `name{labels}` is not something this scrape can answer, if so.
    fn lacks(&self, name: &str, labels: &BTreeSet<String>) -> Option<String> {
        if SYNTHETIC_SERIES.contains(&name) {
            return None;
        }
        if self.types.get(name).map(String::as_str) == Some("histogram") {
            return Some(format!(
                "{name} is a histogram: query {name}_bucket, _sum or _count"
            ));
        }
        let Some(seen) = self.labels.get(name) else {
            return Some(format!("{name} is not exported"));
        };
        let missing: Vec<&String> = labels
            .iter()
            .filter(|l| !seen.contains(*l) && !TARGET_LABELS.contains(&l.as_str()))
            .collect();
        (!missing.is_empty()).then(|| format!("{name} has no label {missing:?} (it has {seen:?})"))
    }
}

/// The label names in `a="x",b="y\"z"} 1`, up to the closing brace.
fn label_names(mut rest: &str) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(eq) = rest.find("=\"") {
        names.push(rest[..eq].trim_start_matches(',').to_string());
        let mut escaped = false;
        let close = rest[eq + 2..]
            .char_indices()
            .find(|&(_, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })
            .map(|(i, _)| eq + 2 + i)
            .expect("a closed label value");
        rest = &rest[close + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// Every series selector of a PromQL expression: its metric name and the
/// label names it matches on.
struct Selectors(Vec<(String, BTreeSet<String>)>);

impl ExprVisitor for Selectors {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let matchers = &selector.matchers;
        let all = matchers
            .matchers
            .iter()
            .chain(matchers.or_matchers.iter().flatten());
        let mut name = selector.name.clone();
        let mut labels = BTreeSet::new();
        for m in all {
            if m.name == "__name__" {
                name = Some(m.value.clone());
            } else {
                labels.insert(m.name.clone());
            }
        }
        let name = name.ok_or_else(|| format!("a selector without a metric name: {expr}"))?;
        self.0.push((name, labels));
        Ok(true)
    }
}

/// Grafana's variables, in the form Prometheus would get them.
fn expand_grafana(expr: &str) -> String {
    let mut out = expr.to_string();
    for var in ["$__rate_interval", "$__interval", "$__range"] {
        out = out.replace(var, "5m");
    }
    // Template variables are label values (multi-value: a regex).
    for var in ["${instance}", "$instance"] {
        out = out.replace(var, ".*");
    }
    assert!(
        !out.contains('$'),
        "an unknown Grafana variable in {expr:?}"
    );
    out
}

fn selectors(expr: &str) -> Result<Vec<(String, BTreeSet<String>)>, String> {
    let parsed = parser::parse(expr)?;
    let mut found = Selectors(Vec::new());
    walk_expr(&mut found, &parsed)?;
    if found.0.is_empty() {
        return Err("queries no series".into());
    }
    Ok(found.0)
}

/// Every `expr` string in the dashboard, wherever panels nest, and the
/// metric of each `label_values(metric, label)` variable query.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(expand_grafana(e)),
                    ("query", serde_json::Value::String(q)) if q.starts_with("label_values(") => {
                        let inner = &q["label_values(".len()..q.rfind(',').expect("a label")];
                        out.push(expand_grafana(inner));
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn alert_queries() -> Vec<String> {
    let text = std::fs::read_to_string(packaging("alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            out.push(expr.to_string());
        }
    }
    out
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(packaging("grafana-dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_whose_panels_each_query() {
    let dashboard = dashboard();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for panel in panels {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(panel["gridPos"]["w"].is_u64(), "panel {id} has no place");
        if panel["type"] == "row" {
            continue;
        }
        assert!(panel["title"].is_string(), "panel {id} has no title");
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "panel {id} queries nothing");
        for target in targets {
            let expr = expand_grafana(target["expr"].as_str().expect("a target has an expr"));
            selectors(&expr).unwrap_or_else(|e| panic!("panel {id}: {e}: {expr}"));
            queried += 1;
        }
        // Queries go to the data source picked on the dashboard.
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {id}");
    }
    assert!(queried > 20, "only {queried} queries");
}

#[test]
fn every_series_the_dashboard_and_alerts_query_is_exported() {
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    let dashboard_count = queries.len();
    queries.extend(alert_queries());
    assert!(dashboard_count > 20 && queries.len() > dashboard_count);
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for expr in &queries {
        for (name, labels) in selectors(expr).unwrap_or_else(|e| panic!("{e}: {expr}")) {
            wanted.entry(name).or_default().extend(labels);
        }
    }
    assert!(wanted.keys().any(|n| n.ends_with("_bucket")));

    // A node that has served what every panel shows: files over HTTP and
    // TFTP (renders, the cache, transfers), a miss, and a lookup; with an
    // HTTPS listener, whose certificate's expiry is a series of its own.
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = write_file(dir.path(), "cert.pem", &cert.cert.pem());
    let key_path = write_file(dir.path(), "key.pem", &cert.signing_key.serialize_pem());
    let https = free_addr().to_string();
    let (cert_path, key_path) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let env = [
        ("DIALTONE_PROVISIONING__HTTPS_LISTEN", https.as_str()),
        ("DIALTONE_PROVISIONING__TLS_CERT", cert_path.as_str()),
        ("DIALTONE_PROVISIONING__TLS_KEY", key_path.as_str()),
    ];
    let server = Server::start_with_env(dir.path(), &url, &["--demo"], &env);
    exercise_demo_node(dir.path(), &url, &server);

    // Some series come from background work (the render self-check), so
    // scrape until nothing is missing, within a bound.
    let mut missing = Vec::new();
    let settled = wait_until(Duration::from_secs(20), || {
        let (status, body) = server.try_get("/metrics").expect("/metrics answers");
        assert_eq!(status, 200);
        let exported = Exported::parse(&body);
        missing = wanted
            .iter()
            .filter_map(|(name, labels)| exported.lacks(name, labels))
            .collect();
        if missing.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    assert!(
        settled.is_some(),
        "queried but not exported:\n{}",
        missing.join("\n")
    );
    // rcgen's certificates run to 4096-01-01.
    let (_, body) = server.try_get("/metrics").expect("/metrics answers");
    let expiry = body
        .lines()
        .find_map(|l| l.strip_prefix("dialtone_tls_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(expiry, Some(67_090_118_400.0), "{body}");
    assert_eq!(server.stop(), 0);
}

/// A node with a monitoring listener of its own: Prometheus scrapes it
/// there, and the API listener, which tenants and phones reach, shows no
/// metrics and a `/readyz` without counts.
#[test]
fn a_monitoring_listener_serves_metrics_and_the_api_listener_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let monitoring = free_addr();
    let server = Server::start(
        dir.path(),
        &url,
        &["--demo", "--monitoring-listen", &monitoring.to_string()],
    );
    let (status, body) = server
        .try_get("/metrics")
        .expect("the API listener answers");
    assert_eq!(status, 404, "{body}");
    let brief = server.readyz();
    assert_eq!(brief, serde_json::json!({"ready": true, "status": "ready"}));

    let (status, metrics) = http_get(monitoring, "/metrics").expect("monitoring answers");
    assert_eq!(status, 200);
    assert!(metrics.contains("dialtone_mirror_loaded 1"), "{metrics}");
    let (status, readyz) = http_get(monitoring, "/readyz").expect("monitoring answers");
    assert_eq!(status, 200);
    let readyz: serde_json::Value = serde_json::from_str(&readyz).unwrap();
    assert!(readyz["counts"]["phones"].as_u64() > Some(0), "{readyz}");
    assert_eq!(server.stop(), 0);
}

#[test]
fn label_names_are_read_past_escaped_quotes() {
    assert_eq!(
        label_names(r#"a="x",b="y\"},z",c="" } 1"#),
        vec!["a", "b", "c"]
    );
}

#[test]
fn a_bare_histogram_name_or_an_unknown_label_is_reported() {
    let exported = Exported::parse(
        "# TYPE t_seconds histogram\nt_seconds_bucket{le=\"1\",protocol=\"tftp\"} 1\nt_seconds_count{protocol=\"tftp\"} 1\n",
    );
    let labels = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
    assert!(exported.lacks("t_seconds", &labels(&[])).is_some());
    assert!(exported
        .lacks("t_seconds_bucket", &labels(&["le", "protocol", "instance"]))
        .is_none());
    assert!(exported
        .lacks("t_seconds_count", &labels(&["vendor"]))
        .is_some());
    assert!(exported.lacks("nope_total", &labels(&[])).is_some());
    let found = selectors(&expand_grafana(
        "histogram_quantile(0.9, sum by (le) (rate(t_seconds_bucket{instance=~\"$instance\"}[$__rate_interval]))) / on() group_left {__name__=\"u_total\"}",
    ))
    .unwrap();
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["t_seconds_bucket", "u_total"]);
}

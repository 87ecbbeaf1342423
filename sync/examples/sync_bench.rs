//! Data-layer benchmark driver, run by `scripts/bench` (not in CI). Each
//! subcommand runs in its own process so resident memory is measured clean.
//!
//!   sync_bench seed URL PHONES [varied]   bulk-load PHONES phones, one line each;
//!                                         `varied` (PostgreSQL): 250 tenants, six
//!                                         vendors, labels, provisioning credentials,
//!                                         proxies, registrars per tenant
//!   sync_bench raw-scan URL               baseline: read the rows, build nothing
//!   sync_bench load URL [SNAPSHOT_OUT]    cold start of the mirror from the database
//!   sync_bench load-snapshot PATH         cold start of the mirror from a snapshot
//!   sync_bench latency URL WRITES         commit-to-visible on a second node, plus
//!                                         the NOTIFY round trip as baseline
//!
//! Output: one JSON object per run on stdout.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_sync::store::{LineInput, PhoneInput, StoreOptions};
use dialtone_sync::*;
use futures::TryStreamExt;
use serde_json::json;
use sqlx::Connection;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024
}

fn key() -> SecretKey {
    SecretKey::parse(&"5a".repeat(32)).unwrap()
}

async fn store(url: &str) -> Arc<dyn Store> {
    let options = StoreOptions {
        acquire_timeout: Duration::from_secs(30),
        max_catch_up_rows: 10_000_000,
        ..Default::default()
    };
    let store = open(url, key(), &options).await.expect("open store");
    store.migrate().await.expect("migrate");
    store
}

const MAC_BASE: i64 = 0x0015_6500_0000;

/// Rows less uniform than the plain seed's, nearer a provider's fleet: a
/// row's strings vary in length and in how many are set, and the interned
/// ones (models, registrars) have hundreds of values, not one.
async fn seed_varied(c: &mut sqlx::PgConnection, phones: i64, line_password: &str) {
    let http_password = key()
        .seal(Purpose::DeviceHttpPassword, "Xq7-provisioning-secret")
        .0
        .to_string();
    sqlx::query(
        "INSERT INTO tenants (slug, name, default_region, settings, updated_at) \
         SELECT 'tenant-' || t, 'Tenant ' || t || ', Inc.', 'US', '{}', 0 FROM generate_series(1, 250) t",
    )
    .execute(&mut *c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO phones (tenant_id, mac, family, model, label, variables, http_user, http_password, updated_at) \
         SELECT (SELECT min(id) FROM tenants) + (g * 7919) % 250, lpad(to_hex($1 + g), 12, '0'), \
           (ARRAY['yealink', 'poly', 'snom', 'grandstream', 'fanvil', 'cisco-mpp'])[1 + g % 6], \
           (ARRAY['T54W', 'VVX450', 'D785', 'GRP2614', 'X6U', 'CP-8841-3PCC'])[1 + g % 6], \
           CASE WHEN g % 3 <> 0 THEN 'Desk ' || (g % 500) END, '{}', \
           CASE WHEN g % 4 = 0 THEN 'prov' || g END, CASE WHEN g % 4 = 0 THEN $3 END, 0 \
         FROM generate_series(1, $2) g",
    )
    .bind(MAC_BASE)
    .bind(phones)
    .bind(&http_password)
    .execute(&mut *c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO lines (phone_id, position, extension, display_name, auth_user, password, registrar, proxy, settings, updated_at) \
         SELECT id, 1, (2000 + id % 7000)::text, \
           (ARRAY['Ana', 'Bjorn', 'Chloé', 'Dmitri', 'Eve', 'Farah', 'Günter', 'Hiro', 'Ines', 'José', 'Kai', 'Lena', 'Mía', 'Noor', 'Olu'])[1 + id % 15] \
             || ' ' || (ARRAY['Smith', 'Okafor', 'Müller', 'Nakamura', 'García', 'Ivanova', 'O''Brien', 'Svensson', 'Rossi', 'Kowalski'])[1 + (id / 15) % 10], \
           'user' || id, $1, 'pbx' || tenant_id || '.voip.example.com', \
           CASE WHEN id % 2 = 1 THEN 'sbc.voip.example.com' END, '{}', 0 FROM phones",
    )
    .bind(line_password)
    .execute(&mut *c)
    .await
    .unwrap();
}

async fn seed(url: &str, phones: i64, varied: bool) {
    let started = Instant::now();
    let password = key()
        .seal(Purpose::LinePassword, "a-realistic-sip-password")
        .0
        .to_string();
    let s = store(url).await;
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        // Bench data only: skip the change-log triggers while bulk loading.
        sqlx::query("SET session_replication_role = replica")
            .execute(&mut c)
            .await
            .unwrap();
        if varied {
            seed_varied(&mut c, phones, &password).await;
        } else {
            sqlx::query("INSERT INTO tenants (slug, name, default_region, settings, updated_at) VALUES ('bench', 'Bench', 'US', '{}', 0)").execute(&mut c).await.unwrap();
            sqlx::query(
                "INSERT INTO phones (tenant_id, mac, family, model, variables, updated_at) \
                 SELECT (SELECT id FROM tenants WHERE slug = 'bench'), lpad(to_hex($1 + g), 12, '0'), 'yealink', 'T46S', '{}', 0 \
                 FROM generate_series(1, $2) g",
            )
            .bind(MAC_BASE)
            .bind(phones)
            .execute(&mut c)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO lines (phone_id, position, extension, display_name, auth_user, password, registrar, settings, updated_at) \
                 SELECT id, 1, (1000 + id)::text, 'Desk ' || id, 'u' || id, $1, 'sip.example.net', '{}', 0 FROM phones",
            )
            .bind(&password)
            .execute(&mut c)
            .await
            .unwrap();
        }
        sqlx::query("VACUUM ANALYZE").execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO tenants (slug, name, default_region, settings, updated_at) VALUES ('bench', 'Bench', 'US', '{}', 0)").execute(&mut c).await.unwrap();
        sqlx::query(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $2) \
             INSERT INTO phones (tenant_id, mac, family, model, variables, updated_at) \
             SELECT (SELECT id FROM tenants WHERE slug = 'bench'), printf('%012x', $1 + n), 'yealink', 'T46S', '{}', 0 FROM g",
        )
        .bind(MAC_BASE)
        .bind(phones)
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO lines (phone_id, position, extension, display_name, auth_user, password, registrar, settings, updated_at) \
             SELECT id, 1, CAST(1000 + id AS TEXT), 'Desk ' || id, 'u' || id, $1, 'sip.example.net', '{}', 0 FROM phones",
        )
        .bind(&password)
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::query("COMMIT").execute(&mut c).await.unwrap();
        s.prune_change_log(Duration::ZERO, 0).await.unwrap();
    }
    println!(
        "{}",
        json!({"step": "seed", "url_kind": kind(url), "phones": phones, "seconds": started.elapsed().as_secs_f64()})
    );
}

fn kind(url: &str) -> &'static str {
    if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}

/// The floor: fetch every phone and line row and touch every column, but
/// decode nothing into model rows and build no mirror.
async fn raw_scan(url: &str) {
    let started = Instant::now();
    let mut rows = 0u64;
    macro_rules! scan {
        ($conn:expr) => {{
            for sql in [
                "SELECT id, tenant_id, mac, family, model, label, variables, http_user, http_password, updated_at FROM phones",
                "SELECT id, phone_id, position, extension, display_name, auth_user, password, registrar, proxy, settings, updated_at FROM lines",
            ] {
                let mut stream = sqlx::query(sql).fetch(&mut $conn);
                while let Some(row) = stream.try_next().await.unwrap() {
                    use sqlx::Row;
                    for i in 0..row.len() {
                        std::hint::black_box(row.try_get_raw(i).unwrap());
                    }
                    rows += 1;
                }
            }
        }};
    }
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        scan!(c);
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        scan!(c);
    }
    println!(
        "{}",
        json!({"step": "raw-scan", "url_kind": kind(url), "rows": rows, "seconds": started.elapsed().as_secs_f64()})
    );
}

fn report(step: &str, source: &str, mirror: &Mirror, seconds: f64, rss_before: u64) {
    let rss = rss_bytes();
    let phones = mirror.load().counts().phones as u64;
    println!(
        "{}",
        json!({
            "step": step, "source": source, "phones": phones, "seconds": seconds,
            "rss_bytes": rss, "rss_delta_bytes": rss.saturating_sub(rss_before),
            "bytes_per_phone": rss.saturating_sub(rss_before) as f64 / phones.max(1) as f64,
        })
    );
}

async fn load(url: &str, snapshot_out: Option<&str>) {
    let s = store(url).await;
    let before = rss_bytes();
    let mirror = Mirror::new();
    let started = Instant::now();
    let (loading, cursor, meta) = s.load_tables().await.unwrap();
    let read = started.elapsed().as_secs_f64();
    mirror.reset_loaded(loading, cursor, meta, LoadedFrom::Database);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("read {read:.3}s, build {:.3}s", seconds - read);
    report("load", kind(url), &mirror, seconds, before);
    if let Some(path) = snapshot_out {
        let started = Instant::now();
        snapshot::write(
            &mirror,
            std::path::Path::new(path),
            &snapshot::source_id(url),
        )
        .unwrap();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!(
            "{}",
            json!({"step": "snapshot-write", "seconds": started.elapsed().as_secs_f64(), "bytes": size})
        );
    }
}

fn load_snapshot(path: &str) {
    let before = rss_bytes();
    let started = Instant::now();
    let (header, loading) = snapshot::load(std::path::Path::new(path))
        .unwrap()
        .expect("snapshot exists");
    eprintln!("read {:.3}s", started.elapsed().as_secs_f64());
    let mirror = Mirror::new();
    mirror.reset_loaded(loading, header.cursor, header.meta, LoadedFrom::Snapshot);
    report(
        "load",
        "snapshot",
        &mirror,
        started.elapsed().as_secs_f64(),
        before,
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut samples: Vec<f64>) -> serde_json::Value {
    samples.sort_by(|a, b| a.total_cmp(b));
    json!({
        "what": name, "n": samples.len(),
        "p50_ms": percentile(&samples, 0.5), "p99_ms": percentile(&samples, 0.99), "max_ms": percentile(&samples, 1.0),
    })
}

async fn latency(url: &str, writes: usize) {
    // Baseline: how long PostgreSQL itself takes to deliver a NOTIFY.
    let mut listener = sqlx::postgres::PgListener::connect(url).await.unwrap();
    listener.listen("bench_baseline").await.unwrap();
    let mut notifier = sqlx::PgConnection::connect(url).await.unwrap();
    let mut baseline = Vec::new();
    for _ in 0..writes {
        let t0 = Instant::now();
        sqlx::query("SELECT pg_notify('bench_baseline', '')")
            .execute(&mut notifier)
            .await
            .unwrap();
        listener.recv().await.unwrap();
        baseline.push(t0.elapsed().as_secs_f64() * 1000.0);
    }

    // Node B: its own store (own pool and listener), mirror and watcher.
    let node_store = store(url).await;
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*node_store).await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(watcher::run(
        mirror.clone(),
        node_store,
        watcher::WatchOptions::default(),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The writer: another store, like another node or the admin API.
    let writer = store(url).await;
    let mut events = mirror.subscribe();
    let (mut from_start, mut from_commit) = (Vec::new(), Vec::new());
    for i in 0..writes {
        let mac: Mac = format!("{:012x}", MAC_BASE + 1 + (i as i64 % 1000))
            .parse()
            .unwrap();
        let label = format!("bench-{i}");
        let phone = PhoneInput {
            tenant: "bench".into(),
            mac,
            family: Family::Yealink,
            model: Some("T46S".into()),
            label: Some(label.clone()),
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            lines: vec![LineInput {
                extension: "1001".into(),
                display_name: "Desk".into(),
                auth_user: "u".into(),
                password: Some("a-realistic-sip-password".into()),
                registrar: "sip.example.net".into(),
                proxy: None,
                settings: "{}".into(),
            }],
        };
        let audit = Audit {
            tenant: None,
            actor: "bench".into(),
            action: "bench".into(),
            entity: "phone".into(),
            entity_key: mac.to_string(),
            detail: json!({}),
        };
        let t0 = Instant::now();
        writer
            .apply(&[Mutation::UpsertPhone(phone)], &audit)
            .await
            .unwrap();
        let committed = t0.elapsed();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if mirror
                .load()
                .phone_by_mac(&mac)
                .and_then(|p| p.label.as_deref().map(|l| l == label))
                == Some(true)
            {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "write {i} never became visible");
            let _ = tokio::time::timeout(left, events.recv()).await;
        }
        let visible = t0.elapsed();
        from_start.push(visible.as_secs_f64() * 1000.0);
        from_commit.push(visible.saturating_sub(committed).as_secs_f64() * 1000.0);
    }
    cancel.cancel();
    let _ = task.await;
    println!(
        "{}",
        json!({
            "step": "latency",
            "baseline_notify": summary("NOTIFY round trip", baseline),
            "commit_to_visible": summary("commit acknowledged -> visible on node B", from_commit),
            "write_to_visible": summary("write started -> visible on node B", from_start),
        })
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(0), arg(1)) {
        (Some("seed"), Some(url)) => {
            let varied = match arg(3) {
                None | Some("plain") => false,
                Some("varied") if url.starts_with("postgres") => true,
                Some(other) => {
                    eprintln!("seed: rows are plain, or varied on PostgreSQL, not {other:?}");
                    std::process::exit(2)
                }
            };
            seed(
                url,
                arg(2).and_then(|n| n.parse().ok()).unwrap_or(1_000_000),
                varied,
            )
            .await
        }
        (Some("raw-scan"), Some(url)) => raw_scan(url).await,
        (Some("load"), Some(url)) => load(url, arg(2)).await,
        (Some("load-snapshot"), Some(path)) => load_snapshot(path),
        (Some("latency"), Some(url)) => {
            latency(url, arg(2).and_then(|n| n.parse().ok()).unwrap_or(1000)).await
        }
        _ => {
            eprintln!("usage: see the comment at the top of sync/examples/sync_bench.rs");
            std::process::exit(2);
        }
    }
}

//! The mirror bench's own tools, for scripts/lib/bench_mirror.sh (not a
//! test). Modes:
//!
//! - `gen-ldif N OUT`: the generated test directory of N entries, the one
//!   tests/ldap_mirror.rs uses.
//! - `misses LDAP_URL N STATS_LOG [RUNTIME]`: a lookup service with a mirrored source
//!   at LDAP_URL, synced once, then N lookups of numbers it does not hold,
//!   each distinct so that the answer cache never saves one; prints µs per
//!   miss, its parts (normalizing; the service with the reading memoized
//!   and the cache dropped), and the SRCH lines slapd logged meanwhile
//!   (must be 0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_directory::{LookupOptions, LookupService};
use dialtone_sync::store::{DirectorySourceInput, TenantInput};
use dialtone_sync::*;

#[path = "../../tests/ldap_mirror/ldif.rs"]
#[allow(dead_code)]
mod ldif;

fn audit() -> Audit {
    Audit {
        tenant: None,
        actor: "bench".into(),
        action: "seed".into(),
        entity: "bench".into(),
        entity_key: String::new(),
        detail: serde_json::json!({}),
    }
}

fn searches(log: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" SRCH base="))
        .count()
}

async fn misses(url: &str, n: usize, log: &str, flavor: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let key = SecretKey::from_bytes([7; 32]);
    let store = open(&db, key.clone(), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let settings = serde_json::json!({
        "url": url, "bind_dn": ldif::ADMIN, "base_dn": format!("ou=people,{}", ldif::BASE),
        "filter": "(objectClass=inetOrgPerson)",
        "number_attributes": ["telephoneNumber", "mobile", "homePhone"],
        "name_attributes": ["displayName", "cn"],
        "mode": "mirror", "incremental_interval_s": 0,
    });
    let mutations = [
        Mutation::UpsertTenant(TenantInput {
            slug: "bench".into(),
            name: "Bench".into(),
            default_region: "US".into(),
            settings: "{}".into(),
        }),
        Mutation::UpsertDirectorySource(DirectorySourceInput {
            tenant: "bench".into(),
            name: "ad".into(),
            kind: SourceKind::Ldap,
            priority: 10,
            enabled: true,
            settings: settings.to_string(),
            secret: Some(ldif::PASSWORD.into()),
            timeout_ms: 1000,
        }),
    ];
    store.apply(&mutations, &audit()).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let state = mirror.load();
    let tenant = state.tenant_by_slug("bench").unwrap().id;
    let source = state.sources_of(tenant)[0].id;
    let service = LookupService::new(
        mirror,
        Some(key),
        LookupOptions {
            source_networks: dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
                .unwrap()
                .shared(),
            ..LookupOptions::default()
        },
    );
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(service.clone().run_mirrors(tracker.clone(), cancel.clone()));
    let started = Instant::now();
    let status = loop {
        let status = service.mirror_status(source);
        if let Some(s) = status.filter(|s| s.last_full_sync.is_some()) {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no sync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let before = searches(log);
    // 1 555 011 0000 onwards: area 555, beyond every number the generator
    // hands out, and each asked once.
    let numbers: Vec<String> = (0..n).map(|i| format!("1555{:07}", 110_000 + i)).collect();
    // Where a miss's time goes: reading the number (libphonenumber), and
    // the service with the reading memoized and the cache dropped each time.
    let timed = Instant::now();
    for number in &numbers {
        assert!(dialtone_directory::normalize(number, "US").is_ok());
    }
    let normalize_us = timed.elapsed().as_secs_f64() * 1e6 / n as f64;
    let timed = Instant::now();
    for _ in 0..n {
        service.invalidate_tenant(tenant);
        let answer = service.lookup(tenant, &numbers[0]).await.unwrap();
        assert!(answer.name().is_none());
    }
    let memoized_us = timed.elapsed().as_secs_f64() * 1e6 / n as f64;
    let timed = Instant::now();
    for number in &numbers {
        let answer = service.lookup(tenant, number).await.unwrap();
        assert!(answer.name().is_none(), "{number} found");
    }
    let miss_us = timed.elapsed().as_secs_f64() * 1e6 / n as f64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = searches(log);
    cancel.cancel();
    println!(
        "{}",
        serde_json::json!({
            "step": "misses", "runtime": flavor, "lookups": n, "miss_us": miss_us,
            "normalize_us": normalize_us, "memoized_miss_us": memoized_us,
            "entries": status.entries, "full_ms": status.last_full_ms,
            "searches": after - before,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen-ldif") => {
            let n = args[2].parse().expect("N");
            std::fs::write(&args[3], ldif::generate(n, 18).ldif).unwrap();
        }
        Some("misses") => {
            // `serve` runs the multi-thread runtime; the current-thread one
            // shows what the same work costs without handing the load to
            // another worker thread.
            let flavor = args.get(5).map_or("multi-thread", String::as_str);
            let runtime = match flavor {
                "current-thread" => tokio::runtime::Builder::new_current_thread(),
                _ => tokio::runtime::Builder::new_multi_thread(),
            }
            .enable_all()
            .build()
            .unwrap();
            runtime.block_on(misses(
                &args[2],
                args[3].parse().expect("N"),
                &args[4],
                flavor,
            ));
        }
        _ => {
            eprintln!("usage: mirror_bench gen-ldif N OUT | misses LDAP_URL N STATS_LOG [multi-thread|current-thread]");
            std::process::exit(2);
        }
    }
}

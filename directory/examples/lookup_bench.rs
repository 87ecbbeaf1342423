//! Measurements for scripts/bench (not a test). Prints one JSON object per
//! line. Modes:
//!
//! - `in-process N`: N cache-hit lookups straight into the service, and the
//!   cost of normalizing alone (what every lookup pays before the cache).
//! - `ldap-miss LDAP_URL N`: N lookups that miss the cache and search LDAP,
//!   against N direct searches for the same number on one open connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_directory::{normalize, LookupOptions, LookupService};
use dialtone_sync::store::{DirectoryEntryInput, DirectorySourceInput, TenantInput};
use dialtone_sync::*;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn summary(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    serde_json::json!({
        "p50_ms": percentile(&samples, 0.5),
        "p99_ms": percentile(&samples, 0.99),
        "max_ms": percentile(&samples, 1.0),
    })
}

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

async fn service_with(mutations: Vec<Mutation>) -> (LookupService, Id, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let key = SecretKey::from_bytes([7; 32]);
    let store = open(&url, key.clone(), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.apply(&mutations, &audit()).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let tenant = mirror.load().tenant_by_slug("bench").unwrap().id;
    (
        LookupService::new(
            mirror,
            Some(key),
            LookupOptions {
                // The bench's slapd listens on loopback.
                source_networks: dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
                    .unwrap()
                    .shared(),
                ..LookupOptions::default()
            },
        ),
        tenant,
        dir,
    )
}

fn tenant() -> Mutation {
    Mutation::UpsertTenant(TenantInput {
        slug: "bench".into(),
        name: "Bench".into(),
        default_region: "US".into(),
        settings: "{}".into(),
    })
}

async fn in_process(n: usize) {
    let mut mutations = vec![tenant()];
    for i in 0..1000 {
        mutations.push(Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
            tenant: "bench".into(),
            external_id: format!("e{i}"),
            name: format!("Contact {i}"),
            company: None,
            numbers: vec![DirectoryNumber {
                number: format!("+1 (555) 01{:01}-{:04}", i / 1000, 1000 + i % 1000).into(),
                kind: "work".into(),
            }],
        }));
    }
    let (service, tenant, _dir) = service_with(mutations).await;
    let numbers: Vec<String> = (0..1000)
        .map(|i| format!("1555010{:04}", 1000 + i))
        .collect();
    for number in &numbers {
        assert!(service
            .lookup(tenant, number)
            .await
            .unwrap()
            .name()
            .is_some());
    }
    let started = Instant::now();
    for i in 0..n {
        let answer = service
            .lookup(tenant, &numbers[i % numbers.len()])
            .await
            .unwrap();
        debug_assert!(answer.name().is_some());
    }
    let hit = started.elapsed();
    let started = Instant::now();
    for i in 0..n {
        std::hint::black_box(normalize(&numbers[i % numbers.len()], "US").unwrap());
    }
    let norm = started.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "step": "in-process",
            "lookups": n,
            "hit_us": hit.as_secs_f64() * 1e6 / n as f64,
            "normalize_us": norm.as_secs_f64() * 1e6 / n as f64,
        })
    );
}

async fn ldap_miss(url: &str, n: usize) {
    let settings = serde_json::json!({
        "url": url,
        "bind_dn": "cn=admin,dc=example,dc=com",
        "base_dn": "ou=people,dc=example,dc=com",
    });
    let source = Mutation::UpsertDirectorySource(DirectorySourceInput {
        tenant: "bench".into(),
        name: "ad".into(),
        kind: SourceKind::Ldap,
        priority: 10,
        enabled: true,
        settings: settings.to_string(),
        secret: Some("secret".into()),
        timeout_ms: 1000,
    });
    let (service, tenant, _dir) = service_with(vec![tenant(), source]).await;
    assert_eq!(
        service.lookup(tenant, "+15550101240").await.unwrap().name(),
        Some("Robert Builder")
    );
    let mut ours = Vec::with_capacity(n);
    for _ in 0..n {
        service.invalidate_tenant(tenant);
        let started = Instant::now();
        let answer = service.lookup(tenant, "+15550101240").await.unwrap();
        ours.push(started.elapsed());
        assert_eq!(answer.name(), Some("Robert Builder"));
    }
    // The source alone: our multi-spelling filter and name handling, no cache.
    let settings =
        dialtone_directory::settings::LdapSettings::parse("ad", &settings.to_string()).unwrap();
    let source = dialtone_directory::ldap::LdapSource::new(
        dialtone_directory::source_label::SourceLabel::new(tenant, 1, "ad"),
        settings,
        Some("secret".into()),
        dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
            .unwrap()
            .shared(),
    )
    .unwrap();
    let mut source_only = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let name = source
            .lookup("+15550101240", "US", Duration::from_secs(1))
            .await
            .unwrap();
        source_only.push(started.elapsed());
        assert_eq!(name.as_deref(), Some("Robert Builder"));
    }
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(url).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind("cn=admin,dc=example,dc=com", "secret")
        .await
        .unwrap()
        .success()
        .unwrap();
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (entries, _) = ldap
            .search(
                "ou=people,dc=example,dc=com",
                ldap3::Scope::Subtree,
                "(telephoneNumber=555 010 1240)",
                vec!["displayName", "cn"],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
        direct.push(started.elapsed());
        assert_eq!(entries.len(), 1);
    }
    println!(
        "{}",
        serde_json::json!({
            "step": "ldap-miss",
            "lookups": n,
            "ours": summary(ours),
            "source": summary(source_only),
            "direct": summary(direct),
        })
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("in-process") => {
            in_process(args.get(2).map_or(1_000_000, |n| n.parse().unwrap())).await
        }
        Some("ldap-miss") => {
            ldap_miss(&args[2], args.get(3).map_or(2000, |n| n.parse().unwrap())).await
        }
        _ => {
            eprintln!("usage: lookup_bench in-process [N] | ldap-miss LDAP_URL [N]");
            std::process::exit(2);
        }
    }
}

//! Identify + render per vendor family, from a render-cache hit and from a
//! miss (template compiled, context built, rendered, hashed). The baseline
//! in the same run is identification alone, which every request pays.
//! Run: `cargo bench -p dialtone-tftp` (scripts/bench prints it too).

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use dialtone_sync::store::{LineInput, PhoneInput, TenantInput};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;
use dialtone_tftp::{identify, ProvisionOptions, Provisioner, Request, Shipped};

/// (family, MAC, model, file a booting phone asks for)
const PHONES: &[(Family, &str, &str, &str)] = &[
    (Family::Yealink, "0015654aa937", "T46S", "0015654aa937.cfg"),
    (
        Family::Poly,
        "0004f2abcd01",
        "VVX 450",
        "0004f2abcd01-phone.cfg",
    ),
    (
        Family::CiscoSpa,
        "001b54aa0001",
        "SPA504G",
        "spa001b54aa0001.xml",
    ),
    (
        Family::CiscoMpp,
        "0062ecaa0002",
        "CP-8841-3PCC",
        "0062ecaa0002.xml",
    ),
    (
        Family::CiscoSep,
        "001b54aa0003",
        "CP-7941G",
        "SEP001B54AA0003.cnf.xml",
    ),
    (
        Family::Grandstream,
        "000b828aa872",
        "GXP2135",
        "cfg000b828aa872.xml",
    ),
    (
        Family::Snom,
        "000413922d24",
        "D785",
        "snomD785-000413922D24.htm",
    ),
    (Family::Fanvil, "0c383e1a2b3c", "X4", "0c383e1a2b3c.cfg"),
];

fn setup() -> (TestDb, Arc<Provisioner>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let db = TestDb::sqlite();
        let store = db.store().await;
        let mut batch = vec![Mutation::UpsertTenant(TenantInput {
            slug: "bench".into(),
            name: "Bench".into(),
            default_region: "US".into(),
            settings: "{}".into(),
        })];
        for (family, mac, model, _) in PHONES {
            batch.push(Mutation::UpsertPhone(PhoneInput {
                tenant: "bench".into(),
                mac: mac.parse().unwrap(),
                family: *family,
                model: Some((*model).into()),
                label: None,
                variables: "{}".into(),
                http_user: None,
                http_password: None,
                // A realistic desk: four lines.
                lines: (0..4)
                    .map(|i| LineInput {
                        extension: format!("{}", 100 + i),
                        display_name: format!("Desk {i}"),
                        auth_user: format!("u{i}"),
                        password: Some("a-realistic-sip-password".into()),
                        registrar: "sip.example.net".into(),
                        proxy: None,
                        settings: "{}".into(),
                    })
                    .collect(),
            }));
        }
        let audit = Audit {
            tenant: None,
            actor: "bench".into(),
            action: "bench".into(),
            entity: "bench".into(),
            entity_key: String::new(),
            detail: serde_json::json!({}),
        };
        store.apply(&batch, &audit).await.unwrap();
        let mirror = Arc::new(Mirror::new());
        watcher::full_load(&mirror, &*store).await.unwrap();
        let templates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let provisioner = Provisioner::new(
            mirror,
            test_key(),
            Shipped::load(&templates, 1).unwrap(),
            ProvisionOptions::default(),
        );
        (db, Arc::new(provisioner))
    })
}

fn bench(c: &mut Criterion) {
    let (_db, provisioner) = setup();
    for (family, _, _, file) in PHONES {
        let request = Request {
            path: file,
            ..Default::default()
        };
        c.bench_function(&format!("{family}/identify"), |b| {
            b.iter(|| identify(file, None).unwrap())
        });
        provisioner.provision(&request).unwrap();
        c.bench_function(&format!("{family}/provision-hit"), |b| {
            b.iter(|| provisioner.provision(&request).unwrap())
        });
        c.bench_function(&format!("{family}/provision-miss"), |b| {
            b.iter(|| {
                provisioner.clear_render_cache();
                provisioner.provision(&request).unwrap()
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);

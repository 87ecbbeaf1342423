//! The unclaimed-devices table on both backends: upsert by (tenant, MAC),
//! the per-tenant bound, tenant isolation, and the writer's batching.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::store::{UnclaimedDevice, UNASSIGNED};
use dialtone_sync::testing::build::{audit, tenant};
use dialtone_sync::testing::TestDb;
use dialtone_sync::unclaimed::{channel, fold, Sighting};
use dialtone_sync::*;
use tokio_util::sync::CancellationToken;

fn sighting(tenant_id: Id, mac: u64, at: Millis, model: Option<&str>) -> Sighting {
    let bytes = mac.to_be_bytes();
    Sighting {
        tenant_id,
        mac: Mac([bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]),
        family: Some("yealink"),
        model: model.map(str::to_string),
        firmware: Some("66.86.0.15".into()),
        source: "192.0.2.7".parse().unwrap(),
        at,
    }
}

async fn two_tenants(store: &dyn Store) -> (Id, Id) {
    store
        .apply(&[tenant("acme", "US"), tenant("globex", "GB")], &audit("t"))
        .await
        .unwrap();
    let (data, _, _) = store.load_all().await.unwrap();
    let id = |slug: &str| data.tenants.iter().find(|t| &*t.slug == slug).unwrap().id;
    (id("acme"), id("globex"))
}

/// `tenant`'s list and the operator's (no tenant) hold one device each.
async fn assert_one_each(store: &dyn Store, tenant: Id) {
    for list in [tenant, UNASSIGNED] {
        let devices = store.unclaimed_devices(list, 1_000).await.unwrap();
        assert_eq!(devices.len(), 1, "list {list}: {devices:?}");
    }
}

both_backends!(unclaimed_store_upserts, upserts_body);
async fn upserts_body(db: TestDb) {
    let store = db.store().await;
    let (acme, globex) = two_tenants(&*store).await;
    let mac = 0x0015_6500_0001;
    let first = fold(&[
        sighting(acme, mac, 1_000, Some("T46U")),
        sighting(acme, mac, 3_000, None),
        sighting(globex, mac + 1, 2_000, None),
    ]);
    assert_eq!(first.len(), 2);
    store.record_unclaimed(&first, 10).await.unwrap();
    // Later, with new firmware, from elsewhere; no model this time.
    let mut later = sighting(acme, mac, 5_000, None);
    later.firmware = Some("66.86.0.20".into());
    later.source = "192.0.2.9".parse().unwrap();
    store.record_unclaimed(&fold(&[later]), 10).await.unwrap();

    let listed = store.unclaimed_devices(acme, 100).await.unwrap();
    assert_eq!(
        listed,
        vec![UnclaimedDevice {
            tenant_id: acme,
            mac: "001565000001".into(),
            family: Some("yealink".into()),
            model: Some("T46U".into()),
            firmware: Some("66.86.0.20".into()),
            source: "192.0.2.9".into(),
            first_seen: 1_000,
            last_seen: 5_000,
            count: 3,
        }]
    );
    // Each tenant sees its own list only; the unassigned list is apart.
    let other = store.unclaimed_devices(globex, 100).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].mac, "001565000002");
    assert!(store
        .unclaimed_devices(UNASSIGNED, 100)
        .await
        .unwrap()
        .is_empty());

    let known: Mac = "001565000001".parse().unwrap();
    assert!(!store.remove_unclaimed(globex, &known).await.unwrap());
    assert!(store.remove_unclaimed(acme, &known).await.unwrap());
    assert!(store.unclaimed_devices(acme, 100).await.unwrap().is_empty());
}

both_backends!(unclaimed_store_bounded, bounded_body);
async fn bounded_body(db: TestDb) {
    let store = db.store().await;
    let (acme, globex) = two_tenants(&*store).await;
    // A flood of forged MACs from acme's network, in two batches.
    let flood: Vec<Sighting> = (0..60u64)
        .map(|n| sighting(acme, 0x0015_6510_0000 + n, 10_000 + n as i64, None))
        .collect();
    store
        .record_unclaimed(&fold(&flood[..30]), 25)
        .await
        .unwrap();
    store
        .record_unclaimed(&fold(&flood[30..]), 25)
        .await
        .unwrap();
    store
        .record_unclaimed(&fold(&[sighting(globex, 0x0015_6520_0000, 1, None)]), 25)
        .await
        .unwrap();
    store
        .record_unclaimed(
            &fold(&[sighting(UNASSIGNED, 0x0015_6530_0000, 1, None)]),
            25,
        )
        .await
        .unwrap();
    let kept = store.unclaimed_devices(acme, 1_000).await.unwrap();
    assert_eq!(kept.len(), 25);
    // The most recently seen stay.
    assert_eq!(kept[0].last_seen, 10_059);
    assert_eq!(kept[24].last_seen, 10_035);
    // One tenant's flood costs another nothing.
    assert_one_each(&*store, globex).await;

    // A deleted tenant's list goes with it.
    store
        .apply(
            &[Mutation::DeleteTenant {
                slug: "globex".into(),
            }],
            &audit("t"),
        )
        .await
        .unwrap();
    assert!(store
        .unclaimed_devices(globex, 1_000)
        .await
        .unwrap()
        .is_empty());
}

both_backends!(unclaimed_store_writer, writer_body);
async fn writer_body(db: TestDb) {
    let store = db.store().await;
    let (acme, _) = two_tenants(&*store).await;
    let (sink, writer) = channel(store.clone(), 16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(writer.run(cancel.clone(), std::time::Duration::from_secs(10)));
    // Far more than the queue holds, at once: the excess is dropped, and
    // recording never waits.
    let started = std::time::Instant::now();
    for n in 0..10_000u64 {
        sink.record(sighting(
            acme,
            0x0015_6540_0000 + (n % 8),
            1_000 + n as i64,
            None,
        ));
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    let store2: Arc<dyn Store> = store.clone();
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = store2.unclaimed_devices(acme, 100).await.unwrap();
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!listed.is_empty() && listed.len() <= 8, "{listed:?}");
    let counted: i64 = listed.iter().map(|d| d.count).sum();
    assert!((1..=100).contains(&counted), "{counted}");
    cancel.cancel();
    task.await.unwrap();
}

both_backends!(unclaimed_flood_leaves_room, flood_body);
async fn flood_body(db: TestDb) {
    let store = db.store().await;
    let (acme, globex) = two_tenants(&*store).await;
    let (sink, writer) = channel(store.clone(), 16);
    // Forged MACs from acme's network flood the queue while nothing takes
    // from it (the writer stuck on a slow database is the same): globex's
    // phones, and the operator's list, still get their sightings in.
    for n in 0..1_000u64 {
        sink.record(sighting(acme, 0x0015_6550_0000 + n, 1_000, None));
    }
    sink.record(sighting(globex, 0x0015_6560_0000, 2_000, None));
    sink.record(sighting(UNASSIGNED, 0x0015_6570_0000, 2_000, None));
    let cancel = CancellationToken::new();
    cancel.cancel();
    writer.run(cancel, std::time::Duration::from_secs(10)).await;
    assert_one_each(&*store, globex).await;
    // A quarter of the queue's 16.
    assert_eq!(store.unclaimed_devices(acme, 1_000).await.unwrap().len(), 4);
}

both_backends!(unclaimed_store_counts, counts_body);
async fn counts_body(db: TestDb) {
    let store = db.store().await;
    let (acme, globex) = two_tenants(&*store).await;
    let seen = [
        sighting(acme, 0x0015_6500_0001, 1_000, None),
        sighting(acme, 0x0015_6500_0002, 1_000, None),
        sighting(acme, 0x0015_6500_0003, 1_000, None),
        sighting(globex, 0x0015_6500_0002, 1_000, None),
        sighting(UNASSIGNED, 0x0015_6500_0009, 1_000, None),
    ];
    store.record_unclaimed(&fold(&seen), 10).await.unwrap();
    assert_eq!(
        store.unclaimed_counts(None).await.unwrap(),
        [(UNASSIGNED, 1), (acme, 3), (globex, 1)]
    );
    // 000002 becomes globex's phone: neither list counts it any more.
    store
        .apply(
            &[dialtone_sync::testing::build::phone("globex", 2, 1)],
            &audit("p"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.unclaimed_counts(None).await.unwrap(),
        [(UNASSIGNED, 1), (acme, 2)]
    );
    assert_eq!(
        store.unclaimed_counts(Some(acme)).await.unwrap(),
        [(acme, 2)]
    );
    assert_eq!(store.unclaimed_counts(Some(globex)).await.unwrap(), []);
}

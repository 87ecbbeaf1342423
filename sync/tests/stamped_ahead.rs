//! Rows stamped ahead of this node's clock, as a node whose clock was
//! stepped a year ahead and put right leaves them, on both backends: they
//! win no "latest" or "newest" choice over real rows (history, the fleet
//! view's latest fetch, the unclaimed list and its cut).

#[macro_use]
mod common;

use dialtone_sync::store::{BootRecord, UnclaimedDevice};
use dialtone_sync::testing::build::{audit, tenant};
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

const YEAR: Millis = 365 * 24 * 3_600_000;

fn boot(mac: &str, at: Millis, firmware: &str, tenant: Id) -> BootRecord {
    BootRecord {
        mac: mac.into(),
        at,
        remote_ip: "192.0.2.7".into(),
        user_agent: Some(format!("Yealink SIP-T46S {firmware}")),
        protocol: "http".into(),
        file: format!("{mac}.cfg"),
        outcome: "ok".into(),
        bytes: 10,
        model: Some("T46S".into()),
        firmware: Some(firmware.into()),
        tenant_id: Some(tenant),
    }
}

fn device(tenant_id: Id, n: u32, seen: Millis) -> UnclaimedDevice {
    UnclaimedDevice {
        tenant_id,
        mac: format!("001565{n:06x}"),
        family: Some("yealink".into()),
        model: None,
        firmware: None,
        source: "192.0.2.7".into(),
        first_seen: seen,
        last_seen: seen,
        count: 1,
    }
}

both_backends!(history_ranks_rows_stamped_ahead_last, history_body);
async fn history_body(db: TestDb) {
    let store = db.store().await;
    let now = now_millis();
    let mac = "001565000001";
    let skew = MAX_CLOCK_SKEW.as_millis() as Millis;
    store
        .record_boots(&[
            boot(mac, now + YEAR, "future-a", 1),
            boot(mac, now + YEAR + 1, "future-b", 1),
            boot(mac, now - 2_000, "older", 1),
            boot(mac, now - 1_000, "newer", 1),
            // Within the skew nodes' clocks may differ by: a real time.
            boot(mac, now + skew / 2, "close", 1),
        ])
        .await
        .unwrap();
    let firmware = |rows: Vec<BootRecord>| -> Vec<String> {
        rows.into_iter().map(|r| r.firmware.unwrap()).collect()
    };
    let mac = mac.parse().unwrap();
    for tenant in [None, Some(1)] {
        let rows = store.recent_boots(&mac, tenant, 3).await.unwrap();
        assert_eq!(firmware(rows), ["close", "newer", "older"], "{tenant:?}");
        // Past the real ones, as far as the limit reaches, newest first.
        let rows = store.recent_boots(&mac, tenant, 4).await.unwrap();
        assert_eq!(firmware(rows), ["close", "newer", "older", "future-b"]);
        let rows = store.recent_boots(&mac, tenant, 50).await.unwrap();
        assert_eq!(
            firmware(rows),
            ["close", "newer", "older", "future-b", "future-a"]
        );
    }
    assert!(store
        .recent_boots(&mac, Some(2), 50)
        .await
        .unwrap()
        .is_empty());
}

both_backends!(fleet_latest_is_no_row_stamped_ahead, fleet_body);
async fn fleet_body(db: TestDb) {
    let store = db.store().await;
    let now = now_millis();
    let (a, b, c) = ("001565000001", "001565000002", "001565000003");
    store
        .record_boots(&[
            // Old firmware stamped a year ahead; the real fetch since, of
            // new firmware, is the latest.
            boot(a, now + YEAR, "66.85.0.1", 1),
            boot(a, now - 40 * 24 * 3_600_000, "66.86.0.15", 1),
            // Only rows stamped ahead: the latest of them is all there is.
            boot(b, now + YEAR, "66.85.0.1", 1),
            boot(b, now + YEAR + 5, "66.85.0.2", 1),
            // Another owner's row ahead does not count either way.
            boot(c, now + YEAR, "99.0.0.0", 2),
            boot(c, now - 1_000, "66.86.0.15", 1),
        ])
        .await
        .unwrap();
    let macs: Vec<Mac> = [a, b, c, "001565000004"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    let fleet = store
        .fleet_history(1, &macs, now - 3_600_000)
        .await
        .unwrap();
    let mut latest: Vec<(String, Millis, String)> = fleet
        .latest
        .into_iter()
        .map(|r| (r.mac, r.at, r.firmware.unwrap()))
        .collect();
    latest.sort();
    assert_eq!(
        latest,
        [
            (a.into(), now - 40 * 24 * 3_600_000, "66.86.0.15".into()),
            (b.into(), now + YEAR + 5, "66.85.0.2".into()),
            (c.into(), now - 1_000, "66.86.0.15".into()),
        ]
    );
}

async fn acme(store: &dyn Store) -> Id {
    store
        .apply(&[tenant("acme", "US")], &audit("t"))
        .await
        .unwrap();
    let (data, _, _) = store.load_all().await.unwrap();
    data.tenants[0].id
}

both_backends!(unclaimed_cut_drops_rows_stamped_ahead_first, unclaimed_body);
async fn unclaimed_body(db: TestDb) {
    let store = db.store().await;
    let acme = acme(&*store).await;
    let now = now_millis();
    // The list full of devices seen by a node a year ahead.
    let ahead: Vec<UnclaimedDevice> = (0..5)
        .map(|n| device(acme, n, now + YEAR + n as Millis))
        .collect();
    store.record_unclaimed(&ahead, 5).await.unwrap();
    // A new phone, seen now, is kept; one stamped ahead goes instead.
    store
        .record_unclaimed(&[device(acme, 100, now - 1_000)], 5)
        .await
        .unwrap();
    let listed = store.unclaimed_devices(acme, 1_000).await.unwrap();
    let macs: Vec<&str> = listed.iter().map(|d| d.mac.as_str()).collect();
    assert_eq!(
        macs,
        [
            "001565000064",
            "001565000004",
            "001565000003",
            "001565000002",
            "001565000001"
        ]
    );
    // Another, with room made the same way; the real ones rank by time.
    store
        .record_unclaimed(&[device(acme, 101, now - 500)], 5)
        .await
        .unwrap();
    let listed = store.unclaimed_devices(acme, 1_000).await.unwrap();
    let macs: Vec<&str> = listed.iter().map(|d| d.mac.as_str()).collect();
    assert_eq!(
        macs,
        [
            "001565000065",
            "001565000064",
            "001565000004",
            "001565000003",
            "001565000002"
        ]
    );
    // A device stamped ahead and seen again now is seen now: it ranks with
    // the real ones, where the later stamp kept it last in line.
    store
        .record_unclaimed(&[device(acme, 2, now)], 5)
        .await
        .unwrap();
    let listed = store.unclaimed_devices(acme, 1_000).await.unwrap();
    assert_eq!(listed[0].mac, "001565000002");
    assert_eq!(listed[0].last_seen, now);
    assert_eq!(listed[0].count, 2);
    // A full list of real devices cuts every row stamped ahead before any
    // of them.
    let real: Vec<UnclaimedDevice> = (200..205).map(|n| device(acme, n, now - 10_000)).collect();
    store.record_unclaimed(&real, 5).await.unwrap();
    let listed = store.unclaimed_devices(acme, 1_000).await.unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|d| d.last_seen <= now), "{listed:?}");
    assert_eq!(listed[0].mac, "001565000002");
}

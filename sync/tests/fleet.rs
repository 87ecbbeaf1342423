//! `Store::fleet_history` against both SQLite and PostgreSQL: the latest
//! fetch per phone and fetches per hour, each only the asking tenant's.

#[macro_use]
mod common;

use dialtone_sync::store::BootRecord;
use dialtone_sync::testing::TestDb;
use dialtone_sync::{now_millis, Mac};

const HOUR: i64 = 3_600_000;

fn boot(mac: &str, at: i64, outcome: &str, firmware: &str, tenant: i64) -> BootRecord {
    BootRecord {
        mac: mac.into(),
        at,
        remote_ip: "192.0.2.7".into(),
        user_agent: Some(format!("Yealink SIP-T46S {firmware}")),
        protocol: "http".into(),
        file: format!("{mac}.cfg"),
        outcome: outcome.into(),
        bytes: 10,
        model: Some("T46S".into()),
        firmware: Some(firmware.into()),
        tenant_id: Some(tenant),
    }
}

both_backends!(fleet_history_reads_latest_fetches_and_hours, fleet_body);
async fn fleet_body(db: TestDb) {
    let store = db.store().await;
    // Well inside an hour, so the buckets below do not depend on the clock.
    let hour = (now_millis() / HOUR - 1) * HOUR;
    let a = "001565000001";
    let b = "001565000002";
    let c = "001565000003";
    store
        .record_boots(&[
            boot(a, hour - 3 * HOUR + 5, "ok", "66.85.0.1", 1),
            boot(a, hour + 10, "ok", "66.86.0.15", 1),
            // The same instant twice: the later row wins.
            boot(b, hour + 20, "ok", "66.86.0.15", 1),
            boot(b, hour + 20, "unauthorized", "66.86.0.15", 1),
            // Newer, but made under another owner of the MAC.
            boot(b, hour + 30, "ok", "99.0.0.0", 2),
            // Another tenant's phone.
            boot(c, hour + 40, "ok", "66.86.0.15", 2),
            // Before the window.
            boot(a, hour - 10 * HOUR, "ok", "66.80.0.1", 1),
        ])
        .await
        .unwrap();
    let macs: Vec<Mac> = [a, b, c, "001565000004"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    let fleet = store
        .fleet_history(1, &macs, hour - 5 * HOUR)
        .await
        .unwrap();
    let mut latest: Vec<(String, String, String)> = fleet
        .latest
        .iter()
        .map(|r| {
            (
                r.mac.clone(),
                r.outcome.clone(),
                r.firmware.clone().unwrap(),
            )
        })
        .collect();
    latest.sort();
    assert_eq!(
        latest,
        [
            (a.into(), "ok".into(), "66.86.0.15".into()),
            (b.into(), "unauthorized".into(), "66.86.0.15".into()),
        ]
    );
    assert_eq!(fleet.boots_per_hour, [(hour - 3 * HOUR, 1), (hour, 3)]);

    // More MACs than one statement binds: chunks add up.
    let many: Vec<Mac> = (0..1200u64)
        .map(|i| format!("0004f2{:06x}", i).parse().unwrap())
        .collect();
    let records: Vec<BootRecord> = many
        .iter()
        .map(|m| boot(&m.to_string(), hour + 1, "ok", "1.0", 3))
        .collect();
    store.record_boots(&records).await.unwrap();
    let fleet = store.fleet_history(3, &many, hour).await.unwrap();
    assert_eq!(fleet.latest.len(), 1200);
    assert_eq!(fleet.boots_per_hour, [(hour, 1200)]);
    // Nothing asked, nothing read.
    let none = store.fleet_history(3, &[], 0).await.unwrap();
    assert!(none.latest.is_empty() && none.boots_per_hour.is_empty());
}

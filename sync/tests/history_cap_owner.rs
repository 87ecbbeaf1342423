//! The per-phone cap on history rows of fetches not served: refusals,
//! which anyone who knows a MAC can cause from forged sources, are counted
//! apart from the phone's own failures past admission, so a flood of the
//! first never hides the second.

use std::time::Duration;

use dialtone_sync::history::{self, FAILED_PER_PHONE_PER_MINUTE, PER_PHONE_PER_MINUTE};
use dialtone_sync::store::BootRecord;
use dialtone_sync::testing::TestDb;
use dialtone_sync::{now_millis, Mac};
use tokio_util::sync::CancellationToken;

const MAC: &str = "001565000001";

fn fetch(remote_ip: String, outcome: &str, file: &str) -> BootRecord {
    BootRecord {
        mac: MAC.into(),
        at: now_millis(),
        remote_ip,
        user_agent: None,
        protocol: "tftp".into(),
        file: file.into(),
        outcome: outcome.into(),
        bytes: 0,
        model: None,
        firmware: None,
        tenant_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_refusals_leave_the_phones_own_failures_recorded() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let (sink, writer) = history::channel(store.clone(), 100_000);
    let stop = CancellationToken::new();
    let writing = tokio::spawn(writer.run(stop.clone(), Duration::from_secs(10)));

    // A forger naming the phone's file from ever new sources: not admitted.
    for n in 0..500u32 {
        let source = format!("198.51.{}.{}", n / 250, n % 250);
        sink.record(fetch(source, "not-found", "001565000001.cfg"));
    }
    // Then the phone itself, from its office, fails past admission.
    let own = [
        "error: template yealink.cfg line 3: unknown variable",
        "client-error 2 (access violation): \"rejected\"",
        "stalled: no acknowledgement within the retries",
    ];
    for (n, outcome) in own.iter().enumerate() {
        sink.record(fetch(
            "192.0.2.10".into(),
            outcome,
            &format!("file-{n}.cfg"),
        ));
    }
    // And past its own cap, its failures are bounded too.
    for n in 0..100u32 {
        sink.record(fetch(
            format!("203.0.113.{n}"),
            "error: template yealink.cfg: boom",
            "001565000001.cfg",
        ));
    }

    stop.cancel();
    writing.await.unwrap();
    let mac: Mac = MAC.parse().unwrap();
    let rows = store.recent_boots(&mac, None, 100_000).await.unwrap();
    let refused = rows.iter().filter(|r| r.outcome == "not-found").count();
    assert_eq!(refused, PER_PHONE_PER_MINUTE as usize);
    for outcome in own {
        assert!(
            rows.iter().any(|r| r.outcome == outcome),
            "the phone's own {outcome:?} was crowded out by forged refusals"
        );
    }
    let failed = rows.len() - refused;
    assert_eq!(failed, FAILED_PER_PHONE_PER_MINUTE as usize);
}

//! A served fetch is a repeat only of one that got the same bytes: the
//! refetch a resync asked for, served by a node that served the phone
//! moments before, gets a row on that node too, while a phone fetching the
//! same file over and over still adds one row a minute.

use std::time::Duration;

use dialtone_sync::history;
use dialtone_sync::store::BootRecord;
use dialtone_sync::testing::TestDb;
use dialtone_sync::{now_millis, Mac};
use tokio_util::sync::CancellationToken;

const MAC: &str = "001565000001";

fn fetch(at: i64) -> BootRecord {
    BootRecord {
        mac: MAC.into(),
        at,
        remote_ip: "192.0.2.7".into(),
        user_agent: None,
        protocol: "http".into(),
        file: format!("{MAC}.cfg"),
        outcome: "ok".into(),
        bytes: 120,
        model: None,
        firmware: None,
        tenant_id: Some(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_of_changed_content_within_the_window_is_recorded() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let (sink, writer) = history::channel(store.clone(), 100);
    let stop = CancellationToken::new();
    let writing = tokio::spawn(writer.run(stop.clone(), Duration::from_secs(10)));

    let start = now_millis();
    sink.record_served(fetch(start), "\"old\"");
    // A reboot loop: the same bytes again, and again.
    sink.record_served(fetch(start + 1_000), "\"old\"");
    sink.record_served(fetch(start + 2_000), "\"old\"");
    // The line changed, a NOTIFY went out from another node, and the
    // phone fetched the new file seconds later: the same length, as a
    // changed password often leaves it.
    sink.record_served(fetch(start + 4_000), "\"new\"");
    sink.record_served(fetch(start + 5_000), "\"new\"");

    stop.cancel();
    writing.await.unwrap();
    let mac: Mac = MAC.parse().unwrap();
    let mut rows: Vec<_> = store
        .recent_boots(&mac, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.at - start)
        .collect();
    rows.sort();
    assert_eq!(rows, [0, 4_000]);
    assert_eq!(sink.repeats(), 3);
}

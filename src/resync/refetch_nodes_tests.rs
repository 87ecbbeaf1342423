//! A refetch seen whichever node served it, also one that served the
//! phone moments before the NOTIFY (and, not having sent it, does not
//! record the phone in full); and fetches a clock stepped ahead stamped,
//! which are trusted neither as a refetch nor as the phone's address.

use std::sync::Arc;

use dialtone_sync::history::{self, HistorySink};
use dialtone_sync::testing::{build, test_key, TestDb};
use dialtone_sync::{watcher, Backend, Mac, Mirror};
use dialtone_tftp::{Protocol, ProvisionOptions, Provisioner, Request, Shipped};

use super::*;
use crate::config::ResyncConfig;
use crate::resync::track::{Entry, Resync, State, Via};

const MAC: &str = "001565000001";

fn fetch(file: &str, at: Millis) -> BootRecord {
    BootRecord {
        mac: MAC.into(),
        at,
        remote_ip: "192.0.2.7".into(),
        user_agent: None,
        protocol: "http".into(),
        file: file.into(),
        outcome: "ok".into(),
        bytes: 10,
        model: None,
        firmware: None,
        tenant_id: Some(1),
    }
}

#[test]
fn only_a_served_fetch_of_its_own_file_after_the_notify_counts() {
    let sent = 1_700_000_000_000;
    let now = sent + 5_000;
    let own = format!("{MAC}.cfg");
    let rows = [
        fetch(&own, sent + 3_000),
        fetch(&own, sent + 1_500),
        fetch(&own, sent - 30_000),
    ];
    assert_eq!(refetch_in(&rows, MAC, sent, now), Some(sent + 1_500));
    // A fetch just before the NOTIFY (the phone's own periodic one) is not
    // the refetch, however close.
    let before = [fetch(&own, sent - 30_000), fetch(&own, sent - 200)];
    assert_eq!(refetch_in(&before, MAC, sent, now), None);
    // Nor is a fetch of another file, or one not served.
    let others = [
        fetch("y000000000028.cfg", sent + 1_000),
        BootRecord {
            outcome: "not-found".into(),
            ..fetch(&own, sent + 1_000)
        },
    ];
    assert_eq!(refetch_in(&others, MAC, sent, now), None);
}

/// A fetch made before the NOTIFY by a node whose clock ran ahead is
/// stamped after it: not the refetch once its stamp is further ahead of
/// this node's clock than nodes' clocks may differ.
#[test]
fn a_fetch_stamped_ahead_of_the_clock_is_not_the_refetch() {
    let sent = 1_700_000_000_000;
    let now = sent + 2_000;
    let skew = dialtone_tftp::digest::MAX_CLOCK_SKEW.as_millis() as Millis;
    let year = 365 * 24 * 3600 * 1000;
    let own = format!("{MAC}.cfg");
    let ahead = [fetch(&own, sent + year), fetch(&own, now + skew + 1)];
    assert_eq!(refetch_in(&ahead, MAC, sent, now), None);
    let real = [fetch(&own, sent + year), fetch(&own, sent + 1_500)];
    assert_eq!(refetch_in(&real, MAC, sent, now), Some(sent + 1_500));
    // Within that allowance it is a fetch like any other.
    let close = [fetch(&own, now + skew)];
    assert_eq!(refetch_in(&close, MAC, sent, now), Some(now + skew));
}

/// A node that serves phones: its own provisioner and history sink.
fn serving_node(mirror: &Arc<Mirror>, sink: HistorySink) -> Provisioner {
    let templates = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates");
    Provisioner::new(
        mirror.clone(),
        test_key(),
        Shipped::load(&templates, 1).unwrap(),
        ProvisionOptions::default(),
    )
    .with_history(sink)
}

fn phone_fetch(node: &Provisioner) -> Vec<u8> {
    let path = format!("{MAC}.cfg");
    let served = node
        .provision(&Request {
            path: &path,
            remote: Some("192.0.2.7".parse().unwrap()),
            protocol: Protocol::Http,
            ..Default::default()
        })
        .unwrap();
    served.body.to_vec()
}

/// Resync `seq` of the phone, sent at `sent` and answered 2xx, as the
/// sending node tracks it.
fn answered(service: &ResyncService, seq: u64, tenant_id: dialtone_sync::Id, sent: Millis) {
    let mac: Mac = MAC.parse().unwrap();
    let view = Resync {
        id: format!("t-{seq}"),
        tenant: "acme".into(),
        mac: mac.to_string(),
        family: "yealink".into(),
        event: "check-sync;reboot=false".into(),
        target: "sip:100@sip.example.net".into(),
        via: Via::Proxy,
        state: State::Answered,
        status: Some(200),
        reason: Some("OK".into()),
        queued_at: sent,
        sent_at: Some(sent),
        answered_at: Some(sent),
        refetched_at: None,
    };
    let mut book = service.book();
    book.table.insert(
        seq,
        Entry {
            tenant_id,
            mac,
            view,
        },
    );
    book.watch.add(seq, Instant::now());
}

/// Node B served the phone; then node A sent it a NOTIFY for a changed
/// line, and the phone refetched from B within B's repeat window.
async fn a_refetch_of_new_bytes_from_another_node_is_seen(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let seed = [build::tenant("acme", "US"), build::phone("acme", 1, 1)];
    store.apply(&seed, &build::audit("seed")).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let tenant_id = mirror.load().tenant_by_slug("acme").unwrap().id;

    let stop = CancellationToken::new();
    let (sink_b, writer_b) = history::channel(store.clone(), 100);
    let node_b = serving_node(&mirror, sink_b);
    let writing_b = tokio::spawn(writer_b.run(stop.clone(), Duration::from_secs(10)));
    let (sink_a, writer_a) = history::channel(store.clone(), 100);
    let writing_a = tokio::spawn(writer_a.run(stop.clone(), Duration::from_secs(10)));
    let config = ResyncConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let node_a = ResyncService::new(&config, store.clone(), Some(sink_a)).unwrap();

    let before = phone_fetch(&node_b);
    // The line's password changes: the reason for the NOTIFY.
    let changed = build::phone("acme", 1, 1);
    let dialtone_sync::Mutation::UpsertPhone(mut input) = changed else {
        unreachable!("a phone")
    };
    input.lines[0].password = Some("changed".into());
    let change = [dialtone_sync::Mutation::UpsertPhone(input)];
    store.apply(&change, &build::audit("edit")).await.unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    // A clock step apart: the first fetch must not pass for the refetch.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let sent = now_millis();
    answered(&node_a, 1, tenant_id, sent);
    let after = phone_fetch(&node_b);
    assert_ne!(before, after, "the change reaches the file");

    let cancel = CancellationToken::new();
    let watching = tokio::spawn(node_a.clone().watch_refetches(cancel.clone()));
    let mut refetched = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        refetched = node_a.list(None, 10, |_| true)[0].refetched_at;
        if refetched.is_some() {
            break;
        }
    }
    cancel.cancel();
    watching.await.unwrap();
    stop.cancel();
    writing_a.await.unwrap();
    writing_b.await.unwrap();
    let refetched = refetched.expect("node B's refetch of the changed file seen on node A");
    assert!(
        refetched >= sent,
        "{refetched} is the refetch, sent at {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refetch_of_new_bytes_from_another_node_is_seen_sqlite() {
    a_refetch_of_new_bytes_from_another_node_is_seen(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refetch_of_new_bytes_from_another_node_is_seen_postgres() {
    a_refetch_of_new_bytes_from_another_node_is_seen(Backend::Postgres).await;
}

/// Rows a clock stepped ahead stamped sort first in history and outlive
/// pruning by age until their stamp: more of them than one read takes hid
/// every real fetch, from the direct address and from the refetch watch.
async fn fetches_stamped_ahead_do_not_fill_the_history_read(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let seed = [build::tenant("acme", "US"), build::phone("acme", 1, 1)];
    store.apply(&seed, &build::audit("seed")).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let state = mirror.load();
    let tenant = state.tenant_by_slug("acme").unwrap();
    let now = now_millis();
    let year = 365 * 24 * 3600 * 1000;
    let own = format!("{MAC}.cfg");
    let at = |remote_ip: &str, at: Millis| BootRecord {
        remote_ip: remote_ip.into(),
        tenant_id: Some(tenant.id),
        ..fetch(&own, at)
    };
    let mut rows: Vec<BootRecord> = (0..150)
        .map(|n| at("10.9.9.9", now + year - n * 61_000))
        .collect();
    rows.push(at("10.1.1.2", now - 60_000));
    store.record_boots(&rows).await.unwrap();

    let config = ResyncConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        direct: true,
        ..Default::default()
    };
    let service = ResyncService::new(&config, store.clone(), None).unwrap();
    let mac: Mac = MAC.parse().unwrap();
    let to = service.destination(Via::Direct, &mac, tenant).await;
    assert_eq!(to, Ok("10.1.1.2:5060".parse().unwrap()));

    answered(&service, 1, tenant.id, now - 120_000);
    let cancel = CancellationToken::new();
    let watching = tokio::spawn(service.clone().watch_refetches(cancel.clone()));
    let mut refetched = None;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        refetched = service.list(None, 10, |_| true)[0].refetched_at;
        if refetched.is_some() {
            break;
        }
    }
    cancel.cancel();
    watching.await.unwrap();
    assert_eq!(refetched, Some(now - 60_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_stamped_ahead_do_not_fill_the_history_read_sqlite() {
    fetches_stamped_ahead_do_not_fill_the_history_read(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_stamped_ahead_do_not_fill_the_history_read_postgres() {
    fetches_stamped_ahead_do_not_fill_the_history_read(Backend::Postgres).await;
}

//! The history writer against stores that fail, stall, panic or flood:
//! what is written, what is dropped and counted, and when the writer ends.

use super::*;
use crate::model::{Id, Mac};
use crate::testing::TestDb;
use tokio::sync::{mpsc, Semaphore};

fn fetch(at: Millis) -> BootRecord {
    BootRecord {
        mac: "001565000001".into(),
        at,
        remote_ip: "192.0.2.1".into(),
        user_agent: None,
        protocol: "http".into(),
        file: "001565000001.cfg".into(),
        outcome: "ok".into(),
        bytes: 1,
        model: None,
        firmware: None,
        tenant_id: Some(1),
    }
}

/// A fetch of `file` by `tenant`'s phone (no repeat of another file).
fn fetch_of(tenant: Option<Id>, mac: &str, file: &str) -> BootRecord {
    BootRecord {
        mac: mac.into(),
        file: file.into(),
        tenant_id: tenant,
        ..fetch(crate::model::now_millis())
    }
}

async fn stored(store: &dyn Store, mac: &str, tenant: Id) -> usize {
    let mac: Mac = mac.parse().unwrap();
    store
        .recent_boots(&mac, Some(tenant), 10_000)
        .await
        .unwrap()
        .len()
}

/// Refusals of one phone's files from ever new sources (forged TFTP
/// requests, or the addresses of one IPv6 /64) are not each a row: a /64
/// is one source, and a phone adds at most `PER_PHONE_PER_MINUTE` rows of
/// refusals a minute. Its served fetches are never crowded out by them.
#[test]
fn new_sources_do_not_flood_one_phones_history() {
    let (tx, mut rx) = queue::bounded(100_000, DROPPED, |r: &BootRecord| r.tenant_id);
    let sink = HistorySink::new(tx);
    let refused = |remote_ip: String, at: Millis| BootRecord {
        remote_ip,
        outcome: "error: refused".into(),
        ..fetch(at)
    };
    for n in 0..1_000u32 {
        sink.record(refused(format!("2001:db8::{n:x}"), 1_000 + Millis::from(n)));
    }
    for n in 0..1_000u32 {
        let ip = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
        sink.record(refused(ip, 2_000 + Millis::from(n)));
    }
    let mut seen = Vec::new();
    rx.try_recv_many(&mut seen, usize::MAX);
    assert_eq!(seen.len(), PER_PHONE_PER_MINUTE as usize, "{}", seen.len());
    assert_eq!(sink.repeats(), 999);
    // The phone's own fetches, served, still go in: files of a boot, from
    // its office's address.
    for n in 0..40u32 {
        sink.record(BootRecord {
            file: format!("file{n}.cfg"),
            ..fetch(3_000 + Millis::from(n))
        });
    }
    // Another phone, and the next minute, are counted apart.
    sink.record(BootRecord {
        mac: "001565000002".into(),
        ..refused("10.200.0.2".into(), 4_000)
    });
    sink.record(refused("10.200.0.1".into(), 70_000));
    rx.try_recv_many(&mut seen, usize::MAX);
    assert_eq!(seen.len(), PER_PHONE_PER_MINUTE as usize + 42);
}

#[test]
fn a_fetch_asked_for_is_recorded_even_as_a_repeat() {
    let (tx, mut rx) = queue::bounded(16, DROPPED, |r: &BootRecord| r.tenant_id);
    let sink = HistorySink::new(tx);
    sink.record(fetch(1_000));
    sink.record(fetch(2_000));
    assert_eq!(sink.repeats(), 1);
    sink.record_next("001565000001", 10_000);
    sink.record(fetch(3_000));
    sink.record(fetch(4_000));
    // Past its window the filter is back.
    sink.record(fetch(70_000));
    sink.record(fetch(71_000));
    let mut seen = Vec::new();
    rx.try_recv_many(&mut seen, usize::MAX);
    let seen: Vec<Millis> = seen.iter().map(|r| r.at).collect();
    assert_eq!(seen, [1_000, 3_000, 4_000, 70_000]);
}

/// One tenant's phones (or requests forged in their name) flood the
/// sink while the writer is stuck on a slow database: another tenant's
/// fetches, and unknown phones', still get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_flooding_leaves_room_for_the_others() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let write: Write<BootRecord> = {
        let (store, gate) = (store.clone(), gate.clone());
        Box::new(move |records| {
            let (store, gate, entered) = (store.clone(), gate.clone(), entered_tx.clone());
            Box::pin(async move {
                let _ = entered.send(());
                let _slow = gate.acquire().await;
                store.record_boots(records).await
            })
        })
    };
    let (sink, writer) = channel_with(64, Duration::ZERO, write);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(writer.run(cancel.clone(), Duration::from_secs(10)));
    sink.record(fetch_of(Some(1), "001565000001", "first.cfg"));
    entered
        .recv()
        .await
        .expect("the writer takes the first batch");

    for n in 0..1_000 {
        sink.record(fetch_of(Some(1), "001565000001", &format!("{n}.cfg")));
    }
    for n in 0..3 {
        sink.record(fetch_of(Some(2), "001565000002", &format!("{n}.cfg")));
        sink.record(fetch_of(None, "001565999999", &format!("{n}.cfg")));
    }
    assert_eq!(sink.dropped(), 1_000 - 16, "tenant 1 holds a quarter of 64");

    gate.add_permits(Semaphore::MAX_PERMITS);
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(stored(&*store, "001565000002", 2).await, 3);
    let unknown = store
        .recent_boots(&"001565999999".parse().unwrap(), None, 10)
        .await
        .unwrap();
    assert_eq!(unknown.len(), 3);
    assert_eq!(stored(&*store, "001565000001", 1).await, 1 + 16);
}

/// A database that never answers cannot hold the shutdown: the last
/// batch gets its limit, then the writer ends.
#[tokio::test]
async fn a_final_batch_the_database_never_takes_ends_at_its_limit() {
    let write: Write<BootRecord> = Box::new(|_| Box::pin(std::future::pending()));
    let (sink, writer) = channel_with(16, Duration::from_secs(3_600), write);
    sink.record(fetch_of(Some(1), "001565000001", "last.cfg"));
    let stop = CancellationToken::new();
    stop.cancel();
    let run = writer.run(stop, Duration::from_millis(50));
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the writer ends at its limit");
}

/// One poison record in a batch with another tenant's: the batch is
/// bisected down to it, and only it is dropped, within 2·log2(n) + 2
/// writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_costs_itself_not_its_batch() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let writes = Arc::new(AtomicU64::new(0));
    let write: Write<BootRecord> = {
        let (store, writes) = (store.clone(), writes.clone());
        Box::new(move |records| {
            let (store, writes) = (store.clone(), writes.clone());
            Box::pin(async move {
                writes.fetch_add(1, Ordering::Relaxed);
                if records.iter().any(|r| r.file == "poison.cfg") {
                    panic!("injected: the store panics on this record");
                }
                store.record_boots(records).await
            })
        })
    };
    // Room for tenant 2's sixteen within its share.
    let (sink, writer) = channel_with(256, Duration::ZERO, write);
    for n in 0..5 {
        sink.record(fetch_of(Some(2), "001565000002", &format!("{n}.cfg")));
    }
    sink.record(fetch_of(Some(1), "001565000001", "poison.cfg"));
    for n in 5..16 {
        sink.record(fetch_of(Some(2), "001565000002", &format!("{n}.cfg")));
    }
    // Stopped before it runs: all 17 are one batch.
    let stop = CancellationToken::new();
    stop.cancel();
    writer.run(stop, Duration::from_secs(10)).await;
    assert_eq!(sink.dropped(), 0);
    assert_eq!(stored(&*store, "001565000002", 2).await, 16);
    assert_eq!(stored(&*store, "001565000001", 1).await, 0);
    // 17 records: five levels of halves, two writes each, and the first.
    assert!(writes.load(Ordering::Relaxed) <= 2 * 5 + 2, "{writes:?}");
}

/// A database that cannot be reached fails every half too: the batch
/// is dropped after one write, not bisected.
#[tokio::test]
async fn an_unreachable_database_is_not_bisected() {
    let writes = Arc::new(AtomicU64::new(0));
    let write: Write<BootRecord> = {
        let writes = writes.clone();
        Box::new(move |_| {
            writes.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { Err(crate::SyncError::Database(sqlx::Error::PoolTimedOut)) })
        })
    };
    let (sink, writer) = channel_with(256, Duration::ZERO, write);
    for n in 0..16 {
        sink.record(fetch_of(Some(n), "001565000002", "a.cfg"));
    }
    let stop = CancellationToken::new();
    stop.cancel();
    writer.run(stop, Duration::from_secs(10)).await;
    assert_eq!(writes.load(Ordering::Relaxed), 1);
}

/// A write that finds no connection `times` times (an outage), then
/// writes; with its count of writes and of records written.
fn unreachable_for(times: u64) -> (Write<BootRecord>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let (writes, written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let write: Write<BootRecord> = {
        let (writes, written) = (writes.clone(), written.clone());
        Box::new(move |records| {
            let (writes, written) = (writes.clone(), written.clone());
            let n = records.len() as u64;
            Box::pin(async move {
                if writes.fetch_add(1, Ordering::Relaxed) < times {
                    return Err(crate::SyncError::Database(sqlx::Error::PoolTimedOut));
                }
                written.fetch_add(n, Ordering::Relaxed);
                Ok(())
            })
        })
    };
    (write, writes, written)
}

/// A database no connection can be had for (an outage) costs no record
/// the queue can hold: the batch is kept and written once it answers.
#[tokio::test]
async fn a_batch_waits_out_an_unreachable_database() {
    let (write, writes, written) = unreachable_for(2);
    let (sink, writer) = channel_with(256, Duration::ZERO, write);
    for n in 0..16 {
        sink.record(fetch_of(Some(n), "001565000002", "a.cfg"));
    }
    let stop = CancellationToken::new();
    let running = tokio::spawn(writer.run(stop.clone(), Duration::from_secs(10)));
    for _ in 0..1000 {
        if written.load(Ordering::Relaxed) == 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    running.await.unwrap();
    assert_eq!(written.load(Ordering::Relaxed), 16, "{writes:?} writes");
    assert_eq!(sink.dropped(), 0);
}

/// A stop while a batch waits out the database writes that batch and
/// everything queued behind it, once the database answers.
#[tokio::test]
async fn a_stop_while_waiting_out_the_database_writes_the_queue_too() {
    let (write, writes, written) = unreachable_for(1);
    let (sink, writer) = channel_with(256, Duration::ZERO, write);
    sink.record(fetch_of(Some(0), "001565000002", "a.cfg"));
    let stop = CancellationToken::new();
    let running = tokio::spawn(writer.run(stop.clone(), Duration::from_secs(10)));
    for _ in 0..1000 {
        if writes.load(Ordering::Relaxed) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Queued behind the kept batch while the writer waits to try again.
    for n in 1..16 {
        sink.record(fetch_of(Some(n), "001565000002", "a.cfg"));
    }
    stop.cancel();
    running.await.unwrap();
    assert_eq!(written.load(Ordering::Relaxed), 16, "{writes:?} writes");
}

/// The store panics on one batch: that batch is dropped, the writer
/// lives on and writes the next ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_panics_costs_that_batch_only() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let (written_tx, mut written) = mpsc::unbounded_channel();
    let write: Write<BootRecord> = {
        let store = store.clone();
        Box::new(move |records| {
            let (store, written) = (store.clone(), written_tx.clone());
            Box::pin(async move {
                let result = if records.iter().any(|r| r.file == "poison.cfg") {
                    let _ = written.send(false);
                    panic!("injected: the store panics on this batch");
                } else {
                    store.record_boots(records).await
                };
                let _ = written.send(true);
                result
            })
        })
    };
    let (sink, writer) = channel_with(16, Duration::ZERO, write);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(writer.run(cancel.clone(), Duration::from_secs(10)));

    sink.record(fetch_of(Some(1), "001565000001", "poison.cfg"));
    assert_eq!(written.recv().await, Some(false));
    for round in 0..3 {
        sink.record(fetch_of(Some(1), "001565000001", &format!("{round}.cfg")));
        assert_eq!(written.recv().await, Some(true), "round {round}");
    }
    assert_eq!(stored(&*store, "001565000001", 1).await, 3);
    cancel.cancel();
    task.await
        .expect("the writer ends on cancel, not by a panic");
}

/// A batch under way when the node stops gets the final limit, as the
/// last batch does, not as long as the database takes to answer.
#[tokio::test]
async fn a_write_under_way_at_a_stop_ends_at_the_limit() {
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let write: Write<BootRecord> = Box::new(move |_| {
        let _ = started_tx.send(());
        Box::pin(std::future::pending())
    });
    let (sink, writer) = channel_with(16, Duration::ZERO, write);
    let stop = CancellationToken::new();
    let run = tokio::spawn(writer.run(stop.clone(), Duration::from_millis(50)));
    sink.record(fetch_of(Some(1), "001565000001", "a.cfg"));
    started.recv().await.unwrap();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the writer ends at its limit")
        .unwrap();
}

/// A write the database never answers (a connection gone silent) is
/// given up at the write limit, and the writer goes on with the next.
#[tokio::test(start_paused = true)]
async fn a_write_that_never_answers_is_given_up() {
    let calls = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let write: Write<BootRecord> = {
        let calls = calls.clone();
        Box::new(move |_| {
            let first = calls.fetch_add(1, Ordering::Relaxed) == 0;
            let done = done_tx.clone();
            Box::pin(async move {
                if first {
                    std::future::pending::<()>().await;
                }
                let _ = done.send(());
                Ok(())
            })
        })
    };
    let (sink, writer) = channel_with(16, Duration::ZERO, write);
    let stop = CancellationToken::new();
    let run = tokio::spawn(writer.run(stop.clone(), Duration::from_secs(10)));
    sink.record(fetch_of(Some(1), "001565000001", "stuck.cfg"));
    while calls.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    sink.record(fetch_of(Some(1), "001565000001", "next.cfg"));
    tokio::time::timeout(Duration::from_secs(3_600), done.recv())
        .await
        .expect("the writer never got past the stuck write");
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    stop.cancel();
    run.await.unwrap();
}

/// A tenant's template can put U+0000 in an outcome (`throw("\0")`);
/// PostgreSQL refuses such text, and a refused row cost its batch's
/// neighbours, any tenant's, their rows. It is replaced when queued.
#[test]
fn no_text_holding_nul_is_queued() {
    let (tx, mut rx) = queue::bounded(16, DROPPED, |r: &BootRecord| r.tenant_id);
    let sink = HistorySink::new(tx);
    sink.record(BootRecord {
        outcome: "error: \0boom".into(),
        user_agent: Some("ua\0".into()),
        ..fetch(1_000)
    });
    let mut seen = Vec::new();
    rx.try_recv_many(&mut seen, usize::MAX);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].outcome, "error: \u{FFFD}boom");
    assert_eq!(seen[0].user_agent.as_deref(), Some("ua\u{FFFD}"));
}

//! A sync's recorded duration takes in its publish: the file and the index
//! build, and the wait for a place in the node's mirror work before them.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::mirror::tests::service::setup;
use crate::mirror::tests::{data, raw};

#[tokio::test]
async fn a_full_syncs_time_takes_in_its_publish() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, service, acme) = setup(dir.path()).await;
    let source = service.source(acme, "ad").unwrap();
    let mirror = source.mirror.as_ref().unwrap();
    let d = data(vec![raw("cn=ann", Some("Ann Example"), &["5550101234"])]);

    // Every place held for a while: the publish waits its turn, as behind
    // other tenants' syncs, and the wait is part of this sync.
    let hold = Duration::from_millis(300);
    let places = service.inner.options.mirror_threads.max(1);
    let holders = futures::future::join_all((0..places).map(|_| {
        service
            .inner
            .mirror_work
            .run(move || std::thread::sleep(hold))
    }));
    let timing = SyncTiming {
        started: Instant::now(),
        full: true,
    };
    // Polled in order: the holders take the places before the publish asks.
    let (_, (published, took)) = tokio::join!(holders, service.publish(mirror, d, true, timing));

    assert!(took >= hold, "{took:?}");
    let status = service.mirror_status(source.id).unwrap();
    assert_eq!(status.entries, 1);
    assert_eq!(status.last_full_ms, Some(took.as_millis() as u64));
    assert_eq!(published.last_full_ms, status.last_full_ms);
    // The file keeps the time up to its own write, the wait included.
    let fingerprint = &mirror.fingerprint;
    let file = store::read(&store::path(dir.path(), source.id), fingerprint, 10)
        .unwrap()
        .unwrap();
    let kept = file.last_full_ms.unwrap();
    assert!(
        kept >= hold.as_millis() as u64 && kept <= status.last_full_ms.unwrap(),
        "{kept} ms"
    );
}

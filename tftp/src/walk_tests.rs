//! Admin list walks run on a lane of their own: tenants' long walks leave
//! the render pool to phones, and a tenant walks one list at a time.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use dialtone_sync::{Dataset, Id};

use crate::pool::PoolOptions;
use crate::provision::{ProvisionOptions, Provisioner};
use crate::templates::Shipped;

fn provisioner(threads: usize) -> Arc<Provisioner> {
    let mirror = dialtone_sync::testing::build::mirror_of(Dataset::default());
    Arc::new(Provisioner::new(
        mirror,
        dialtone_sync::testing::test_key(),
        Shipped::built_in(1),
        ProvisionOptions {
            pool: PoolOptions {
                threads,
                ..PoolOptions::default()
            },
            ..Default::default()
        },
    ))
}

type Log = Arc<Mutex<Vec<&'static str>>>;

/// Starts `name`, a walk of `tenant`'s that records that it began and
/// then blocks until its sender is sent to or dropped (or 10 s pass).
fn blocking_walk(
    provisioner: &Arc<Provisioner>,
    log: &Log,
    tenant: Id,
    name: &'static str,
) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (open, gate) = mpsc::channel::<()>();
    let (provisioner, log) = (provisioner.clone(), log.clone());
    let task = tokio::spawn(async move {
        provisioner
            .walk(tenant, Duration::from_secs(30), move || {
                log.lock().unwrap().push(name);
                let _ = gate.recv_timeout(Duration::from_secs(10));
            })
            .await
            .unwrap();
    });
    (open, task)
}

async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached in 5 s");
}

fn started(log: &Log) -> Vec<&'static str> {
    log.lock().unwrap().clone()
}

/// Before the lane, each tenant's walks ran on the render pool under its
/// render share (half the threads): two tenants walking held every slot,
/// and a third tenant's phone render waited for one of their walks to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_walking_leave_the_render_pool_to_phones() {
    let p = provisioner(2);
    let log = Log::default();
    let (open_a, a) = blocking_walk(&p, &log, 1, "a");
    let (open_b, b) = blocking_walk(&p, &log, 2, "b");
    until("a walk started", || !started(&log).is_empty()).await;
    // Time for the other walk to start, or to take its place in the queue.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let render = tokio::time::timeout(
        Duration::from_secs(2),
        p.on_pool(Some(3), || Ok("rendered")),
    )
    .await;
    assert_eq!(
        render.expect("the render waited for the walks").unwrap(),
        "rendered"
    );
    // Both walks were still running, or waiting to.
    assert!(!a.is_finished() && !b.is_finished());
    drop((open_a, open_b));
    a.await.unwrap();
    b.await.unwrap();
    assert_eq!(started(&log).len(), 2);
}

/// A tenant's second walk waits for its first even while the lane has a
/// free slot, and another tenant's walk runs meanwhile: walks cannot be
/// stopped, so a slot lent past the share could keep the others waiting
/// for up to a walk's whole time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_walks_one_list_at_a_time_beside_others() {
    // A lane of 3.
    let p = provisioner(6);
    let log = Log::default();
    let (open_a1, a1) = blocking_walk(&p, &log, 1, "a1");
    until("a1 started", || started(&log) == ["a1"]).await;
    let (open_a2, a2) = blocking_walk(&p, &log, 1, "a2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (open_b1, b1) = blocking_walk(&p, &log, 2, "b1");
    until("b1 started", || started(&log).contains(&"b1")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(started(&log), ["a1", "b1"], "a2 ran beside a1");
    open_a1.send(()).unwrap();
    a1.await.unwrap();
    until("a2 started after a1", || started(&log).contains(&"a2")).await;
    assert_eq!(started(&log), ["a1", "b1", "a2"]);
    drop((open_a2, open_b1));
    a2.await.unwrap();
    b1.await.unwrap();
}

/// Past its few waiting places a tenant's walk is refused, while another
/// tenant still gets a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_waits_for_few_walks() {
    let p = provisioner(2);
    let log = Log::default();
    let (open, running) = blocking_walk(&p, &log, 1, "running");
    until("the walk started", || !started(&log).is_empty()).await;
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let p = p.clone();
        waiting.push(tokio::spawn(async move {
            p.walk(1, Duration::from_secs(30), || ()).await
        }));
    }
    until("four walks waiting", || p.walks_waiting() == 4).await;
    let refused = p.walk(1, Duration::from_secs(30), || ()).await;
    assert!(
        matches!(refused, Err(crate::ProvisionError::Busy)),
        "{refused:?}"
    );
    let other = {
        let p = p.clone();
        tokio::spawn(async move { p.walk(2, Duration::from_secs(30), || 2).await })
    };
    drop(open);
    running.await.unwrap();
    for walk in waiting {
        walk.await.unwrap().unwrap();
    }
    assert_eq!(other.await.unwrap().unwrap(), 2);
}

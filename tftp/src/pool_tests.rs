use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_sync::Id;

use super::*;

const BUDGET: Duration = Duration::from_secs(5);

fn pool(threads: usize, per_tenant: usize, queue: usize, tenant_queue: usize) -> Arc<RenderPool> {
    Arc::new(RenderPool::new(
        PoolOptions {
            threads,
            per_tenant,
            queue,
            tenant_queue,
        },
        RENDERS,
    ))
}

fn tenant(n: u8) -> Option<Id> {
    Some(Id::from(n))
}

fn waiting(pool: &RenderPool) -> usize {
    pool.inner.lock().waiting
}

/// Why a render of `owner`'s would be refused now, if so (the `reason`
/// label of `dialtone_render_pool_refused_total`).
fn refusal(pool: &RenderPool, owner: u8) -> Option<&'static str> {
    let schedule = pool.inner.lock();
    pool.inner.refusal(&schedule, tenant(owner))
}

/// Waits (bounded) until `ready` holds, polling.
async fn until(mut ready: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

/// A job that records that it started, then waits for its gate.
fn gated(
    log: &Arc<Mutex<Vec<&'static str>>>,
    name: &'static str,
) -> (
    mpsc::Sender<()>,
    impl FnOnce() -> Result<(), ProvisionError> + Send + 'static,
) {
    let (open, gate) = mpsc::channel::<()>();
    let log = log.clone();
    let job = move || {
        log.lock().unwrap().push(name);
        let _ = gate.recv_timeout(Duration::from_secs(5));
        Ok(())
    };
    (open, job)
}

/// Runs `n` jobs of one tenant at once; each waits (up to `patience`) for
/// all `n` to be running. Returns the most that ran together.
async fn most_at_once(
    pool: &Arc<RenderPool>,
    owner: Option<Id>,
    n: usize,
    patience: Duration,
) -> usize {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            pool.run(owner, BUDGET, "test", move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let started = Instant::now();
                while most.load(Ordering::SeqCst) < n && started.elapsed() < patience {
                    std::thread::sleep(Duration::from_micros(200));
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
            .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    most.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_alone_renders_on_every_thread() {
    let pool = pool(3, 1, 100, 100);
    assert_eq!(
        most_at_once(&pool, tenant(1), 3, Duration::from_secs(5)).await,
        3
    );
    let schedule = pool.inner.lock();
    assert_eq!((schedule.free, schedule.waiting), (3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_a_slow_render_keeps_to_its_share() {
    let pool = pool(3, 1, 100, 100);
    pool.run(tenant(1), BUDGET, "slow", || {
        std::thread::sleep(BORROW_LIMIT * 3);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(
        most_at_once(&pool, tenant(1), 2, Duration::from_millis(200)).await,
        1
    );
    // Another tenant is not held to the first one's record.
    assert_eq!(
        most_at_once(&pool, tenant(2), 3, Duration::from_secs(5)).await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_under_its_share_goes_before_a_borrower() {
    let pool = pool(2, 1, 100, 100);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (open_a1, a1) = gated(&log, "a1");
    let (open_a2, a2) = gated(&log, "a2");
    let (_, a3) = gated(&log, "a3");
    let (_, b1) = gated(&log, "b1");
    let spawn = |owner, job| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.run(owner, BUDGET, "test", job).await })
    };
    let a1 = spawn(tenant(1), a1);
    until(|| log.lock().unwrap().len() == 1).await;
    let a2 = spawn(tenant(1), a2);
    until(|| log.lock().unwrap().len() == 2).await; // a2 borrowed the free slot
    let a3 = spawn(tenant(1), a3);
    until(|| waiting(&pool) == 1).await;
    let b1 = spawn(tenant(2), b1);
    until(|| waiting(&pool) == 2).await;
    open_a1.send(()).unwrap();
    // The freed slot goes to tenant 2 (under its share), not to a3,
    // queued earlier by a tenant already at its share.
    until(|| log.lock().unwrap().len() == 3).await;
    open_a2.send(()).unwrap();
    for task in [a1, a2, a3, b1] {
        task.await.unwrap().unwrap();
    }
    assert_eq!(*log.lock().unwrap(), ["a1", "a2", "b1", "a3"]);
}

/// An owner waits at most `tenant_queue`, and at most a quarter of the
/// room the others leave: a few tenants never leave another none until
/// the last places, which go one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_is_bounded_per_tenant_and_overall() {
    let pool = pool(1, 1, 8, 2);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (open, job) = gated(&log, "running");
    let running = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.run(tenant(9), BUDGET, "test", job).await })
    };
    until(|| log.lock().unwrap().len() == 1).await;
    let mut queued = Vec::new();
    let refused = |owner| pool.run(tenant(owner), BUDGET, "test", || Ok(()));
    // Room 8: tenant 1 gets its 2, then 2 of the 6 left, then 1 each.
    for (owner, places) in [(1, 2), (2, 2), (3, 1), (4, 1), (5, 1), (6, 1)] {
        for _ in 0..places {
            let pool2 = pool.clone();
            let expect = waiting(&pool) + 1;
            queued.push(tokio::spawn(async move {
                pool2.run(tenant(owner), BUDGET, "test", || Ok(())).await
            }));
            until(|| waiting(&pool) == expect).await;
        }
        assert!(
            matches!(refused(owner).await, Err(ProvisionError::Busy)),
            "tenant {owner} past its share"
        );
        // Counted as the tenant's share while others still have room.
        if waiting(&pool) < 8 {
            assert_eq!(refusal(&pool, owner), Some("tenant_share"), "{owner}");
        }
    }
    assert_eq!(waiting(&pool), 8);
    assert!(
        matches!(refused(7).await, Err(ProvisionError::Busy)),
        "pool queue"
    );
    // A tenant with nothing waiting is refused because the pool is full.
    assert_eq!(refusal(&pool, 7), Some("full"));
    assert!(REFUSAL_REASONS.contains(&"full") && REFUSAL_REASONS.contains(&"tenant_share"));
    open.send(()).unwrap();
    running.await.unwrap().unwrap();
    for task in queued {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_waiting_frees_its_place() {
    let pool = pool(1, 1, 2, 2);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (open, job) = gated(&log, "running");
    let running = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.run(tenant(1), BUDGET, "test", job).await })
    };
    until(|| log.lock().unwrap().len() == 1).await;
    for _ in 0..2 {
        let pool2 = pool.clone();
        let gone =
            tokio::spawn(async move { pool2.run(tenant(1), BUDGET, "test", || Ok(())).await });
        until(|| waiting(&pool) >= 1).await;
        gone.abort();
        let _ = gone.await;
    }
    // Both places are free again, so this one is queued, not refused.
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let last = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.run(tenant(1), BUDGET, "test", move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await
        })
    };
    open.send(()).unwrap();
    running.await.unwrap().unwrap();
    last.await.unwrap().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let schedule = pool.inner.lock();
    assert_eq!((schedule.free, schedule.waiting), (1, 0));
}

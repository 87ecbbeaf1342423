//! A tenant's lists walk its data on the render pool under its share, not
//! on the async workers every tenant's lookups and provisioning run on.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use dialtone_sync::{Backend, Id};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::Harness;

/// Every render thread busy with one of `tenant`'s jobs until the sender
/// is dropped.
async fn hold_the_pool(h: &Harness, tenant: Id) -> (mpsc::Sender<()>, Vec<JoinHandle<()>>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let (started, mut has_started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut holders = Vec::new();
    for _ in 0..threads {
        let (provisioner, released, started) =
            (h.provisioner.clone(), released.clone(), started.clone());
        // The caller stops waiting after the render budget; the job keeps
        // its thread until it returns.
        holders.push(tokio::spawn(async move {
            let _ = provisioner
                .on_pool(Some(tenant), move || {
                    let _ = started.send(());
                    // Until the sender is dropped (or a minute passes).
                    let _ = released
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(60));
                    Ok(())
                })
                .await;
        }));
    }
    for _ in 0..threads {
        has_started.recv().await.unwrap();
    }
    (release, holders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_lists_wait_for_its_place_on_the_render_pool() {
    let h = Harness::new(Backend::Sqlite).await;
    let acme = h.mirror.load().tenant_by_slug("acme").unwrap().id;
    // Once only: jobs that overrun the render budget put their tenant in
    // the pool's debt, and its next jobs wait for it.
    let (release, holders) = hold_the_pool(&h, acme).await;
    let paths = [
        "/v1/phones?q=front",
        "/v1/tenants/acme/directory?q=555",
        "/v1/templates",
        // A directory entry is found, and a fleet's phones gathered, by a
        // walk too.
        "/v1/tenants/acme/directory/e1",
        "/v1/tenants/acme/fleet",
    ];
    let mut lists: futures::stream::FuturesUnordered<_> = paths
        .iter()
        .map(|path| {
            let h = &h;
            async move { (*path, h.get("acme-read", path).await) }
        })
        .collect();
    // Not one answered while acme's jobs hold the pool...
    if let Ok(Some((path, _))) =
        tokio::time::timeout(Duration::from_millis(300), lists.next()).await
    {
        panic!("{path} was answered while every render thread was busy with acme's jobs");
    }
    // ...while the async workers serve other requests.
    let other = h.get("globex-admin", "/v1/phones/001565000009").await;
    assert_ne!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    drop(release);
    let replies: Vec<_> = tokio::time::timeout(Duration::from_secs(30), lists.collect())
        .await
        .expect("the lists never ran");
    assert_eq!(replies.len(), paths.len());
    for (path, reply) in replies {
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    }
    for holder in holders {
        holder.await.unwrap();
    }
}

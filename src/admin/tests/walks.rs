//! A tenant's lists walk its data on the provisioner's walk lane: off the
//! async workers every tenant's lookups and provisioning run on, and off
//! the render pool, so walks and phones' renders never wait for each other.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
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

/// Before the lane, a tenant's lists waited for a render slot: two tenants'
/// long lists held every one, and other tenants' phones waited for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_lists_run_while_renders_hold_the_pool() {
    let h = Harness::new(Backend::Sqlite).await;
    let globex = h.mirror.load().tenant_by_slug("globex").unwrap().id;
    let (release, holders) = hold_the_pool(&h, globex).await;
    let paths = [
        "/v1/phones?q=front",
        "/v1/tenants/acme/directory?q=555",
        "/v1/templates",
        // A directory entry is found, and a fleet's phones gathered, by a
        // walk too.
        "/v1/tenants/acme/directory/e1",
        "/v1/tenants/acme/fleet",
    ];
    let lists: futures::stream::FuturesUnordered<_> = paths
        .iter()
        .map(|path| {
            let h = &h;
            async move { (*path, h.get("acme-read", path).await) }
        })
        .collect();
    let replies: Vec<_> = tokio::time::timeout(Duration::from_secs(20), lists.collect())
        .await
        .expect("the lists waited for the render pool");
    assert_eq!(replies.len(), paths.len());
    for (path, reply) in replies {
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    }
    drop(release);
    for holder in holders {
        holder.await.unwrap();
    }
}

/// A tenant walks one list at a time and has a few waiting; past them its
/// lists are answered busy, said of lists, not of renders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_waiting_lists_is_told_to_retry() {
    let h = Harness::new(Backend::Sqlite).await;
    let acme = h.mirror.load().tenant_by_slug("acme").unwrap().id;
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let (started, mut has_started) = tokio::sync::mpsc::unbounded_channel::<()>();
    // One of acme's walks running, and as many waiting as it may have.
    let mut holders = Vec::new();
    for _ in 0..5 {
        let (provisioner, released, started) =
            (h.provisioner.clone(), released.clone(), started.clone());
        holders.push(tokio::spawn(async move {
            provisioner
                .walk(acme, Duration::from_secs(60), move || {
                    let _ = started.send(());
                    let _ = released
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(60));
                })
                .await
        }));
    }
    has_started.recv().await.unwrap();
    super::until_waiting("acme's waiting walks", 4, || h.provisioner.walks_waiting()).await;
    let refused = tokio::time::timeout(Duration::from_secs(5), h.get("acme-read", "/v1/phones"))
        .await
        .expect("the list waited instead of being refused");
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert_eq!(refused.json()["error"]["code"], "busy");
    assert_eq!(
        refused.json()["error"]["message"],
        "too many lists are running; try again"
    );
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
    // A template check's walk for a sample phone waits on the same lane,
    // and is told in its own words, with what avoids the walk.
    let draft = serde_json::json!({"scope": "tenant", "tenant": "acme", "family": "yealink",
        "file_pattern": "{mac}.cfg", "body": "#!version:1.0.0.1\n"})
    .to_string();
    let check = tokio::time::timeout(
        Duration::from_secs(5),
        h.call(
            Some("acme-admin"),
            axum::http::Method::POST,
            "/v1/templates/validate",
            Some(&draft),
            &[],
        ),
    )
    .await
    .expect("the check waited instead of being refused");
    assert_eq!(
        check.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        check.text
    );
    assert!(
        check.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sample_mac")),
        "{}",
        check.text
    );
    // A render of acme's does not wait for its walks.
    let preview = tokio::time::timeout(
        Duration::from_secs(5),
        h.provisioner.on_pool(Some(acme), || Ok(())),
    )
    .await;
    assert!(matches!(preview, Ok(Ok(()))), "{preview:?}");
    drop(release);
    for holder in holders {
        holder.await.unwrap().unwrap();
    }
}

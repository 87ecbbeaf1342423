//! The document's 503s are the router's where the render pool or the
//! list-walk lane is the cause: with both refusing every job, each route a
//! tenant's call is answered 503 documents that 503. A route that walks or
//! renders but leaves its 503 out of the document fails here.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use dialtone_sync::Backend;
use dialtone_tftp::pool::PoolOptions;
use dialtone_tftp::{ProvisionOptions, Provisioner, Shipped};

use super::matrix::rows;
use super::no_database::matches;
use super::openapi::ROUTES;
use super::Harness;

/// The harness over a render pool of one thread and one waiting place (and
/// so a walk lane of one and one).
async fn with_small_pool() -> Harness {
    let mut h = Harness::new(Backend::Sqlite).await;
    let shipped = Shipped::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"),
        1,
    )
    .unwrap();
    let options = ProvisionOptions {
        pool: PoolOptions {
            threads: 1,
            per_tenant: 1,
            queue: 1,
            tenant_queue: 1,
        },
        ..Default::default()
    };
    h.provisioner = Arc::new(Provisioner::new(
        h.mirror.clone(),
        h.state.key.clone(),
        shipped,
        options,
    ));
    h.state.provisioner = h.provisioner.clone();
    h.app = crate::admin::router(h.state.clone());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_refused_by_a_full_render_pool_document_their_503() {
    let h = with_small_pool().await;
    let doc = h
        .call(None, Method::GET, "/openapi.json", None, &[])
        .await
        .json();
    // One job on the pool's thread and one in its queue, both another
    // tenant's, and the same on the walk lane, until `release` is dropped:
    // every job after them is refused.
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let (started, mut has_started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut holders = Vec::new();
    for _ in 0..2 {
        for walk in [false, true] {
            let (provisioner, released, started) =
                (h.provisioner.clone(), released.clone(), started.clone());
            holders.push(tokio::spawn(async move {
                let hold = move || {
                    let _ = started.send(());
                    let _ = released
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(60));
                };
                if walk {
                    let _ = provisioner
                        .walk(1_000_000, Duration::from_secs(60), hold)
                        .await;
                } else {
                    let _ = provisioner
                        .on_pool(Some(1_000_000), move || {
                            hold();
                            Ok(())
                        })
                        .await;
                }
            }));
        }
    }
    has_started.recv().await.unwrap();
    has_started.recv().await.unwrap();
    // The second of each is queued once its task has run up to its wait.
    super::until_waiting("the second render", 1, || h.provisioner.renders_waiting()).await;
    super::until_waiting("the second walk", 1, || h.provisioner.walks_waiting()).await;

    let (mut refused, mut undocumented) = (0, Vec::new());
    for row in rows() {
        let reply = h
            .call(
                Some("acme-admin"),
                row.method.clone(),
                row.path,
                row.body,
                &[],
            )
            .await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            continue;
        }
        refused += 1;
        assert_eq!(reply.json()["error"]["code"], "busy", "{}", reply.text);
        let method = row.method.as_str().to_ascii_lowercase();
        let (template, _) = ROUTES
            .iter()
            .find(|(template, methods)| {
                methods.contains(&method.as_str()) && matches(template, row.path)
            })
            .unwrap_or_else(|| panic!("{} {} is not a documented route", row.method, row.path));
        if !doc["paths"][*template][&method]["responses"]["503"].is_object() {
            undocumented.push(format!("{method} {template}"));
        }
    }
    drop(release);
    for holder in holders {
        holder.await.unwrap();
    }
    assert!(refused >= 8, "only {refused} requests met the full pool");
    assert!(
        undocumented.is_empty(),
        "503 undocumented: {undocumented:?}"
    );
}

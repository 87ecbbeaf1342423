//! Template checks and previews are work a tenant-read token can cause:
//! the names they carry are short, a tenant has a few of them running at
//! once whatever the render pool would let wait, and a draft for a key
//! every tenant shares is a global admin's to try.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use dialtone_sync::testing::test_key;
use dialtone_sync::Backend;
use dialtone_tftp::pool::PoolOptions;
use dialtone_tftp::{ProvisionOptions, Provisioner, Shipped};
use futures::StreamExt;
use serde_json::{json, Value};

use super::{Harness, Reply, ACME_MAC, GLOBEX_MAC};

const VALIDATE: &str = "/v1/templates/validate";
const PREVIEW: &str = "/v1/preview";

fn draft() -> Value {
    json!({"scope": "tenant", "tenant": "acme", "family": "yealink",
        "file_pattern": "{mac}.cfg", "body": "#!version:1.0.0.1\n"})
}

async fn post(h: &Harness, role: &str, path: &str, body: &Value) -> Reply {
    let body = body.to_string();
    h.call(Some(role), Method::POST, path, Some(&body), &[])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_name_is_refused_by_its_field() {
    let h = Harness::new(Backend::Sqlite).await;
    let long = "x".repeat(crate::admin::templates::MAX_NAME + 1);
    let preview = json!({"mac": ACME_MAC, "scope": "tenant", "tenant": "acme",
        "family": "yealink", "file_pattern": "{mac}.cfg", "body": "#!version:1.0.0.1\n"});
    let cases = [
        (VALIDATE, draft(), "file_pattern"),
        (VALIDATE, draft(), "tenant"),
        (VALIDATE, draft(), "model"),
        (VALIDATE, draft(), "mac"),
        (VALIDATE, draft(), "sample_mac"),
        (PREVIEW, preview.clone(), "file"),
        (PREVIEW, preview.clone(), "file_pattern"),
        (PREVIEW, preview.clone(), "tenant"),
        (PREVIEW, preview.clone(), "model"),
        (PREVIEW, preview, "mac"),
    ];
    for (path, mut body, field) in cases {
        body[field] = json!(long);
        let reply = post(&h, "acme-read", path, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path} {field}: {}",
            reply.text
        );
        assert_eq!(
            reply.json()["error"]["message"],
            format!("{field}: at most {} bytes", long.len() - 1),
            "{path} {field}"
        );
    }
    // At the bound a name is the handler's to judge: no file is named so.
    let mut body = draft();
    body["file_pattern"] = json!("x".repeat(crate::admin::templates::MAX_NAME));
    let reply = post(&h, "acme-read", VALIDATE, &body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
}

/// Past its places a tenant's checks and previews are refused at once,
/// not queued behind the render pool, and another tenant's go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_checks_past_its_places_are_refused_while_another_is_served() {
    let mut h = Harness::new(Backend::Sqlite).await;
    // Two render threads, one a tenant's share: acme's one blocked job
    // below holds its share, and globex has the other thread.
    let shipped = Shipped::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"),
        1,
    )
    .unwrap();
    let provisioner = Arc::new(Provisioner::new(
        h.mirror.clone(),
        test_key(),
        shipped,
        ProvisionOptions {
            pool: PoolOptions {
                threads: 2,
                per_tenant: 1,
                ..PoolOptions::default()
            },
            ..ProvisionOptions::default()
        },
    ));
    h.app = crate::admin::router(crate::admin::AdminState {
        provisioner: provisioner.clone(),
        ..h.state.clone()
    });
    let acme = h.mirror.load().tenant_by_slug("acme").unwrap().id;
    // A slow job first: a tenant whose jobs have been slow borrows no
    // thread past its share, so acme's checks wait for its own.
    provisioner
        .on_pool(Some(acme), || {
            std::thread::sleep(Duration::from_millis(20));
            Ok(())
        })
        .await
        .unwrap();
    let (release, released) = mpsc::channel::<()>();
    let (started, has_started) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn({
        let provisioner = provisioner.clone();
        async move {
            // The caller stops waiting at the render budget; the job keeps
            // its thread until released.
            let _ = provisioner
                .on_pool(Some(acme), move || {
                    let _ = started.send(());
                    let _ = released.recv_timeout(Duration::from_secs(60));
                    Ok(())
                })
                .await;
        }
    });
    has_started.await.unwrap();

    let places = 4;
    let preview = json!({"mac": ACME_MAC});
    let mut waiting: futures::stream::FuturesUnordered<_> = (0..places + 2)
        .map(|n| {
            let h = &h;
            let (path, body) = match n % 2 {
                0 => (VALIDATE, draft()),
                _ => (PREVIEW, preview.clone()),
            };
            async move { post(h, "acme-read", path, &body).await }
        })
        .collect();
    for _ in 0..2 {
        let refused = tokio::time::timeout(Duration::from_secs(10), waiting.next())
            .await
            .expect("acme's checks past its places were not refused")
            .unwrap();
        assert_eq!(
            refused.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            refused.text
        );
        assert_eq!(refused.json()["error"]["code"], "busy", "{}", refused.text);
        assert!(
            refused
                .text
                .contains("template checks, previews and source tests"),
            "{}",
            refused.text
        );
        assert!(refused.headers.contains_key("retry-after"));
    }
    if let Ok(Some(reply)) = tokio::time::timeout(Duration::from_millis(300), waiting.next()).await
    {
        panic!("acme's check ran with its share held: {}", reply.text);
    }
    let globex = tokio::time::timeout(
        Duration::from_secs(30),
        post(&h, "globex-admin", PREVIEW, &json!({"mac": GLOBEX_MAC})),
    )
    .await
    .expect("globex's preview waited behind acme's");
    assert_eq!(globex.status, StatusCode::OK, "{}", globex.text);

    drop(release);
    let replies: Vec<Reply> = tokio::time::timeout(Duration::from_secs(60), waiting.collect())
        .await
        .expect("acme's checks never ran");
    assert_eq!(replies.len(), places);
    for reply in replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    holder.await.unwrap();
    // Every place came back.
    let reply = post(&h, "acme-read", VALIDATE, &draft()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// A family template reaches every tenant's phones: a tenant's token may
/// neither check nor preview a draft of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_preview_a_family_draft() {
    let h = Harness::new(Backend::Sqlite).await;
    let family = json!({"scope": "family", "family": "yealink", "file_pattern": "{mac}.cfg",
        "body": "#!version:1.0.0.1\n# everyone's\n"});
    let mut preview = family.clone();
    preview["mac"] = json!(ACME_MAC);
    for role in ["acme-admin", "acme-read"] {
        for (path, body) in [(VALIDATE, &family), (PREVIEW, &preview)] {
            let reply = post(&h, role, path, body).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{role} {path}: {}",
                reply.text
            );
        }
    }
    let reply = post(&h, "global", PREVIEW, &preview).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

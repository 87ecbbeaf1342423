//! One tenant cannot take the database pool from the others: it runs at
//! most its share of database-bound admin requests at once, and the rest
//! are refused at once (429) instead of queueing for a connection that
//! another tenant's request then cannot get. Nor can tenants together: a
//! part of the pool is kept from all of them for the operator.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use dialtone_sync::store::{StoreOptions, TenantInput};
use dialtone_sync::{
    generate_token, token_hash, watcher, ApiTokenInput, Backend, Mutation, TokenScope,
};
use sqlx::Connection;

use super::{seed_audit, Harness, Reply, ACME_MAC, GLOBEX_MAC};

const UPDATE: &str = r#"{"tenant": "acme", "family": "yealink", "model": "T46S", "label": "held", "lines": [{"extension": "200", "display_name": "Front", "registrar": "sip.example.net"}]}"#;

const LOCK_WAITERS: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE datname = current_database() AND wait_event_type = 'Lock'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_hold_every_pool_connection() {
    let h = Harness::new(Backend::Postgres).await;
    // As many of acme's requests as the harness's pool has connections.
    let pool = StoreOptions::default().max_connections as usize;
    // Stands in for slow statements: each write to acme's phone waits on
    // this row lock holding a pool connection, until the test lets go.
    let mut lock = sqlx::PgConnection::connect(&h._db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query(
        "SELECT 1 FROM phones WHERE tenant_id = (SELECT id FROM tenants WHERE slug = 'acme') \
         FOR UPDATE",
    )
    .execute(&mut lock)
    .await
    .unwrap();
    // Another connection: pg_stat_activity is read once per transaction.
    let mut watch = sqlx::PgConnection::connect(&h._db.url).await.unwrap();

    let path = format!("/v1/phones/{ACME_MAC}");
    let refused = AtomicUsize::new(0);
    let flood = futures::future::join_all((0..pool).map(|_| async {
        let reply = h
            .call(Some("acme-admin"), Method::PUT, &path, Some(UPDATE), &[])
            .await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            refused.fetch_add(1, Ordering::SeqCst);
        }
        reply
    }));
    let while_held = async {
        // Every one of acme's requests is either refused or blocked on the
        // lock with its connection.
        let mut settled = false;
        for _ in 0..600 {
            let waiting: i64 = sqlx::query_scalar(LOCK_WAITERS)
                .fetch_one(&mut watch)
                .await
                .unwrap();
            if waiting as usize + refused.load(Ordering::SeqCst) >= pool {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let started = Instant::now();
        let other = tokio::time::timeout(
            Duration::from_secs(60),
            h.get("globex-admin", "/v1/audit?limit=5"),
        )
        .await;
        let waited = started.elapsed();
        // Held by tenant, not by token: acme's read token shares the cap.
        let same_tenant = h.get("acme-read", "/v1/audit?limit=5").await;
        let from_mirror = h.get("acme-read", "/v1/phones").await;
        sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
        (settled, other, waited, same_tenant, from_mirror)
    };
    let (replies, (settled, other, waited, same_tenant, from_mirror)) =
        tokio::join!(flood, while_held);

    eprintln!("globex waited {waited:?} for its audit read");
    let other = other.expect("globex's read was answered");
    assert_eq!(
        other.status,
        StatusCode::OK,
        "globex was not served while acme held its requests (after {waited:?}): {}",
        other.text
    );
    assert!(settled, "acme's requests neither blocked nor were refused");
    let refusals: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(!refusals.is_empty(), "acme ran {pool} writes at once");
    for refusal in refusals.iter().copied().chain([&same_tenant]) {
        assert_busy(refusal);
    }
    for reply in &replies {
        assert!(
            [
                StatusCode::OK,
                StatusCode::CONFLICT,
                StatusCode::TOO_MANY_REQUESTS
            ]
            .contains(&reply.status),
            "{} {}",
            reply.status,
            reply.text
        );
    }
    assert_eq!(from_mirror.status, StatusCode::OK, "{}", from_mirror.text);
    // The places came back: acme is served again.
    let after = h.get("acme-read", "/v1/audit?limit=5").await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
}

/// A refusal the client can act on: 429 at once, a reason and when to retry.
fn assert_busy(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    let body = reply.json();
    assert_eq!(body["error"]["code"], "busy", "{}", reply.text);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("database"), "{message}");
    assert_eq!(
        reply.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "{:?}",
        reply.headers
    );
}

/// Refused because the node's tenants together hold their part of the
/// pool, and told so: not this tenant's share.
fn assert_all_tenants_busy(reply: &Reply) {
    assert_busy(reply);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("all tenants together") && message.contains("within its own share"),
        "{message}"
    );
}

/// A directory entry for `slug`, whose insert waits on the tenant row's
/// lock (the foreign key's check) while it holds a pool connection.
async fn held_write(h: &Harness, slug: &str, id: usize) -> Reply {
    let body = format!(
        r#"{{"external_id": "held-{id}", "name": "Held {id}", "numbers": [{{"number": "+1 555 555 01{id:02}", "kind": "work"}}]}}"#
    );
    h.call(
        Some(&format!("{slug}-admin")),
        Method::POST,
        &format!("/v1/tenants/{slug}/directory"),
        Some(&body),
        &[],
    )
    .await
}

/// Two more tenants with an admin token each, beside the harness's acme and
/// globex.
async fn two_more_tenants(h: &mut Harness) {
    let mut mutations = Vec::new();
    for (slug, role) in [("initech", "initech-admin"), ("umbrella", "umbrella-admin")] {
        let token = generate_token();
        mutations.push(Mutation::UpsertTenant(TenantInput {
            slug: slug.into(),
            name: format!("{slug} Inc"),
            default_region: "US".into(),
            settings: "{}".into(),
        }));
        mutations.push(Mutation::CreateApiToken(ApiTokenInput {
            name: role.into(),
            token_hash: token_hash(&token),
            scope: TokenScope::TenantAdmin,
            tenant: Some(slug.into()),
            expires_at: None,
        }));
        h.tokens.insert(role, token);
    }
    h.store.apply(&mutations, &seed_audit()).await.unwrap();
    watcher::catch_up(&h.mirror, &*h.store).await.unwrap();
}

async fn lock_waiters(watch: &mut sqlx::PgConnection) -> usize {
    let waiting: i64 = sqlx::query_scalar(LOCK_WAITERS)
        .fetch_one(watch)
        .await
        .unwrap();
    waiting as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_together_cannot_hold_every_pool_connection() {
    // A pool of 4: a tenant's share is 1, all tenants' together 3.
    let options = StoreOptions {
        max_connections: 4,
        ..StoreOptions::default()
    };
    let mut h = Harness::with_options(Backend::Postgres, &options).await;
    two_more_tenants(&mut h).await;
    let holders = ["acme", "globex", "initech"];
    // Every tenant's write waits on this lock, umbrella's too: without the
    // reserve its write would take the pool's last connection.
    let mut lock = sqlx::PgConnection::connect(&h._db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("SELECT 1 FROM tenants FOR UPDATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let mut watch = sqlx::PgConnection::connect(&h._db.url).await.unwrap();

    let holding = futures::future::join_all(
        holders
            .iter()
            .enumerate()
            .map(|(i, slug)| held_write(&h, slug, i)),
    );
    let answered = AtomicBool::new(false);
    let while_held = async {
        let mut waiting = 0;
        for _ in 0..600 {
            waiting = lock_waiters(&mut watch).await;
            if waiting >= holders.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let fourth = async {
            let reply =
                tokio::time::timeout(Duration::from_secs(20), held_write(&h, "umbrella", 9)).await;
            answered.store(true, Ordering::SeqCst);
            reply
        };
        let operator = async {
            // Once umbrella has its answer, or (without the reserve) waits
            // on the lock holding the pool's last connection.
            for _ in 0..600 {
                if answered.load(Ordering::SeqCst) || lock_waiters(&mut watch).await > waiting {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let global = tokio::time::timeout(
                Duration::from_secs(60),
                h.get("global", "/v1/audit?limit=5"),
            )
            .await;
            // acme's second request is past acme's own share.
            let acme_again = held_write(&h, "acme", 8).await;
            (global, acme_again)
        };
        let (fourth, (global, acme_again)) = tokio::join!(fourth, operator);
        sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
        (waiting, fourth, global, acme_again)
    };
    let (writes, (waiting, fourth, global, acme_again)) = tokio::join!(holding, while_held);

    assert_eq!(
        waiting,
        holders.len(),
        "the three tenants' writes did not all block on the lock"
    );
    let global = global.expect("the operator's read was answered");
    assert_eq!(
        global.status,
        StatusCode::OK,
        "the operator's read was not served beside three tenants at their shares: {}",
        global.text
    );
    let fourth = fourth.expect("umbrella's write was answered while the others held the pool");
    assert_all_tenants_busy(&fourth);
    assert_busy(&acme_again);
    let message = acme_again.json()["error"]["message"].to_string();
    assert!(message.contains("this tenant already runs"), "{message}");
    for (slug, reply) in holders.iter().zip(&writes) {
        assert_eq!(reply.status, StatusCode::CREATED, "{slug}: {}", reply.text);
    }
    // The places came back: umbrella is served now.
    let after = held_write(&h, "umbrella", 10).await;
    assert_eq!(after.status, StatusCode::CREATED, "{}", after.text);
}

/// A client that hangs up does not give its place back while its request's
/// statements still hold a connection: the place is held until the work
/// ends, not until the client leaves. Before, a tenant that started slow
/// writes and hung up on each held as many connections as it liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_does_not_free_a_place_the_work_still_holds() {
    // A pool of 4: a tenant's share is 1.
    let options = StoreOptions {
        max_connections: 4,
        ..StoreOptions::default()
    };
    let h = Harness::with_options(Backend::Postgres, &options).await;
    let mut lock = sqlx::PgConnection::connect(&h._db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE slug = 'acme' FOR UPDATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let mut watch = sqlx::PgConnection::connect(&h._db.url).await.unwrap();

    // acme's write waits on the lock with a connection; then its client
    // hangs up (the request's future is dropped, as hyper drops it).
    tokio::select! {
        reply = held_write(&h, "acme", 1) => panic!("the write ended under the lock: {}", reply.text),
        () = async {
            for _ in 0..600 {
                if lock_waiters(&mut watch).await >= 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("acme's write never waited on the lock");
        } => {}
    }
    assert_eq!(lock_waiters(&mut watch).await, 1, "the statement went on");

    // Its statement still holds the connection, and acme its place.
    assert_busy(&h.get("acme-read", "/v1/audit?limit=5").await);
    let other = h.get("globex-admin", "/v1/audit?limit=5").await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text);

    // Once the work ends, the place is acme's again.
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let mut served = None;
    for _ in 0..600 {
        let reply = h.get("acme-read", "/v1/audit?limit=5").await;
        if reply.status == StatusCode::OK {
            served = Some(reply);
            break;
        }
        assert_busy(&reply);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served.is_some(), "acme's place never came back");
}

/// A request whose body never comes (headers, then silence) takes no
/// place: the body is read before the share is counted, so a tenant's
/// silent requests cannot hold its share, nor, with a few tenants, every
/// tenant's places.
/// A request whose body is announced and never sent.
fn silent_body(method: Method, path: &str, token: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("content-length", "100")
        .body(axum::body::Body::from_stream(futures::stream::pending::<
            Result<axum::body::Bytes, std::io::Error>,
        >()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_holds_no_place() {
    use tower::ServiceExt;
    let h = Harness::new(Backend::Sqlite).await;
    let path = format!("/v1/phones/{ACME_MAC}");
    let token = h.tokens["acme-admin"].clone();
    let silent = |n: usize| -> Vec<tokio::task::JoinHandle<_>> {
        (0..n)
            .map(|_| {
                tokio::spawn(
                    h.app
                        .clone()
                        .oneshot(silent_body(Method::PUT, &path, &token)),
                )
            })
            .collect()
    };
    // More than acme's share of places (2), fewer than the bodies a tenant
    // may have in flight (8).
    let waiting = silent(6);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = h
        .call(Some("acme-admin"), Method::PUT, &path, Some(UPDATE), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(waiting.iter().all(|s| !s.is_finished()));
    // Past its bodies in flight, acme waits; globex does not.
    let more = silent(2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = h
        .call(Some("acme-admin"), Method::PUT, &path, Some(UPDATE), &[])
        .await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    // globex's phone has a login: an update that leaves its user out is
    // refused (it would keep the password alone).
    let globex = UPDATE.replace("\"acme\"", "\"globex\", \"http_user\": \"desk\"");
    let globex = h.fill(&globex);
    let reply = h
        .call(
            Some("globex-admin"),
            Method::PUT,
            &format!("/v1/phones/{GLOBEX_MAC}"),
            Some(&globex),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    waiting
        .iter()
        .chain(&more)
        .for_each(tokio::task::JoinHandle::abort);
}

/// A read takes no body place: its body, if it declares one, is not
/// read. Before, a tenant's GETs announcing bodies they never sent held
/// its eight places, and sixteen tenants every tenant's on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_announcing_a_body_takes_no_body_place() {
    use tower::ServiceExt;
    let h = Harness::new(Backend::Sqlite).await;
    let token = h.tokens["acme-read"].clone();
    let reads: Vec<_> = (0..10)
        .map(|_| {
            let request = silent_body(Method::GET, "/v1/audit?limit=1", &token);
            tokio::spawn(h.app.clone().oneshot(request))
        })
        .collect();
    // Answered without waiting for the body (which would take the ten
    // seconds a body may take): served, or busy for acme's share of the
    // database (two places), which ten reads at once exceed.
    for read in reads {
        let answer = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("a read waited for its body")
            .unwrap()
            .unwrap();
        let status = answer.status();
        assert!(
            [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS].contains(&status),
            "{status}"
        );
    }
    let path = format!("/v1/phones/{ACME_MAC}");
    let reply = h
        .call(Some("acme-admin"), Method::PUT, &path, Some(UPDATE), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// Routes that take a body but no database place (a template check, a
/// preview, a source test) read a tenant's body under the same places:
/// bodies that never arrive, sent with a read-only token, hold none of
/// another tenant's, and past eight the tenant's next is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_checks_and_previews_are_read_under_the_tenants_places() {
    use tower::ServiceExt;
    let h = Harness::new(Backend::Sqlite).await;
    let token = h.tokens["acme-read"].clone();
    let paths = [
        "/v1/preview".to_string(),
        "/v1/templates/validate".to_string(),
        "/v1/tenants/acme/directory-sources/cnam/test".to_string(),
    ];
    let waiting: Vec<_> = (0..8)
        .map(|n| {
            let request = silent_body(Method::POST, &paths[n % paths.len()], &token);
            tokio::spawn(h.app.clone().oneshot(request))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(waiting.iter().all(|s| !s.is_finished()));
    let preview = |role: &'static str, mac: &str| {
        let body = format!(r#"{{"mac": "{mac}"}}"#);
        let h = &h;
        async move {
            h.call(Some(role), Method::POST, "/v1/preview", Some(&body), &[])
                .await
        }
    };
    let reply = preview("acme-read", ACME_MAC).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("request bodies"), "{}", reply.text);
    let reply = preview("globex-admin", GLOBEX_MAC).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    waiting.iter().for_each(tokio::task::JoinHandle::abort);
}

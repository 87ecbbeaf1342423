//! Cache behaviour with time under control: TTLs, stale-while-revalidate,
//! the stale-fill guard, invalidation from the change stream, and source
//! order. The remote source is an upstream HTTP CNAM server run by the test
//! (on loopback), so every request it gets is counted.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use common::*;
use dialtone_directory::{CacheStatus, Clock, LookupOptions, LookupService};
use dialtone_sync::testing::eventually;
use dialtone_sync::{Id, Mutation};
use tokio::sync::Semaphore;

#[derive(Clone, Debug)]
enum Reply {
    Name(&'static str),
    NotFound,
    Fail,
}

struct Upstream {
    requests: AtomicU64,
    reply: Mutex<Reply>,
    /// When set, every request waits for a permit before answering.
    gate: Option<Semaphore>,
}

impl Upstream {
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }
}

async fn cnam(State(up): State<Arc<Upstream>>, Path(_digits): Path<String>) -> impl IntoResponse {
    up.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(gate) = &up.gate {
        gate.acquire().await.unwrap().forget();
    }
    let reply = up.reply.lock().unwrap().clone();
    match reply {
        Reply::Name(name) => (StatusCode::OK, name.to_string()),
        Reply::NotFound => (StatusCode::NOT_FOUND, String::new()),
        Reply::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "boom".to_string()),
    }
}

async fn start_upstream(reply: Reply, gated: bool) -> (Arc<Upstream>, String) {
    let up = Arc::new(Upstream {
        requests: AtomicU64::new(0),
        reply: Mutex::new(reply),
        gate: gated.then(|| Semaphore::new(0)),
    });
    let app = axum::Router::new()
        .route("/cnam/{digits}", get(cnam))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cnam/{{digits}}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (up, url)
}

struct Fixture {
    service: LookupService,
    clock: Clock,
    acme: Id,
    up: Arc<Upstream>,
    store: Arc<dyn dialtone_sync::Store>,
    _db: dialtone_sync::testing::TestDb,
}

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

async fn fixture(
    reply: Reply,
    gated: bool,
    priority: i32,
    local: &[Mutation],
    options: LookupOptions,
) -> Fixture {
    let (up, url) = start_upstream(reply, gated).await;
    let mut upstream = cnam_source("acme", &url);
    if let Mutation::UpsertDirectorySource(s) = &mut upstream {
        s.priority = priority;
    }
    let mut mutations = vec![tenant("acme", "US"), upstream];
    mutations.extend_from_slice(local);
    let (db, store, mirror) = mirror_of(&mutations).await;
    let clock = Clock::manual();
    let acme = tenant_id(&mirror, "acme");
    let service = LookupService::with_clock(mirror, None, options, clock.clone());
    Fixture {
        service,
        clock,
        acme,
        up,
        store,
        _db: db,
    }
}

fn options() -> LookupOptions {
    LookupOptions {
        deadline: Duration::from_secs(5),
        // The test's upstream listens on loopback.
        source_networks: dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
            .unwrap()
            .shared(),
        ..LookupOptions::default()
    }
}

impl Fixture {
    async fn lookup(&self, number: &str) -> dialtone_directory::Answer {
        self.service.lookup(self.acme, number).await.unwrap()
    }

    /// Polls (bounded) until a lookup of `number` returns `name`.
    async fn wait_for_name(&self, number: &str, name: &str) -> bool {
        for _ in 0..200 {
            if self.lookup(number).await.name() == Some(name) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    async fn wait_requests(&self, n: u64) {
        let up = self.up.clone();
        assert!(
            eventually(Duration::from_secs(5), move || up.requests() >= n).await,
            "upstream never got {n} requests"
        );
    }
}

#[tokio::test]
async fn negative_answers_are_cached_for_the_negative_ttl() {
    let f = fixture(Reply::NotFound, false, 10, &[], options()).await;
    let first = f.lookup("+15550101234").await;
    assert_eq!(
        (first.name(), first.cache, first.resolved.definitive),
        (None, CacheStatus::Miss, true)
    );
    f.clock.advance(4 * MINUTE + Duration::from_secs(59));
    assert_eq!(f.lookup("5550101234").await.cache, CacheStatus::Hit);
    assert_eq!(f.up.requests(), 1);
    // Past five minutes the miss is re-checked (in the background).
    f.clock.advance(Duration::from_secs(2));
    f.up.set(Reply::Name("Alice Example"));
    assert_eq!(f.lookup("5550101234").await.cache, CacheStatus::Stale);
    f.wait_requests(2).await;
    assert!(f.wait_for_name("5550101234", "Alice Example").await);
}

#[tokio::test]
async fn expired_names_are_served_stale_while_one_refresh_runs() {
    let f = fixture(Reply::Name("Old Name"), false, 10, &[], options()).await;
    assert_eq!(f.lookup("+15550101234").await.name(), Some("Old Name"));
    f.up.set(Reply::Name("New Name"));
    f.clock.advance(HOUR + Duration::from_secs(1));
    // Many callers during the refresh: all get the old name at once, one refresh runs.
    for _ in 0..20 {
        let answer = f.lookup("+15550101234").await;
        if answer.cache == CacheStatus::Hit {
            break; // the refresh already landed
        }
        assert_eq!(
            (answer.name(), answer.cache),
            (Some("Old Name"), CacheStatus::Stale)
        );
    }
    f.wait_requests(2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.up.requests(), 2, "one refresh, however many callers");
    let fresh = f.lookup("+15550101234").await;
    assert_eq!(
        (fresh.name(), fresh.cache),
        (Some("New Name"), CacheStatus::Hit)
    );

    // Beyond the max-stale window an answer is not served: the caller waits for the load.
    f.clock.advance(HOUR + 24 * HOUR + Duration::from_secs(1));
    f.up.set(Reply::Name("Newest Name"));
    let reloaded = f.lookup("+15550101234").await;
    assert_eq!(
        (reloaded.name(), reloaded.cache),
        (Some("Newest Name"), CacheStatus::Miss)
    );
}

#[tokio::test]
async fn a_failed_refresh_never_replaces_a_known_name() {
    let f = fixture(Reply::Name("Known Name"), false, 10, &[], options()).await;
    assert_eq!(f.lookup("+15550101234").await.name(), Some("Known Name"));
    f.up.set(Reply::Fail);
    f.clock.advance(HOUR + MINUTE);
    assert_eq!(f.lookup("+15550101234").await.name(), Some("Known Name"));
    f.wait_requests(2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = f.lookup("+15550101234").await;
    assert_eq!(
        (after.name(), after.cache),
        (Some("Known Name"), CacheStatus::Stale)
    );
    // A placeholder from upstream is not a name either.
    f.up.set(Reply::Name("UNKNOWN"));
    let placeholder = f.lookup("+15550109876").await;
    assert_eq!(
        (placeholder.name(), placeholder.resolved.definitive),
        (None, true)
    );
}

/// A failure is cached only for its own short TTL and never served stale:
/// the first caller after a source recovers waits for the retry and gets
/// the name, instead of a stale "unavailable" for up to `max_stale`.
#[tokio::test]
async fn a_failure_past_its_ttl_is_retried_not_served_stale() {
    let f = fixture(Reply::Fail, false, 10, &[], options()).await;
    let failed = f.lookup("+15550101234").await;
    assert_eq!(
        (failed.name(), failed.resolved.definitive, failed.cache),
        (None, false, CacheStatus::Miss)
    );
    // Within the failure TTL the failure answers, and the source is spared.
    f.up.set(Reply::Name("Alice Example"));
    f.clock.advance(Duration::from_secs(9));
    assert_eq!(f.lookup("+15550101234").await.cache, CacheStatus::Hit);
    assert_eq!(f.up.requests(), 1);
    // Past it, the caller waits for a new load rather than a stale failure.
    f.clock.advance(Duration::from_secs(2));
    let recovered = f.lookup("+15550101234").await;
    assert_eq!(
        (recovered.name(), recovered.cache),
        (Some("Alice Example"), CacheStatus::Miss)
    );
    assert_eq!(f.up.requests(), 2);
}

#[tokio::test]
async fn a_load_that_began_before_an_invalidation_does_not_fill_the_cache() {
    let f = fixture(Reply::Name("Before Edit"), true, 10, &[], options()).await;
    let service = f.service.clone();
    let acme = f.acme;
    let early = tokio::spawn(async move { service.lookup(acme, "+15550101234").await.unwrap() });
    f.wait_requests(1).await;
    // The directory changes while the upstream is still answering.
    f.service.invalidate_tenant(f.acme);
    f.up.gate.as_ref().unwrap().add_permits(1);
    assert_eq!(early.await.unwrap().name(), Some("Before Edit"));
    // Not cached: the next caller loads again (and joins no stale load).
    f.up.set(Reply::Name("After Edit"));
    f.up.gate.as_ref().unwrap().add_permits(1);
    let next = f.lookup("+15550101234").await;
    assert_eq!(
        (next.name(), next.cache),
        (Some("After Edit"), CacheStatus::Miss)
    );
    assert_eq!(f.up.requests(), 2);
}

#[tokio::test]
async fn a_directory_edit_invalidates_the_tenant() {
    let f = fixture(
        Reply::NotFound,
        false,
        10,
        &[entry("acme", "e1", "Old Name", &["+1 (555) 010-1234"])],
        options(),
    )
    .await;
    let follower = tokio::spawn(f.service.clone().follow(std::future::pending()));
    let watcher_cancel = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(dialtone_sync::watcher::run(
        f.service.mirror().clone(),
        f.store.clone(),
        Default::default(),
        watcher_cancel.clone(),
    ));
    assert_eq!(f.lookup("5550101234").await.name(), Some("Old Name"));
    assert_eq!(f.lookup("5550101234").await.cache, CacheStatus::Hit);
    f.store
        .apply(
            &[entry("acme", "e1", "New Name", &["+1 (555) 010-1234"])],
            &audit("setup"),
        )
        .await
        .unwrap();
    assert!(
        f.wait_for_name("5550101234", "New Name").await,
        "the edit never reached the cache"
    );
    // Local answers never asked the upstream.
    assert_eq!(f.up.requests(), 0);
    watcher_cancel.cancel();
    follower.abort();
    let _ = watcher.await;
}

#[tokio::test]
async fn sources_run_in_priority_order() {
    let local = [entry("acme", "e1", "Local Name", &["555-010-1234"])];
    let after = fixture(Reply::Name("Upstream Name"), false, 10, &local, options()).await;
    assert_eq!(
        after
            .lookup("+15550101234")
            .await
            .resolved
            .source
            .as_deref(),
        Some("local")
    );
    assert_eq!(after.up.requests(), 0);
    assert_eq!(
        after.lookup("+15550109999").await.name(),
        Some("Upstream Name")
    );
    let before = fixture(Reply::Name("Upstream Name"), false, -1, &local, options()).await;
    let answer = before.lookup("+15550101234").await;
    assert_eq!(
        (answer.name(), answer.resolved.source.as_deref()),
        (Some("Upstream Name"), Some("cnam"))
    );
}

#[tokio::test]
async fn loads_beyond_the_inflight_bound_are_shed_at_once() {
    let options = LookupOptions {
        max_inflight: 1,
        ..options()
    };
    let f = fixture(Reply::Name("Slow"), true, 10, &[], options).await;
    let service = f.service.clone();
    let acme = f.acme;
    let first = tokio::spawn(async move { service.lookup(acme, "+15550101234").await.unwrap() });
    f.wait_requests(1).await;
    let shed = f.lookup("+15550104321").await;
    assert_eq!((shed.name(), shed.cache), (None, CacheStatus::Shed));
    f.up.gate.as_ref().unwrap().add_permits(1);
    assert_eq!(first.await.unwrap().name(), Some("Slow"));
}

/// acme and globex, each with an upstream that knows no number, sharing
/// a cache of `cache_bytes`; the first value keeps their servers alive.
async fn two_tenants_sharing(
    cache_bytes: u64,
) -> (
    impl Sized,
    LookupService,
    dialtone_sync::Id,
    dialtone_sync::Id,
) {
    let (up, url) = start_upstream(Reply::NotFound, false).await;
    let (db, store, mirror) = mirror_of(&[
        tenant("acme", "US"),
        cnam_source("acme", &url),
        tenant("globex", "US"),
        cnam_source("globex", &url),
    ])
    .await;
    let (acme, globex) = (tenant_id(&mirror, "acme"), tenant_id(&mirror, "globex"));
    let service = LookupService::with_clock(
        mirror,
        None,
        LookupOptions {
            cache_bytes,
            ..options()
        },
        Clock::manual(),
    );
    ((up, db, store), service, acme, globex)
}

/// One tenant asking endless distinct numbers (each twice, to pass moka's
/// admission) does not push other tenants' answers out: a tenant past its
/// share (here half: two tenants hold answers) has new answers served, not
/// cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_distinct_numbers_leaves_the_others_answers_cached() {
    // About 360 answers.
    let cache_bytes: u64 = 64 << 10;
    let (_held, service, acme, globex) = two_tenants_sharing(cache_bytes).await;
    let globex_numbers: Vec<String> = (0..60).map(|n| format!("+1555010{n:04}")).collect();
    for number in &globex_numbers {
        service.lookup(globex, number).await.unwrap();
    }
    // Five caches' worth.
    for n in 0..2_000 {
        let number = format!("+1555011{n:04}");
        for _ in 0..2 {
            service.lookup(acme, &number).await.unwrap();
        }
    }
    let held = service.cached_bytes_by_tenant().await;
    let acme_bytes = held.get(&acme).copied().unwrap_or(0);
    assert!(
        // Two tenants hold answers: half each.
        acme_bytes <= cache_bytes / 2 + 4096,
        "acme holds {acme_bytes} of {cache_bytes} bytes"
    );
    let mut kept = 0;
    for number in &globex_numbers {
        if service.lookup(globex, number).await.unwrap().cache == CacheStatus::Hit {
            kept += 1;
        }
    }
    assert_eq!(
        kept,
        globex_numbers.len(),
        "globex's answers were pushed out"
    );
}

/// Invalidating a tenant (an edit of its directory) only moves its
/// generation: its obsolete answers went on counting toward its share for
/// a day, and its new answers went uncached. The first answer refused
/// past the share sweeps them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_obsolete_answers_give_back_its_share() {
    let cache_bytes: u64 = 64 << 10;
    let (_held, service, acme, globex) = two_tenants_sharing(cache_bytes).await;
    service.lookup(globex, "+15550100001").await.unwrap();
    // Past acme's share (half).
    for n in 0..1_000 {
        let number = format!("+1555011{n:04}");
        for _ in 0..2 {
            service.lookup(acme, &number).await.unwrap();
        }
    }
    let full = service.cached_bytes_by_tenant().await[&acme];
    assert!(full > cache_bytes / 4, "acme holds {full} bytes");
    service.invalidate_tenant(acme);
    // Refused past the share, and sweeps.
    service.lookup(acme, "+15550120000").await.unwrap();
    let mut held = full;
    for _ in 0..100 {
        held = service
            .cached_bytes_by_tenant()
            .await
            .get(&acme)
            .copied()
            .unwrap_or(0);
        if held < full / 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held < full / 4, "acme still holds {held} of {full} bytes");
    let fresh: Vec<String> = (1..20).map(|n| format!("+1555012{n:04}")).collect();
    for number in &fresh {
        for _ in 0..2 {
            service.lookup(acme, number).await.unwrap();
        }
    }
    let mut hits = 0;
    for number in &fresh {
        if service.lookup(acme, number).await.unwrap().cache == CacheStatus::Hit {
            hits += 1;
        }
    }
    assert_eq!(hits, fresh.len(), "acme's new answers went uncached");
}

//! One tenant's load never reaches another's lookups: a large directory's
//! index builds off the runtime's workers, once, and a tenant's slow
//! source holds only its share of the loads in flight.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_directory::{CacheStatus, LookupOptions, LookupService};
use dialtone_sync::testing::build::{mirror_of, work_numbers};
use dialtone_sync::*;

const BIG: Id = 1;
const SMALL: Id = 2;
/// A second large tenant.
const BIG2: Id = 3;
/// Enough that an index build takes seconds, well past the deadline, on a
/// fast machine, and cheap to set up: the mirror is loaded from a dataset
/// in memory, not through SQL.
const BIG_ENTRIES: i64 = 100_000;

fn tenant(id: Id, slug: &str) -> Tenant {
    Tenant {
        id,
        slug: slug.into(),
        name: slug.into(),
        default_region: "US".into(),
        settings: "{}".into(),
        updated_at: 0,
    }
}

fn entry(id: Id, tenant_id: Id, name: String, numbers: &[String]) -> DirectoryEntry {
    DirectoryEntry {
        id,
        tenant_id,
        external_id: None,
        name: name.into(),
        company: None,
        numbers: work_numbers(numbers),
        updated_at: 0,
    }
}

/// The big tenant's `i`th number, as its directory spells it.
fn big_number(i: i64) -> String {
    format!("(201) {:03}-{:04}", 200 + i / 10_000, i % 10_000)
}

fn big_mirror() -> Arc<Mirror> {
    mirror_with_bigs(&[BIG])
}

/// `bigs`, each a tenant of `BIG_ENTRIES` entries, and SMALL.
fn mirror_with_bigs(bigs: &[Id]) -> Arc<Mirror> {
    let mut data = Dataset {
        tenants: vec![tenant(SMALL, "small")],
        ..Dataset::default()
    };
    for &big in bigs {
        data.tenants.push(tenant(big, &format!("big{big}")));
        let first = 10 + (big - 1) * BIG_ENTRIES;
        for i in 0..BIG_ENTRIES {
            data.directory_entries.push(entry(
                first + i,
                big,
                format!("Big {i}"),
                &[big_number(i)],
            ));
        }
    }
    data.directory_entries.push(entry(
        1,
        SMALL,
        "Small Caller".into(),
        &["+1 555 010 1234".into()],
    ));
    mirror_of(data)
}

/// Spawns a lookup and returns its answer with the time from spawn to
/// answer, so a task that waited for a free worker shows it.
fn spawn_lookup(
    service: &LookupService,
    tenant: Id,
    number: String,
) -> tokio::task::JoinHandle<(dialtone_directory::Answer, Duration)> {
    let service = service.clone();
    let spawned = Instant::now();
    tokio::spawn(async move {
        let answer = service.lookup(tenant, &number).await.unwrap();
        (answer, spawned.elapsed())
    })
}

/// Two workers, as on a small machine: with the index built on them, a
/// few lookups of the big tenant would hold both, and another tenant's
/// lookup would wait a whole build for a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_directory_builds_once_off_the_workers_within_the_deadline() {
    let mirror = big_mirror();
    let service = LookupService::new(mirror, None, LookupOptions::default());
    let deadline = LookupOptions::default().deadline;

    let started = Instant::now();
    let big: Vec<_> = (0..8)
        .map(|i| spawn_lookup(&service, BIG, big_number(i * 1_000)))
        .collect();
    // The test's own thread is not a worker: it can wait while they are busy.
    while service.local().builds() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no build started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let small = spawn_lookup(&service, SMALL, "555-010-1234".into());

    let guard = Duration::from_secs(120);
    let (small, small_took) = tokio::time::timeout(guard, small).await.unwrap().unwrap();
    assert_eq!(small.name(), Some("Small Caller"));
    let mut big_took = Vec::new();
    for lookup in big {
        let (answer, took) = tokio::time::timeout(guard, lookup).await.unwrap().unwrap();
        big_took.push((answer.name().map(str::to_string), answer.cache, took));
    }
    // The index is ready once a lookup finds a name in it.
    let built = loop {
        let answer = service.lookup(BIG, &big_number(7_000)).await.unwrap();
        if answer.name().is_some() {
            assert_eq!(answer.name(), Some("Big 7000"));
            break started.elapsed();
        }
        assert!(started.elapsed() < guard, "the index was never built");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("built in {built:?}; small answered in {small_took:?}; big: {big_took:?}");
    assert!(
        built > deadline * 3,
        "the directory is too small to show anything: built in {built:?}"
    );
    // Relative to the build, not to a fixed time, so a slow machine does
    // not fail it: the other tenant did not wait for the build.
    assert!(
        small_took < built / 2,
        "another tenant's lookup waited {small_took:?} for a build of {built:?}"
    );
    // The big tenant's own lookups got the deadline's answer, not the build's.
    for (name, cache, took) in &big_took {
        assert_eq!((name.as_deref(), *cache), (None, CacheStatus::Shed));
        assert!(
            *took < built / 2,
            "a lookup waited {took:?} for a build of {built:?}"
        );
    }
    // Eight concurrent lookups, one build; the small tenant's is the other.
    assert_eq!(service.local().builds(), 2);
}

/// After an edit, a large directory's next index is made from its last
/// one: only the edited entry is normalized again, so the tenant's lookups
/// answer the edit at once instead of shedding for a whole build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_large_directory_is_indexed_without_a_build() {
    let mirror = big_mirror();
    let service = LookupService::new(mirror.clone(), None, LookupOptions::default());
    let guard = Duration::from_secs(120);

    // Polls until the big tenant's lookup of `number` names `name`; the time
    // from the first try.
    async fn answered(service: &LookupService, number: &str, name: &str) -> Duration {
        let started = Instant::now();
        loop {
            let answer = service.lookup(BIG, number).await.unwrap();
            if answer.name() == Some(name) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "never answered"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let built = tokio::time::timeout(guard, answered(&service, &big_number(7_000), "Big 7000"))
        .await
        .unwrap();
    assert_eq!(
        (service.local().builds(), service.local().updates()),
        (1, 0)
    );

    let state = mirror.load();
    let renamed = entry(10 + 7_000, BIG, "Big Renamed".into(), &[big_number(7_000)]);
    mirror.apply(
        vec![(
            Entity::DirectoryEntry,
            renamed.id,
            Some(Row::DirectoryEntry(renamed)),
        )],
        state.cursor(),
        state.meta().clone(),
    );
    let edited = tokio::time::timeout(guard, answered(&service, &big_number(7_000), "Big Renamed"))
        .await
        .unwrap();
    eprintln!("built in {built:?}; the edit answered in {edited:?}");
    assert_eq!(
        (service.local().builds(), service.local().updates()),
        (2, 1)
    );
    // Relative to the build, not to a fixed time: the edit did not cost one.
    assert!(
        edited < built / 4,
        "the edit took {edited:?} against a build of {built:?}"
    );
}

/// A small tenant's one-entry edit is indexed while other tenants' whole
/// builds of large directories run (here: a whole build of its own, its
/// directory small): taking places in turn with them, it waited behind
/// them (a minute and more each at the entry quota), and its lookups
/// meanwhile all answered unavailable. Small work has a place of its own
/// beside those whole builds may take (here one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_edit_is_indexed_while_other_tenants_whole_builds_run() {
    let mirror = mirror_with_bigs(&[BIG, BIG2]);
    let local = Arc::new(
        dialtone_directory::local::LocalDirectory::new(mirror.clone(), 7, 100).with_build_places(1),
    );
    let far = || tokio::time::Instant::now() + Duration::from_secs(120);
    let small = local
        .find(&mirror.load(), SMALL, "+15550101234", far())
        .await
        .unwrap();
    assert_eq!(small.map(|f| f.name), Some("Small Caller".into()));
    // Two large tenants' first builds, asked for before the edit.
    let bigs: Vec<_> = [BIG, BIG2]
        .into_iter()
        .map(|big| {
            let (local, state) = (local.clone(), mirror.load());
            tokio::spawn(async move { local.find(&state, big, &big_number(7), far()).await })
        })
        .collect();
    let started = Instant::now();
    while local.builds() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no build started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let state = mirror.load();
    let renamed = entry(
        1,
        SMALL,
        "Small Renamed".into(),
        &["+1 555 010 1234".into()],
    );
    mirror.apply(
        vec![(
            Entity::DirectoryEntry,
            1,
            Some(Row::DirectoryEntry(renamed)),
        )],
        state.cursor(),
        state.meta().clone(),
    );
    let edited = local
        .find(&mirror.load(), SMALL, "+15550101234", far())
        .await
        .unwrap();
    assert_eq!(edited.map(|f| f.name), Some("Small Renamed".into()));
    let built = [BIG, BIG2].map(|big| local.holds_index_of(big));
    assert_eq!(
        built,
        [false, false],
        "the edit waited for another tenant's whole build ({:?})",
        started.elapsed()
    );
    for big in bigs {
        let found = big.await.unwrap().unwrap();
        assert_eq!(found.map(|f| f.name), Some("Big 7".into()));
    }
    assert!(local.most_builds_at_once() <= 2);
}

/// An upstream CNAM server on loopback that counts requests and, when
/// gated, holds each one until the test lets it go; it answers `reply`.
struct Upstream {
    requests: std::sync::atomic::AtomicU64,
    gate: tokio::sync::Semaphore,
    gated: bool,
    reply: (axum::http::StatusCode, &'static str),
}

async fn start_upstream(
    gated: bool,
    reply: (axum::http::StatusCode, &'static str),
) -> (Arc<Upstream>, String) {
    use axum::extract::State;
    let up = Arc::new(Upstream {
        requests: Default::default(),
        gate: tokio::sync::Semaphore::new(0),
        gated,
        reply,
    });
    let app = axum::Router::new()
        .route(
            "/cnam/{digits}",
            axum::routing::get(|State(up): State<Arc<Upstream>>| async move {
                up.requests
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if up.gated {
                    up.gate.acquire().await.unwrap().forget();
                }
                up.reply
            }),
        )
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cnam/{{digits}}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (up, url)
}

/// Tenants whose source answers only at the deadline (a 404 then is a
/// success to its breaker), each asking for eight numbers at once, beside
/// "acme", whose source answers at once; `max_inflight` is 8.
struct SlowTenants {
    service: LookupService,
    slow: Arc<Upstream>,
    acme: Id,
    hostile: Vec<Id>,
    flood: Vec<tokio::task::JoinHandle<(dialtone_directory::Answer, Duration)>>,
    _db: (dialtone_sync::testing::TestDb, Arc<dyn Store>),
}

impl SlowTenants {
    /// Returns once every lookup of the flood has either reached the slow
    /// upstream or been shed.
    async fn flood(slugs: &[&str]) -> SlowTenants {
        use axum::http::StatusCode;
        use common::{cnam_source, mirror_of, tenant as tenant_row, tenant_id};
        let (slow, slow_url) = start_upstream(true, (StatusCode::NOT_FOUND, "")).await;
        let (_fast, fast_url) = start_upstream(false, (StatusCode::OK, "Acme Name")).await;
        let mut rows = vec![tenant_row("acme", "US"), cnam_source("acme", &fast_url)];
        for slug in slugs {
            rows.push(tenant_row(slug, "US"));
            rows.push(cnam_source(slug, &slow_url));
        }
        let (db, store, mirror) = mirror_of(&rows).await;
        let acme = tenant_id(&mirror, "acme");
        let hostile: Vec<Id> = slugs.iter().map(|slug| tenant_id(&mirror, slug)).collect();
        let options = LookupOptions {
            max_inflight: 8,
            deadline: Duration::from_secs(5),
            // The test's upstreams listen on loopback.
            source_networks: dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
                .unwrap()
                .shared(),
            ..LookupOptions::default()
        };
        let service = LookupService::new(mirror, None, options);
        let flood: Vec<_> = hostile
            .iter()
            .flat_map(|&tenant| (0..8).map(move |i| (tenant, format!("+1 201 555 {:04}", 100 + i))))
            .map(|(tenant, number)| spawn_lookup(&service, tenant, number))
            .collect();
        let settled = || {
            let reached = slow.requests.load(std::sync::atomic::Ordering::SeqCst) as usize;
            reached + flood.iter().filter(|h| h.is_finished()).count() == flood.len()
        };
        assert!(
            testing::eventually(Duration::from_secs(10), settled).await,
            "the flood never settled"
        );
        SlowTenants {
            service,
            slow,
            acme,
            hostile,
            flood,
            _db: (db, store),
        }
    }

    async fn acme_is_served(&self) {
        let other = self
            .service
            .lookup(self.acme, "+1 201 555 0001")
            .await
            .unwrap();
        assert_eq!(
            (other.name(), other.cache),
            (Some("Acme Name"), CacheStatus::Miss),
            "another tenant's miss was not loaded"
        );
    }

    /// Lets the flood's loads end; how many of its lookups were shed.
    async fn release(&mut self) -> usize {
        self.slow.gate.add_permits(self.flood.len());
        let mut shed = 0;
        for lookup in self.flood.drain(..) {
            let (answer, _) = lookup.await.unwrap();
            assert_eq!(answer.name(), None);
            if answer.cache == CacheStatus::Shed {
                shed += 1;
            }
        }
        shed
    }
}

/// A tenant with such a source holds its share of the loads in flight, not
/// all of them: the rest of its lookups are shed, as past the global
/// bound, and another tenant's miss is still loaded.
#[tokio::test]
async fn a_tenant_with_a_slow_source_holds_only_its_share_of_the_loads() {
    let mut slow = SlowTenants::flood(&["hostile"]).await;
    slow.acme_is_served().await;
    // A quarter of eight may load; the rest are shed at once.
    assert_eq!(slow.release().await, 6);
    // The slots come back once its loads end.
    slow.slow.gate.add_permits(1);
    let again = slow
        .service
        .lookup(slow.hostile[0], "+1 201 555 0999")
        .await
        .unwrap();
    assert_eq!(
        (again.resolved.definitive, again.cache),
        (true, CacheStatus::Miss)
    );
}

/// Four such tenants take every slot between them (a quarter each).
/// Another tenant's miss is still loaded, from the reserve beyond the
/// slots; under a fixed quarter each, it was shed.
#[tokio::test]
async fn four_tenants_with_slow_sources_do_not_shed_a_fifth() {
    let mut slow = SlowTenants::flood(&["h1", "h2", "h3", "h4"]).await;
    assert_eq!(
        slow.slow.requests.load(std::sync::atomic::Ordering::SeqCst),
        8,
        "the four tenants hold every slot, two each"
    );
    slow.acme_is_served().await;
    assert_eq!(slow.release().await, 4 * 8 - 8);
}

/// A source reached with little of the deadline left, behind a slow one,
/// times out without that counting toward its breaker: only the slow one
/// opens.
#[tokio::test]
async fn a_source_starved_by_a_slow_one_before_it_keeps_its_breaker_closed() {
    use axum::http::StatusCode;
    use common::{mirror_of, tenant as tenant_row, tenant_id};
    use dialtone_directory::breaker::BreakerState;
    let (_slow, slow_url) = start_upstream(true, (StatusCode::NOT_FOUND, "")).await;
    let (_later, later_url) = start_upstream(true, (StatusCode::NOT_FOUND, "")).await;
    let source = |name: &str, url: &str, priority: i32| {
        Mutation::UpsertDirectorySource(DirectorySourceInput {
            tenant: "acme".into(),
            name: name.into(),
            kind: SourceKind::Http,
            priority,
            enabled: true,
            settings: serde_json::json!({ "url": url }).to_string(),
            secret: None,
            timeout_ms: 250,
        })
    };
    let rows = [
        tenant_row("acme", "US"),
        source("slow", &slow_url, -10),
        source("later", &later_url, 5_000),
    ];
    let (_db, _store, mirror) = mirror_of(&rows).await;
    let acme = tenant_id(&mirror, "acme");
    let options = LookupOptions {
        deadline: Duration::from_millis(300),
        breaker_threshold: 2,
        breaker_cooldown: Duration::from_secs(600),
        source_networks: dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
            .unwrap()
            .shared(),
        ..LookupOptions::default()
    };
    let service = LookupService::new(mirror, None, options);
    for n in 0..2 {
        let answer = service
            .lookup(acme, &format!("+1 201 555 {:04}", 200 + n))
            .await
            .unwrap();
        assert!(!answer.resolved.definitive, "{answer:?}");
    }
    // A load runs on past its caller's deadline on its own task: let the
    // last source's timeout land before reading the breakers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = |name| service.source(acme, name).unwrap().breaker.state();
    assert_eq!(state("slow"), BreakerState::Open);
    assert_eq!(state("later"), BreakerState::Closed);
}

/// A disabled source is not kept built: a mirrored one would hold its
/// whole index in memory outside the quota, which counts enabled sources.
#[tokio::test]
async fn a_disabled_source_is_dropped_with_what_it_holds() {
    use common::{mirror_of as mirror_with_store, tenant as tenant_row, tenant_id};
    let source = |enabled: bool| {
        Mutation::UpsertDirectorySource(DirectorySourceInput {
            tenant: "acme".into(),
            name: "cnam".into(),
            kind: SourceKind::Http,
            priority: 10,
            enabled,
            settings: serde_json::json!({ "url": "http://127.0.0.1:9/?n={e164}" }).to_string(),
            secret: None,
            timeout_ms: 250,
        })
    };
    let (_db, store, mirror) = mirror_with_store(&[tenant_row("acme", "US"), source(true)]).await;
    let acme = tenant_id(&mirror, "acme");
    let options = LookupOptions {
        source_networks: dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
            .unwrap()
            .shared(),
        ..LookupOptions::default()
    };
    let service = LookupService::new(mirror.clone(), None, options);
    let built = Arc::downgrade(&service.source(acme, "cnam").unwrap());
    let mut events = mirror.subscribe();
    store
        .apply(&[source(false)], &common::audit("disable"))
        .await
        .unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    while let Ok(event) = events.try_recv() {
        service.apply_change(&event);
    }
    assert!(
        built.upgrade().is_none(),
        "a disabled source is still built"
    );
}

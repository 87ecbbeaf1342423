//! Helpers shared by the sync tests; the data builders are
//! `dialtone_sync::testing::build`. MACs use real vendor OUIs and
//! numbers the reserved fictional ranges (see docs/test-data.md).
#![allow(dead_code)]

/// `both_backends!(name, body)`: tests `name::sqlite` and `name::postgres`,
/// each calling `body` with a fresh database of that backend.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(
                    dialtone_sync::testing::TestDb::new(dialtone_sync::Backend::Sqlite).await,
                )
                .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(
                    dialtone_sync::testing::TestDb::new(dialtone_sync::Backend::Postgres).await,
                )
                .await;
            }
        }
    };
}

use std::sync::Arc;
use std::time::Duration;

#[allow(unused_imports)] // a test file may include this module for `both_backends!` alone
pub use dialtone_sync::testing::build::*;
use dialtone_sync::testing::eventually;
use dialtone_sync::*;
use tokio_util::sync::CancellationToken;

/// A SQLite store holding one tenant, `acme` (US).
pub async fn sqlite_with_acme() -> (dialtone_sync::testing::TestDb, Arc<dyn Store>) {
    let db = dialtone_sync::testing::TestDb::sqlite();
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    (db, store)
}

/// One number counted with SQL (not from the store's own report).
pub async fn scalar(db: &dialtone_sync::testing::TestDb, sql: &str) -> i64 {
    use sqlx::Connection;
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
    }
}

/// One statement run with SQL, past the store (a restore's leftovers, a
/// newer binary's rows).
pub async fn execute(db: &dialtone_sync::testing::TestDb, sql: &str) {
    use sqlx::Connection;
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
}

/// The mirror's per-tenant phone index lists exactly the phones each
/// tenant holds, in id order.
pub fn assert_tenant_index(state: &MirrorState) {
    let mut listed = 0;
    for tenant in state.tenants() {
        let mut expected: Vec<Id> = (state.phones())
            .filter(|p| p.tenant_id == tenant.id)
            .map(|p| p.id)
            .collect();
        expected.sort_unstable();
        let indexed: Vec<Id> = state.phones_of(tenant.id).map(|p| p.id).collect();
        assert_eq!(indexed, expected, "tenant {}'s phones", tenant.slug);
        assert_eq!(state.phone_count(tenant.id), expected.len());
        listed += indexed.len();
    }
    assert_eq!(listed, state.counts().phones, "phones of no tenant");
}

/// The database's rows, sorted, as the mirror should hold them.
pub async fn db_rows(store: &dyn Store) -> Dataset {
    let (mut data, _, _) = store.load_all().await.unwrap();
    data.sort();
    data
}

pub struct RunningMirror {
    pub mirror: Arc<Mirror>,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl RunningMirror {
    pub async fn start(store: Arc<dyn Store>) -> RunningMirror {
        Self::start_with(store, watcher::WatchOptions::default()).await
    }

    pub async fn start_with(
        store: Arc<dyn Store>,
        options: watcher::WatchOptions,
    ) -> RunningMirror {
        let mirror = Arc::new(Mirror::new());
        watcher::full_load(&mirror, &*store).await.unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watcher::run(mirror.clone(), store, options, cancel.clone()));
        RunningMirror {
            mirror,
            cancel,
            task,
        }
    }

    /// Waits until the mirror equals the database; panics with a diff summary if it never does.
    pub async fn assert_converges(&self, store: &dyn Store, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let want = db_rows(store).await;
            let state = self.mirror.load();
            let have = state.to_dataset();
            if want == have {
                assert_tenant_index(&state);
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "mirror never matched the database: db has {} phones / {} lines / {} entries, mirror {} / {} / {}",
                    want.phones.len(),
                    want.lines.len(),
                    want.directory_entries.len(),
                    have.phones.len(),
                    have.lines.len(),
                    have.directory_entries.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&MirrorState) -> bool) -> bool {
        let m = self.mirror.clone();
        eventually(timeout, move || check(&m.load())).await
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

pub fn ldap_source(tenant: &str, name: &str, secret: Option<&str>) -> Mutation {
    Mutation::UpsertDirectorySource(dialtone_sync::store::DirectorySourceInput {
        tenant: tenant.into(),
        name: name.into(),
        kind: SourceKind::Ldap,
        priority: 10,
        enabled: true,
        settings: r#"{"url":"ldap://127.0.0.1:1/","base_dn":"dc=example,dc=com"}"#.into(),
        secret: secret.map(Into::into),
        timeout_ms: 200,
    })
}

/// Past the two-connection threshold (20,000 phones).
pub const BIG: u32 = 24_000;

/// Tenants acme and beta, and `phones` phones of acme, phone `n` with
/// `lines_of(n)` lines and every tenth with a device secret.
pub fn fleet_of(phones: u32, lines_of: impl Fn(u32) -> usize) -> Vec<Mutation> {
    let mut batch = vec![tenant("acme", "US"), tenant("beta", "GB")];
    for n in 0..phones {
        let Mutation::UpsertPhone(mut p) = phone("acme", n, lines_of(n)) else {
            unreachable!()
        };
        if n % 10 == 0 {
            p.http_user = Some(format!("dev{n}"));
            p.http_password = Some(format!("device-{n}"));
        }
        batch.push(Mutation::UpsertPhone(p));
    }
    batch
}

/// Phone `n` of a [`fleet_of`] batch.
pub fn phone_mut(batch: &mut [Mutation], n: u32) -> &mut store::PhoneInput {
    match &mut batch[2 + n as usize] {
        Mutation::UpsertPhone(p) => p,
        _ => unreachable!(),
    }
}

/// Every fourth phone has two lines.
pub fn big_fleet() -> Vec<Mutation> {
    fleet_of(BIG, |n| if n % 4 == 0 { 2 } else { 1 })
}

/// Waits until at least `n` of the database's backends wait on a lock;
/// panics naming `what` if they never do within 30 s.
pub async fn lock_waiters(url: &str, n: i64, what: &str) {
    use sqlx::Connection;
    let mut watch = sqlx::PgConnection::connect(url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PostgreSQL database holding `batch`, and the batch.
pub async fn stored_fleet(
    batch: Vec<Mutation>,
) -> (
    dialtone_sync::testing::TestDb,
    Arc<dyn store::Store>,
    Vec<Mutation>,
) {
    let db = dialtone_sync::testing::TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    store.apply(&batch, &audit("import")).await.unwrap();
    (db, store, batch)
}

/// A PostgreSQL database holding [`big_fleet`], and the fleet.
pub async fn stored_big_fleet() -> (
    dialtone_sync::testing::TestDb,
    Arc<dyn store::Store>,
    Vec<Mutation>,
) {
    stored_fleet(big_fleet()).await
}

/// A PostgreSQL database holding 40 phones of one to three lines (79 lines).
pub async fn stored_small_fleet() -> (dialtone_sync::testing::TestDb, Arc<dyn store::Store>) {
    let (db, store, _) = stored_fleet(fleet_of(40, |n| 1 + n as usize % 3)).await;
    (db, store)
}

/// Counters this test process recorded, by name and labels.
#[derive(Default)]
pub struct CountersSeen(
    std::sync::Mutex<std::collections::HashMap<metrics::Key, Arc<std::sync::atomic::AtomicU64>>>,
);

impl CountersSeen {
    /// The value of counter `name` with exactly these labels (0 if never touched).
    pub fn get(&self, name: &str, labels: &[(&'static str, &'static str)]) -> u64 {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, *v))
            .collect();
        let key = metrics::Key::from_parts(name.to_string(), labels);
        self.0
            .lock()
            .unwrap()
            .get(&key)
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
    }
}

struct Recording(&'static CountersSeen);

impl metrics::Recorder for Recording {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let mut seen = self.0 .0.lock().unwrap();
        metrics::Counter::from_arc(seen.entry(key.clone()).or_default().clone())
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// The process's counters, recording from the first call on.
pub fn counters() -> &'static CountersSeen {
    static SEEN: std::sync::OnceLock<&'static CountersSeen> = std::sync::OnceLock::new();
    SEEN.get_or_init(|| {
        let seen: &'static CountersSeen = Box::leak(Box::default());
        metrics::set_global_recorder(Recording(seen)).expect("no other recorder in a test process");
        seen
    })
}

/// `dialtone_store_large_reads_total` for `read` (mirror_load, import) and `connections`.
pub fn large_reads(read: &'static str, connections: &'static str) -> u64 {
    counters().get(
        "dialtone_store_large_reads_total",
        &[("read", read), ("connections", connections)],
    )
}

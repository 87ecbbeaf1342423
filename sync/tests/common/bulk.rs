//! Helpers of the bulk import's tests (`import_bulk.rs`,
//! `import_digests.rs`): a fleet long enough for the bulk path, and SQL
//! run on either backend, beside the store rather than through it.

use dialtone_sync::store::PhoneInput;
use dialtone_sync::testing::build::{phone, tenant};
use dialtone_sync::testing::TestDb;
use dialtone_sync::{Backend, Mutation};
use sqlx::Connection;

/// A test run against SQLite and against PostgreSQL.
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(TestDb::new(dialtone_sync::Backend::Sqlite).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(TestDb::new(dialtone_sync::Backend::Postgres).await).await;
            }
            use super::*;
        }
    };
}
pub(crate) use both_backends;

/// Enough phones to take the bulk path.
pub const PHONES: u32 = 300;

/// Counted with SQL, not from the store's own report.
pub async fn scalar(db: &TestDb, sql: &str) -> i64 {
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

/// A statement run behind the store's back, as an operator with psql would.
pub async fn execute(db: &TestDb, sql: &str) {
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

/// The phone digests the database holds, by phone id.
pub async fn digests(db: &TestDb) -> Vec<(i64, String, i64, i64)> {
    let sql = "SELECT id, mac, high, low FROM phone_digests ORDER BY id";
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        }
    }
}

pub async fn change_log_rows(db: &TestDb) -> i64 {
    scalar(db, "SELECT count(*) FROM change_log").await
}

/// Two tenants, then [`PHONES`] phones of the first with two lines each;
/// every tenth has provisioning credentials.
pub fn fleet() -> Vec<Mutation> {
    let mut batch = vec![tenant("acme", "US"), tenant("beta", "GB")];
    for n in 0..PHONES {
        let Mutation::UpsertPhone(mut p) = phone("acme", n, 2) else {
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

/// Phone `n` of a [`fleet`].
pub fn phone_mut(batch: &mut [Mutation], n: u32) -> &mut PhoneInput {
    match &mut batch[2 + n as usize] {
        Mutation::UpsertPhone(p) => p,
        _ => unreachable!(),
    }
}

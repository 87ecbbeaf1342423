//! A database URL read as the stores read it, without connecting: `open`
//! refuses what no store could use before touching a database, and
//! `check-config` refuses the same URLs without starting anything.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::{backend_of, Backend};
use crate::error::SyncError;

/// Which store `url` names, once its options have been read as that
/// store's `connect` reads them. Nothing is opened or created.
pub fn parse_url(url: &str) -> Result<Backend, SyncError> {
    let backend = backend_of(url)?;
    match backend {
        Backend::Sqlite => {
            let options = SqliteConnectOptions::from_str(url)?;
            // SQLite gives an empty file name a private temporary database
            // per connection: each of the pool's would see a different,
            // unmigrated one.
            if options.get_filename().as_os_str().is_empty() && !in_memory(url) {
                return Err(SyncError::Database(sqlx::Error::Configuration(
                    "the SQLite URL names no file (sqlite:///var/lib/dialtone/dialtone.db)".into(),
                )));
            }
        }
        Backend::Postgres => {
            PgConnectOptions::from_str(url)?;
        }
    }
    Ok(backend)
}

/// `?mode=memory`, which names no file and shares one database between
/// the pool's connections (`sqlite::memory:` has a name of its own).
fn in_memory(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        url::form_urlencoded::parse(query.as_bytes())
            .any(|(key, value)| key == "mode" && value == "memory")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_no_store_could_open_are_refused() {
        for (url, why) in [
            (
                "sqlite:///tmp/d.db?foo=bar",
                "unknown query parameter `foo`",
            ),
            ("sqlite://", "names no file"),
            ("sqlite:", "names no file"),
            ("postgres://u:pw@[::1:1/db", "invalid IPv6 address"),
            ("postgres://u:pw@/db?host=/x", "empty host"),
            ("postgres://u:pw@h:99999/db", "invalid port number"),
            ("postgres://u:pw@h/db?sslmode=bogus", "bogus"),
            ("postgres://u:pw@h/db?sslpassword=pw", "sslpassword"),
            ("mysql://u:pw@h/db", "unsupported"),
        ] {
            let refused = parse_url(url).expect_err(url).to_string();
            assert!(refused.contains(why), "{url}: {refused}");
            assert!(!refused.contains("pw@"), "{url}: {refused}");
        }
    }

    #[test]
    fn urls_the_stores_open_are_read() {
        for (url, backend) in [
            ("sqlite:///var/lib/dialtone/dialtone.db", Backend::Sqlite),
            ("sqlite://d.db?mode=rwc", Backend::Sqlite),
            ("sqlite::memory:", Backend::Sqlite),
            ("sqlite://?mode=memory", Backend::Sqlite),
            (
                "postgres://u:pw@db.example.net:5433/dialtone",
                Backend::Postgres,
            ),
            ("postgresql://u@[::1]/d?sslmode=require", Backend::Postgres),
            (
                "postgres:///dialtone?host=/run/postgresql",
                Backend::Postgres,
            ),
            ("postgres://%2Frun%2Fpostgresql/dialtone", Backend::Postgres),
        ] {
            assert_eq!(parse_url(url).expect(url), backend, "{url}");
        }
    }
}

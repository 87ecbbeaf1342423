//! A database URL read as the stores read it, without connecting: `open`
//! refuses what no store could use before touching a database, and
//! `check-config` refuses the same URLs without starting anything.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
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

/// Why the connections `url` opens could be read and changed on the way,
/// for `serve` and `check-config` to warn of: PostgreSQL over the network
/// with an `sslmode` (or `PGSSLMODE`, or none: `prefer`) that does not
/// check the server. Such a session carries tenants' settings, directory
/// entries and token hashes, and one who sits between can add rows, a
/// global-admin token among them. `require` is among them: it stops a
/// listener but not one who answers as the server, and sqlx, unlike libpq,
/// checks nothing under it even when `sslrootcert` names a CA. `None` for
/// SQLite, a Unix socket, this host, `verify-ca` and `verify-full`, and a
/// URL `parse_url` refuses (which says why itself).
pub fn exposed_on_the_network(url: &str) -> Option<String> {
    if backend_of(url).ok()? != Backend::Postgres {
        return None;
    }
    let options = PgConnectOptions::from_str(url).ok()?;
    let mode = match options.get_ssl_mode() {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa | PgSslMode::VerifyFull => return None,
    };
    // sqlx takes a host starting with `/` for a socket's folder.
    let host = options.get_host();
    if options.get_socket().is_some() || host.starts_with('/') || names_this_host(host) {
        return None;
    }
    let (exposure, who) = if mode == "require" {
        (
            "TLS is required but the server is not verified",
            "anyone who can answer as the server",
        )
    } else {
        (
            "TLS is not required and the server is not verified",
            "anyone on the network path",
        )
    };
    Some(format!(
        "PostgreSQL at {host} with sslmode={mode}: {exposure}, so {who} can read tenant data, \
         directory entries and token hashes, and change rows (add a global-admin token); use \
         sslmode=verify-full&sslrootcert=/path/to/the-server-ca.crt in the URL"
    ))
}

/// Loopback by name or address; an IPv6 host keeps its URL brackets.
fn names_this_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
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

    #[test]
    fn postgres_over_the_network_without_required_tls_is_exposed() {
        for (url, mode) in [
            ("postgres://u:pw@db.example.net/d", "prefer"),
            (
                "postgres://u:pw@db.example.net/d?sslmode=disable",
                "disable",
            ),
            ("postgresql://u@10.0.0.5:5433/d?sslmode=allow", "allow"),
            ("postgres://u@[2001:db8::1]/d?ssl-mode=prefer", "prefer"),
            ("postgres://u@127.0.0.1.example.net/d", "prefer"),
            ("postgres:///d?host=db.example.net", "prefer"),
            ("postgres://u@localhost/d?hostaddr=192.0.2.7", "prefer"),
            (
                "postgres://u:pw@db.example.net/d?sslmode=require",
                "require",
            ),
            (
                "postgres://u:pw@db.example.net/d?sslmode=require&sslrootcert=/etc/ca.crt",
                "require",
            ),
        ] {
            let warning = exposed_on_the_network(url).expect(url);
            assert!(
                warning.contains(&format!("sslmode={mode}")),
                "{url}: {warning}"
            );
            assert!(
                warning.contains("sslmode=verify-full&sslrootcert="),
                "{url}: {warning}"
            );
            assert!(!warning.contains("pw"), "{url}: {warning}");
        }
    }

    #[test]
    fn local_databases_and_verified_servers_are_not_exposed() {
        for url in [
            "sqlite:///var/lib/dialtone/dialtone.db",
            "postgres://u:pw@db.example.net/d?sslmode=verify-ca&sslrootcert=/etc/ca.crt",
            "postgres://u:pw@db.example.net/d?sslmode=verify-full&sslrootcert=/etc/ca.crt",
            "postgres://u:pw@127.0.0.1:5432/d",
            "postgres://u:pw@127.8.9.10/d?sslmode=disable",
            "postgres://u@[::1]/d",
            "postgres://u@[::ffff:127.0.0.1]/d",
            "postgres://u@localhost/d?sslmode=disable",
            "postgres://u@LOCALHOST./d",
            "postgres:///dialtone?host=/run/postgresql",
            "postgres://%2Frun%2Fpostgresql/dialtone",
            // Refused by parse_url, which says why.
            "postgres://u:pw@db.example.net/d?sslmode=bogus",
        ] {
            assert_eq!(exposed_on_the_network(url), None, "{url}");
        }
    }
}

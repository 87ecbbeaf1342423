//! Which schema dialtone's tables are in. Its statements name tables
//! unqualified, so each connection would find them through its
//! `search_path`, and that moves under a running fleet: with the default
//! `"$user", public`, a DBA's `CREATE SCHEMA <role>` puts an empty schema
//! ahead of the tables, and every connection opened after it (a restarted
//! node's migration, a pool's new connection) would create or read empty
//! tables there and serve an empty fleet as ready. So the schema is found
//! once, on the first connection, and every later one is pinned to it.
//! A role whose `search_path` names another schema on purpose keeps it:
//! the tables are found wherever that path leads.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

use crate::error::SyncError;

/// The schema every connection of a store is pinned to, once known.
#[derive(Clone, Default)]
pub(super) struct Pinned(Arc<OnceLock<String>>);

/// The schemas of the connection's path that hold dialtone's tables, in
/// path order, and the schema a fresh database's tables would go to.
/// `dialtone_meta` is made by the first migration and never dropped.
const FIND: &str = "SELECT ARRAY(SELECT p.name::text \
     FROM unnest(current_schemas(false)) WITH ORDINALITY AS p(name, at) \
     WHERE EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = p.name AND c.relname = 'dialtone_meta') ORDER BY p.at), \
     current_schema()::text, current_setting('search_path')";

impl Pinned {
    /// The schema, found on `conn` the first time.
    pub(super) async fn schema(&self, conn: &mut PgConnection) -> Result<String, SyncError> {
        if let Some(schema) = self.0.get() {
            return Ok(schema.clone());
        }
        let (mut holding, current, path): (Vec<String>, Option<String>, String) =
            sqlx::query_as(FIND).fetch_one(&mut *conn).await?;
        let found = match holding.len() {
            0 => current.ok_or(SyncError::NoSchema(path))?,
            1 => holding.remove(0),
            _ => return Err(SyncError::SchemaAmbiguous { schemas: holding }),
        };
        Ok(self.0.get_or_init(|| found).clone())
    }

    /// Pins `conn` to the schema. `SET` takes no parameters, so the name
    /// is spliced in, quoted, and sent as a simple statement: preparing it
    /// would only keep a statement per connection for one use.
    pub(super) async fn pin(&self, conn: &mut PgConnection) -> Result<(), SyncError> {
        let schema = self.schema(conn).await?;
        conn.execute(set_search_path(&schema).as_str()).await?;
        Ok(())
    }

    /// [`Pinned::pin`] for the pool's `after_connect`. sqlx logs a failure
    /// there and tries again until the acquire times out: [`prepare`]
    /// names it first.
    pub(super) async fn pin_pooled(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        self.pin(conn).await.map_err(|e| match e {
            SyncError::Database(e) => e,
            other => sqlx::Error::Configuration(other.to_string().into()),
        })
    }

    /// A connection of its own, pinned.
    pub(super) async fn connect(
        &self,
        connect: &PgConnectOptions,
    ) -> Result<PgConnection, SyncError> {
        let mut conn = connect.connect().await?;
        match self.pin(&mut conn).await {
            Ok(()) => Ok(conn),
            Err(e) => {
                let _ = conn.close().await;
                Err(e)
            }
        }
    }
}

/// `SET search_path` to `schema` alone, quoted as an identifier.
fn set_search_path(schema: &str) -> String {
    format!("SET search_path TO \"{}\"", schema.replace('"', "\"\""))
}

/// Before a migration or a schema check, on a connection of its own (the
/// pool's would only time out on a refusal): finds the schema, and
/// refuses a standby, each with its own message.
pub(super) async fn prepare(
    connect: &PgConnectOptions,
    schema: &Pinned,
    timeout: Duration,
) -> Result<(), SyncError> {
    let checked = async {
        let mut conn = connect.connect().await?;
        let checked = async {
            schema.schema(&mut conn).await?;
            check_primary(&mut conn, connect.get_host()).await
        }
        .await;
        let _ = conn.close().await;
        checked
    };
    tokio::time::timeout(timeout, checked)
        .await
        .map_err(|_| SyncError::Database(sqlx::Error::PoolTimedOut))?
}

/// Refuses a server in recovery, whose reads would pass and whose every
/// write and `LISTEN` would fail; warns of a role whose transactions are
/// read-only. A server that cannot say (a pooler or proxy that does not
/// pass the call) is not refused for that.
async fn check_primary(conn: &mut PgConnection, host: &str) -> Result<(), SyncError> {
    match sqlx::query_as::<_, (bool, String)>(
        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
    )
    .fetch_one(&mut *conn)
    .await
    {
        Ok((true, _)) => Err(SyncError::Standby(host.to_string())),
        Ok((false, read_only)) => {
            if read_only == "on" {
                tracing::warn!(
                    host,
                    "this node's database transactions are read-only \
                     (default_transaction_read_only = on, set on its role, the database or \
                     the server): every write (admin API, imports, boot history) will fail"
                );
            }
            Ok(())
        }
        Err(e) => {
            let e = SyncError::from(e);
            // A pooler's refusal is no failed check: it fails every use.
            if matches!(e, SyncError::PoolerMode(_) | SyncError::PoolerParameter(_)) {
                return Err(e);
            }
            tracing::debug!(error = %e, "cannot ask the database whether it is a standby");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_schema_name_is_quoted_whole() {
        assert_eq!(super::set_search_path("app"), "SET search_path TO \"app\"");
        assert_eq!(
            super::set_search_path("a\"; DROP TABLE phones; --"),
            "SET search_path TO \"a\"\"; DROP TABLE phones; --\""
        );
    }
}

//! SQL for the rows that grant access to something outside dialtone's own
//! data: directory sources (credentials for LDAP and upstream CNAM) and API
//! tokens. Expanded inside `shared_sql!`, so it shares its connection type.

macro_rules! access_sql {
    ($conn:ty) => {
        use crate::store::{ApiTokenInput, DirectorySourceInput};

        /// `mutation`: the upsert or create `s` comes from.
        async fn upsert_source(
            conn: &mut $conn,
            key: &SecretKey,
            mutation: &Mutation,
            s: &DirectorySourceInput,
            now: Millis,
            report: &mut WriteReport,
        ) -> Result<(), SyncError> {
            let tenant = tenant_id(conn, &s.tenant).await?;
            if s.timeout_ms <= 0 {
                return Err(SyncError::Invalid(format!(
                    "source {:?}: timeout_ms must be positive",
                    s.name
                )));
            }
            let existing: Option<(Id, Option<String>)> =
                sqlx::query_as("SELECT id, secret FROM directory_sources WHERE tenant_id = $1 AND name = $2")
                    .bind(tenant)
                    .bind(&s.name)
                    .fetch_optional(&mut *conn)
                    .await?;
            mutation.refused_if(existing.is_some())?;
            // Secrets are write-only: leaving one out keeps the stored one.
            let secret = match (&s.secret, &existing) {
                (Some(plain), _) if plain.is_empty() => None,
                (Some(plain), _) => Some(key.seal(Purpose::SourceSecret, plain).0.to_string()),
                (None, Some((_, stored))) => stored.clone(),
                (None, None) => None,
            };
            let affected = match existing {
                None => sqlx::query(
                    "INSERT INTO directory_sources (tenant_id, name, kind, priority, enabled, settings, secret, \
                     timeout_ms, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                ),
                Some(_) => sqlx::query(
                    "UPDATE directory_sources SET kind = $3, priority = $4, enabled = $5, settings = $6, \
                     secret = $7, timeout_ms = $8, updated_at = $9 WHERE tenant_id = $1 AND name = $2 \
                     AND (kind IS DISTINCT FROM $3 OR priority IS DISTINCT FROM $4 \
                     OR enabled IS DISTINCT FROM $5 OR settings IS DISTINCT FROM $6 \
                     OR secret IS DISTINCT FROM $7 OR timeout_ms IS DISTINCT FROM $8)",
                ),
            }
            .bind(tenant)
            .bind(&s.name)
            .bind(s.kind.as_str())
            .bind(s.priority)
            .bind(s.enabled)
            .bind(&s.settings)
            .bind(&secret)
            .bind(s.timeout_ms)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            count(&mut report.directory_sources, existing.is_some(), affected);
            Ok(())
        }

        async fn delete_source(
            conn: &mut $conn,
            tenant: &str,
            name: &str,
            report: &mut WriteReport,
        ) -> Result<(), SyncError> {
            let tenant = tenant_id(conn, tenant).await?;
            report.directory_sources.deleted +=
                sqlx::query("DELETE FROM directory_sources WHERE tenant_id = $1 AND name = $2")
                    .bind(tenant)
                    .bind(name)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            Ok(())
        }

        async fn create_token(
            conn: &mut $conn,
            t: &ApiTokenInput,
            now: Millis,
            report: &mut WriteReport,
        ) -> Result<(), SyncError> {
            let tenant = match (&t.tenant, t.scope) {
                (None, TokenScope::GlobalAdmin) => None,
                (Some(_), TokenScope::GlobalAdmin) => {
                    return Err(SyncError::Invalid("a global-admin token has no tenant".into()))
                }
                (Some(slug), _) => Some(tenant_id(conn, slug).await?),
                (None, scope) => {
                    return Err(SyncError::Invalid(format!(
                        "a {} token needs a tenant",
                        scope.as_str()
                    )))
                }
            };
            let hash_ok = t.token_hash.len() == 64 && t.token_hash.bytes().all(|b| b.is_ascii_hexdigit());
            if !hash_ok {
                return Err(SyncError::Invalid("token_hash must be a hex SHA-256".into()));
            }
            sqlx::query(
                "INSERT INTO api_tokens (name, token_hash, scope, tenant_id, created_at, expires_at, revoked, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, FALSE, $5)",
            )
            .bind(&t.name)
            .bind(t.token_hash.to_ascii_lowercase())
            .bind(t.scope.as_str())
            .bind(tenant)
            .bind(now)
            .bind(t.expires_at)
            .execute(&mut *conn)
            .await?;
            report.api_tokens.inserted += 1;
            Ok(())
        }

        async fn revoke_token(
            conn: &mut $conn,
            id: Id,
            now: Millis,
            report: &mut WriteReport,
        ) -> Result<(), SyncError> {
            let affected = sqlx::query(
                "UPDATE api_tokens SET revoked = TRUE, updated_at = $2 WHERE id = $1 AND NOT revoked",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            // An error rolls the transaction back with its audit row, which
            // would otherwise record a revoke that revoked nothing.
            if affected == 0 {
                return Err(SyncError::NotFound(format!("active token {id}")));
            }
            count(&mut report.api_tokens, true, affected);
            Ok(())
        }
    };
}

pub(crate) use access_sql;

//! SQL behind the admin API: optimistic-concurrency checks, template
//! deletion and history, and audit reads. Expanded inside `shared_sql!`, so
//! it shares its connection type; `$lock` is the backend's row-lock suffix
//! (PostgreSQL locks the checked row until commit; SQLite's writers are
//! already serialized by BEGIN IMMEDIATE).

/// A version's digest as a list of versions shows it: the first 8 bytes
/// of its body's SHA-256, in hex (the admin API's `digest`).
pub fn version_digest(body: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(body.as_bytes())[..8])
}

/// How a backend's SQL gives a version's [`version_digest`] without
/// sending its body, if it can.
pub(crate) trait VersionDigestSql {
    const DIGEST: Option<&'static str>;
}

impl VersionDigestSql for sqlx::PgConnection {
    const DIGEST: Option<&'static str> =
        Some("substr(encode(sha256(convert_to(body, 'UTF8')), 'hex'), 1, 16)");
}

/// SQLite has no hash function: its bodies are read, one row at a time.
impl VersionDigestSql for sqlx::SqliteConnection {
    const DIGEST: Option<&'static str> = None;
}

macro_rules! admin_sql {
    ($conn:ty, $lock:literal) => {
        use crate::store::{AuditQuery, AuditRecord, Target, TemplateVersion, TemplateVersionSummary};

        /// The id of the row `target` names, locked for this transaction.
        async fn locate(conn: &mut $conn, target: &Target) -> Result<(Entity, Option<Id>), SyncError> {
            Ok(match target {
                // `NO KEY`: a phone written for the tenant meanwhile checks
                // it (a foreign key) and need not wait on it. A delete of
                // the tenant locks its phones before it takes the row for
                // good, so a write holding one of them while adding another
                // no longer deadlocks with it; one adding a phone before
                // updating another still can (PostgreSQL cancels one, and
                // the API answers 503 `busy`, nothing written).
                Target::Tenant { slug } => (
                    Entity::Tenant,
                    sqlx::query_scalar(if $lock.is_empty() {
                        "SELECT id FROM tenants WHERE slug = $1"
                    } else {
                        "SELECT id FROM tenants WHERE slug = $1 FOR NO KEY UPDATE"
                    })
                    .bind(slug)
                    .fetch_optional(&mut *conn)
                    .await?,
                ),
                Target::Phone { mac } => (
                    Entity::Phone,
                    sqlx::query_scalar(concat!("SELECT id FROM phones WHERE mac = $1", $lock))
                        .bind(mac.to_string())
                        .fetch_optional(&mut *conn)
                        .await?,
                ),
                // Unlocked: every write of a token checks it, and a lock
                // would queue a token's writes behind its longest (an import).
                Target::Token { id } => (
                    Entity::ApiToken,
                    sqlx::query_scalar("SELECT id FROM api_tokens WHERE id = $1")
                        .bind(*id)
                        .fetch_optional(&mut *conn)
                        .await?,
                ),
                Target::Template { id } => (
                    Entity::Template,
                    {
                        // A phone-scope template's phone first, as every
                        // write that takes both locks them (the template's
                        // own write, a phone's delete or swap): template
                        // then phone deadlocked with a swap on PostgreSQL.
                        if !$lock.is_empty() {
                            sqlx::query(concat!(
                                "SELECT id FROM phones WHERE mac = \
                                 (SELECT scope_key FROM templates WHERE id = $1 AND scope = 'phone')",
                                $lock
                            ))
                            .bind(*id)
                            .execute(&mut *conn)
                            .await?;
                        }
                        sqlx::query_scalar(concat!("SELECT id FROM templates WHERE id = $1", $lock))
                            .bind(*id)
                            .fetch_optional(&mut *conn)
                            .await?
                    },
                ),
                Target::DirectoryEntry { tenant, external_id } => {
                    let tenant = tenant_id(conn, tenant).await?;
                    (
                        Entity::DirectoryEntry,
                        sqlx::query_scalar(concat!(
                            "SELECT id FROM directory_entries WHERE tenant_id = $1 AND external_id = $2",
                            $lock
                        ))
                        .bind(tenant)
                        .bind(external_id)
                        .fetch_optional(&mut *conn)
                        .await?,
                    )
                }
                Target::DirectorySource { tenant, name } => {
                    let tenant = tenant_id(conn, tenant).await?;
                    (
                        Entity::DirectorySource,
                        sqlx::query_scalar(concat!(
                            "SELECT id FROM directory_sources WHERE tenant_id = $1 AND name = $2",
                            $lock
                        ))
                        .bind(tenant)
                        .bind(name)
                        .fetch_optional(&mut *conn)
                        .await?,
                    )
                }
            })
        }

        /// Refuses the write unless `target`'s current tag is `etag`.
        async fn expect(conn: &mut $conn, target: &Target, etag: &str) -> Result<(), SyncError> {
            let (entity, id) = locate(conn, target).await?;
            let id = id.ok_or_else(|| SyncError::NotFound(target.to_string()))?;
            let row = reload(conn, entity, &[id])
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| SyncError::NotFound(target.to_string()))?;
            let current = match row {
                Row::Phone(phone) => {
                    let line_ids: Vec<Id> = sqlx::query_scalar("SELECT id FROM lines WHERE phone_id = $1")
                        .bind(id)
                        .fetch_all(&mut *conn)
                        .await?;
                    let lines: Vec<Line> = reload(conn, Entity::Line, &line_ids)
                        .await?
                        .into_iter()
                        .filter_map(|r| match r {
                            Row::Line(line) => Some(line),
                            _ => None,
                        })
                        .collect();
                    crate::etag::phone_etag(&phone, &lines)
                }
                Row::Tenant(row) => crate::etag::etag_of(&row),
                Row::Template(row) => crate::etag::etag_of(&row),
                Row::DirectoryEntry(row) => crate::etag::etag_of(&row),
                Row::DirectorySource(row) => crate::etag::etag_of(&row),
                Row::Line(row) => crate::etag::etag_of(&row),
                Row::ApiToken(row) => crate::etag::etag_of(&row),
            };
            if current == etag {
                Ok(())
            } else {
                Err(SyncError::Conflict(target.to_string()))
            }
        }

        async fn delete_template(conn: &mut $conn, id: Id, report: &mut WriteReport) -> Result<(), SyncError> {
            report.templates.deleted += sqlx::query("DELETE FROM templates WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(())
        }

        pub(super) async fn template_versions(
            conn: &mut $conn,
            template_id: Id,
        ) -> Result<Vec<TemplateVersion>, SyncError> {
            let rows: Vec<(Id, i64, String, String, Millis)> = sqlx::query_as(
                "SELECT template_id, version, body, updated_by, updated_at FROM template_versions \
                 WHERE template_id = $1 ORDER BY version",
            )
            .bind(template_id)
            .fetch_all(&mut *conn)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(template_id, version, body, updated_by, updated_at)| TemplateVersion {
                    template_id,
                    version,
                    body,
                    updated_by,
                    updated_at,
                })
                .collect())
        }

        /// Up to `limit` versions older than `before` (from the newest when
        /// `None`), newest first, without their bodies: a family or model
        /// template keeps every version, and reading all their bodies to
        /// list them held tens of megabytes per request.
        pub(super) async fn template_version_list(
            conn: &mut $conn,
            template_id: Id,
            before: Option<i64>,
            limit: i64,
        ) -> Result<Vec<TemplateVersionSummary>, SyncError> {
            const WHERE: &str = "FROM template_versions WHERE template_id = $1 AND version < $2 \
                                 ORDER BY version DESC LIMIT $3";
            let before = before.unwrap_or(i64::MAX);
            let limit = limit.max(0);
            if let Some(digest) = <$conn as crate::store::admin::VersionDigestSql>::DIGEST {
                let sql = format!(
                    "SELECT version, octet_length(body)::bigint, {digest}, updated_by, updated_at {WHERE}"
                );
                let rows: Vec<(i64, i64, String, String, Millis)> = sqlx::query_as(&sql)
                    .bind(template_id)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await?;
                return Ok(rows
                    .into_iter()
                    .map(|(version, bytes, digest, updated_by, updated_at)| TemplateVersionSummary {
                        version,
                        bytes,
                        digest,
                        updated_by,
                        updated_at,
                    })
                    .collect());
            }
            use futures::TryStreamExt;
            let sql = format!("SELECT version, body, updated_by, updated_at {WHERE}");
            let mut rows = sqlx::query_as::<_, (i64, String, String, Millis)>(&sql)
                .bind(template_id)
                .bind(before)
                .bind(limit)
                .fetch(&mut *conn);
            let mut list = Vec::new();
            while let Some((version, body, updated_by, updated_at)) = rows.try_next().await? {
                list.push(TemplateVersionSummary {
                    version,
                    bytes: body.len() as i64,
                    digest: crate::store::admin::version_digest(&body),
                    updated_by,
                    updated_at,
                });
            }
            Ok(list)
        }

        /// One kept version, with its body.
        pub(super) async fn template_version(
            conn: &mut $conn,
            template_id: Id,
            version: i64,
        ) -> Result<Option<TemplateVersion>, SyncError> {
            let row: Option<(Id, i64, String, String, Millis)> = sqlx::query_as(
                "SELECT template_id, version, body, updated_by, updated_at FROM template_versions \
                 WHERE template_id = $1 AND version = $2",
            )
            .bind(template_id)
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
            Ok(row.map(|(template_id, version, body, updated_by, updated_at)| TemplateVersion {
                template_id,
                version,
                body,
                updated_by,
                updated_at,
            }))
        }

        pub(super) async fn audit_log(conn: &mut $conn, query: &AuditQuery) -> Result<Vec<AuditRecord>, SyncError> {
            let mut sql = String::from(
                "SELECT id, at, actor, action, entity, entity_key, tenant, summary FROM audit_log WHERE 1 = 1",
            );
            // A slug names today's tenant, by id: a slug taken over after a
            // deletion must not mix the earlier customer's rows with the new
            // one's. Only a slug no tenant holds reads by the text, so a
            // deleted tenant's trail stays readable until its slug is taken.
            let current = match &query.tenant {
                Some(slug) => sqlx::query_scalar::<_, Id>("SELECT id FROM tenants WHERE slug = $1")
                    .bind(slug)
                    .fetch_optional(&mut *conn)
                    .await?,
                None => None,
            };
            let slug_text = query.tenant.as_ref().filter(|_| current.is_none());
            let mut texts: Vec<&str> = Vec::new();
            for (column, value) in [
                ("tenant", slug_text),
                ("entity", query.entity.as_ref()),
                ("actor", query.actor.as_ref()),
                ("entity_key", query.entity_key.as_ref()),
            ] {
                if let Some(value) = value {
                    texts.push(value);
                    sql.push_str(&format!(" AND {column} = ${}", texts.len()));
                }
            }
            let mut ids: Vec<Id> = Vec::new();
            for (condition, value) in [
                ("tenant_id =", query.tenant_id),
                ("tenant_id =", current),
                ("id <", query.before_id),
            ] {
                if let Some(value) = value {
                    ids.push(value);
                    sql.push_str(&format!(" AND {condition} ${}", texts.len() + ids.len()));
                }
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", query.limit.clamp(1, 1000)));
            let mut select = sqlx::query_as::<_, (Id, Millis, String, String, String, String, Option<String>, String)>(&sql);
            for text in texts {
                select = select.bind(text);
            }
            for id in ids {
                select = select.bind(id);
            }
            Ok(select
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|(id, at, actor, action, entity, entity_key, tenant, summary)| AuditRecord {
                    id,
                    at,
                    actor,
                    action,
                    entity,
                    entity_key,
                    tenant,
                    summary: serde_json::from_str(&summary).unwrap_or(serde_json::Value::String(summary)),
                })
                .collect())
        }
    };
}

pub(crate) use admin_sql;

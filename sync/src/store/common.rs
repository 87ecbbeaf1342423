//! SQL both backends share, written once and expanded for each connection
//! type. Both dialects accept `$N` parameters, `IS DISTINCT FROM` and
//! `RETURNING`; what differs (how a list of ids is bound) comes in as an
//! argument.

/// Expands to functions over `$conn` (a concrete sqlx connection type).
/// `$ids_filter` is a predicate on `id` for one bound JSON array of ids;
/// `$read_meta` reads the meta row ([`crate::store::rows::READ_META`]'s
/// columns, for `schema_sql!`); `$keys` selects the texts of a JSON array of strings bound as
/// `$2`.
macro_rules! shared_sql {
    ($conn:ty, $ids_filter:literal, $lock:literal, $read_meta:expr, $keys:literal) => {
        use crate::crypto::{Purpose, SecretKey};
        use crate::error::SyncError;
        use crate::model::*;
        use crate::store::rows::*;
        use crate::store::{Audit, BootRecord, Counts, Mutation, WriteReport};

        crate::store::access::access_sql!($conn);
        crate::store::admin::admin_sql!($conn, $lock);
        crate::store::unclaimed::unclaimed_sql!($conn);
        crate::store::fleet::fleet_sql!($conn);
        crate::store::bulk::bulk_sql!($conn, $ids_filter, $lock);
        crate::store::bulk::directory::bulk_directory_sql!($conn, $keys);
        crate::store::schema_sql::schema_sql!($conn, $read_meta);
        crate::store::history_sql::history_sql!($conn);

        /// Current rows of `entity` among `ids`; an id with no row was deleted.
        pub(super) async fn reload(conn: &mut $conn, entity: Entity, ids: &[Id]) -> Result<Vec<Row>, SyncError> {
            let ids = serde_json::to_string(ids).expect("ids serialize");
            let sql = format!(
                "SELECT {} FROM {} WHERE {}",
                crate::store::rows::columns(entity),
                entity.table(),
                $ids_filter
            );
            let found = sqlx::query(&sql).bind(ids).fetch_all(&mut *conn).await?;
            let mut interner = crate::intern::Interner::default();
            found
                .iter()
                .map(|r| crate::store::rows::decode(entity, r, &mut interner))
                .collect()
        }

        /// Groups a change-log page by entity and reloads each group.
        pub(super) async fn reload_changes(
            conn: &mut $conn,
            entries: &[(String, Id)],
        ) -> Result<Vec<crate::store::RowChange>, SyncError> {
            use std::collections::{BTreeMap, BTreeSet, HashMap};
            let mut wanted: BTreeMap<Entity, BTreeSet<Id>> = BTreeMap::new();
            for (table, id) in entries {
                let entity = Entity::from_table(table)
                    .ok_or_else(|| SyncError::Invalid(format!("change_log names unknown table {table:?}")))?;
                wanted.entry(entity).or_default().insert(*id);
            }
            let mut out = Vec::new();
            for (entity, ids) in wanted {
                let ids: Vec<Id> = ids.into_iter().collect();
                for chunk in ids.chunks(10_000) {
                    let mut found: HashMap<Id, Row> =
                        reload(conn, entity, chunk).await?.into_iter().map(|r| (r.id(), r)).collect();
                    for id in chunk {
                        out.push((entity, *id, found.remove(id)));
                    }
                }
            }
            Ok(out)
        }

        async fn tenant_id(conn: &mut $conn, slug: &str) -> Result<Id, SyncError> {
            sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1")
                .bind(slug)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| SyncError::Invalid(crate::store::unknown_tenant(slug)))
        }

        /// Every tenant's id by slug: a bulk run resolves its tenants from
        /// this small table once, not with a query per row.
        async fn tenant_ids_by_slug(conn: &mut $conn) -> Result<std::collections::HashMap<String, Id>, SyncError> {
            Ok(sqlx::query_as::<_, (String, Id)>("SELECT slug, id FROM tenants")
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect())
        }

        fn count(c: &mut Counts, existed: bool, rows_affected: u64) {
            match (existed, rows_affected) {
                (false, _) => c.inserted += 1,
                (true, 0) => c.unchanged += 1,
                (true, _) => c.updated += 1,
            }
        }

        async fn apply_one(
            conn: &mut $conn,
            key: &SecretKey,
            mutation: &Mutation,
            now: Millis,
            report: &mut WriteReport,
        ) -> Result<(), SyncError> {
            match mutation {
                Mutation::UpsertTenant(t) | Mutation::CreateTenant(t) => {
                    let existing: Option<Id> = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1")
                        .bind(&t.slug)
                        .fetch_optional(&mut *conn)
                        .await?;
                    mutation.refused_if(existing.is_some())?;
                    let affected = match existing {
                        None => sqlx::query(
                            "INSERT INTO tenants (slug, name, default_region, settings, updated_at) \
                             VALUES ($1, $2, $3, $4, $5)",
                        ),
                        Some(_) => sqlx::query(
                            "UPDATE tenants SET name = $2, default_region = $3, settings = $4, updated_at = $5 \
                             WHERE slug = $1 AND (name IS DISTINCT FROM $2 OR default_region IS DISTINCT FROM $3 \
                             OR settings IS DISTINCT FROM $4)",
                        ),
                    }
                    .bind(&t.slug)
                    .bind(&t.name)
                    .bind(&t.default_region)
                    .bind(&t.settings)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    count(&mut report.tenants, existing.is_some(), affected);
                }
                Mutation::UpsertPhones(batch) => {
                    // `apply_all` takes batches itself (in bulk, or one by
                    // one naming the phone); this is the same one by one,
                    // which cannot leave a field as stored.
                    if batch.keeps_any() {
                        return Err(SyncError::Invalid(crate::store::bulk::KEPT_NEEDS_BULK.into()));
                    }
                    for i in 0..batch.len() {
                        Box::pin(apply_one(conn, key, &Mutation::UpsertPhone(batch.to_input(i)), now, report)).await?;
                    }
                }
                Mutation::UpsertPhone(p) | Mutation::CreatePhone(p) => {
                    // A batch's phones come here one by one, unchecked by
                    // `apply_all`.
                    if let Some(field) = p.nul_field() {
                        return Err(SyncError::Invalid(crate::store::nul::reason(&field)));
                    }
                    let tenant = tenant_id(conn, &p.tenant).await?;
                    let mac = p.mac.to_string();
                    let http_password = p
                        .http_password
                        .as_deref()
                        .map(|pw| key.seal(Purpose::DeviceHttpPassword, pw).0.to_string());
                    // Locked (after the tables, `apply`), as a phone-scope
                    // template's write locks its phone: a move deletes the
                    // phone's templates, and that delete would not see a
                    // template whose write is still open, which would then
                    // commit onto the phone under its new tenant. Whether
                    // this is a move is known only from the locked row.
                    let existing: Option<(Id, Id)> =
                        sqlx::query_as(concat!("SELECT id, tenant_id FROM phones WHERE mac = $1", $lock))
                            .bind(&mac)
                            .fetch_optional(&mut *conn)
                            .await?;
                    mutation.refused_if(existing.is_some())?;
                    if let Some((_, owner)) = existing.filter(|(_, owner)| *owner != tenant) {
                        // Phone-scope templates belong to the phone's tenant:
                        // they do not move with it.
                        delete_phone_templates(conn, &mac, report).await?;
                        *report.moved_out.entry(owner).or_default() += 1;
                    }
                    let existing = existing.map(|(id, _)| id);
                    let (phone_id, affected) = match existing {
                        None => {
                            let id: Id = sqlx::query_scalar(
                                "INSERT INTO phones (mac, tenant_id, family, model, label, variables, http_user, \
                                 http_password, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                            )
                            .bind(&mac)
                            .bind(tenant)
                            .bind(p.family.as_str())
                            .bind(&p.model)
                            .bind(&p.label)
                            .bind(&p.variables)
                            .bind(&p.http_user)
                            .bind(&http_password)
                            .bind(now)
                            .fetch_one(&mut *conn)
                            .await?;
                            (id, 1)
                        }
                        Some(id) => {
                            let affected = sqlx::query(
                                "UPDATE phones SET tenant_id = $2, family = $3, model = $4, label = $5, \
                                 variables = $6, http_user = $7, http_password = $8, updated_at = $9 \
                                 WHERE id = $1 AND (tenant_id IS DISTINCT FROM $2 OR family IS DISTINCT FROM $3 \
                                 OR model IS DISTINCT FROM $4 OR label IS DISTINCT FROM $5 \
                                 OR variables IS DISTINCT FROM $6 OR http_user IS DISTINCT FROM $7 \
                                 OR http_password IS DISTINCT FROM $8)",
                            )
                            .bind(id)
                            .bind(tenant)
                            .bind(p.family.as_str())
                            .bind(&p.model)
                            .bind(&p.label)
                            .bind(&p.variables)
                            .bind(&p.http_user)
                            .bind(&http_password)
                            .bind(now)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected();
                            (id, affected)
                        }
                    };
                    count(&mut report.phones, existing.is_some(), affected);
                    for (index, line) in p.lines.iter().enumerate() {
                        // Two statements a line: a phone of many lines is
                        // past the 64 between yields on its own.
                        if index > 0 && index % 16 == 0 {
                            tokio::task::yield_now().await;
                        }
                        let position = index as i32 + 1;
                        let password = line
                            .password
                            .as_deref()
                            .map(|pw| key.seal(Purpose::LinePassword, pw).0.to_string());
                        let existing: Option<Id> =
                            sqlx::query_scalar("SELECT id FROM lines WHERE phone_id = $1 AND position = $2")
                                .bind(phone_id)
                                .bind(position)
                                .fetch_optional(&mut *conn)
                                .await?;
                        let affected = match existing {
                            None => sqlx::query(
                                "INSERT INTO lines (phone_id, position, extension, display_name, auth_user, \
                                 password, registrar, proxy, settings, updated_at) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                            ),
                            Some(_) => sqlx::query(
                                "UPDATE lines SET extension = $3, display_name = $4, auth_user = $5, \
                                 password = $6, registrar = $7, proxy = $8, settings = $9, updated_at = $10 \
                                 WHERE phone_id = $1 AND position = $2 AND (extension IS DISTINCT FROM $3 \
                                 OR display_name IS DISTINCT FROM $4 OR auth_user IS DISTINCT FROM $5 \
                                 OR password IS DISTINCT FROM $6 OR registrar IS DISTINCT FROM $7 \
                                 OR proxy IS DISTINCT FROM $8 OR settings IS DISTINCT FROM $9)",
                            ),
                        }
                        .bind(phone_id)
                        .bind(position)
                        .bind(&line.extension)
                        .bind(&line.display_name)
                        .bind(&line.auth_user)
                        .bind(&password)
                        .bind(&line.registrar)
                        .bind(&line.proxy)
                        .bind(&line.settings)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                        count(&mut report.lines, existing.is_some(), affected);
                    }
                    let removed = sqlx::query("DELETE FROM lines WHERE phone_id = $1 AND position > $2")
                        .bind(phone_id)
                        .bind(p.lines.len() as i32)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    report.lines.deleted += removed;
                }
                Mutation::UpsertDirectoryEntry(d) | Mutation::CreateDirectoryEntry(d) => {
                    let tenant = tenant_id(conn, &d.tenant).await?;
                    let numbers = numbers_to_json(&d.numbers);
                    let existing: Option<Id> = sqlx::query_scalar(
                        "SELECT id FROM directory_entries WHERE tenant_id = $1 AND external_id = $2",
                    )
                    .bind(tenant)
                    .bind(&d.external_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                    mutation.refused_if(existing.is_some())?;
                    let affected = match existing {
                        None => sqlx::query(
                            "INSERT INTO directory_entries (tenant_id, external_id, name, company, numbers, \
                             updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
                        ),
                        Some(_) => sqlx::query(
                            "UPDATE directory_entries SET name = $3, company = $4, numbers = $5, updated_at = $6 \
                             WHERE tenant_id = $1 AND external_id = $2 AND (name IS DISTINCT FROM $3 \
                             OR company IS DISTINCT FROM $4 OR numbers IS DISTINCT FROM $5)",
                        ),
                    }
                    .bind(tenant)
                    .bind(&d.external_id)
                    .bind(&d.name)
                    .bind(&d.company)
                    .bind(&numbers)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    count(&mut report.directory_entries, existing.is_some(), affected);
                }
                Mutation::UpsertTenantTemplate { tenant, template } => {
                    let id = tenant_id(conn, tenant).await?;
                    let scope_key = match template.scope {
                        TemplateScope::Tenant => id.to_string(),
                        TemplateScope::Phone => {
                            // Locked as the phone-scope write below locks it:
                            // a move commits before this check or waits for
                            // it. A phone that moved tenants lost its
                            // templates with the move; its old tenant's must
                            // not come back onto the new tenant's phone.
                            let owner: Option<Id> = sqlx::query_scalar(concat!(
                                "SELECT tenant_id FROM phones WHERE mac = $1",
                                $lock
                            ))
                            .bind(&template.scope_key)
                            .fetch_optional(&mut *conn)
                            .await?;
                            if owner.is_some_and(|owner| owner != id) {
                                return Err(SyncError::Invalid(format!(
                                    "phone {} is not tenant {tenant:?}'s: the template is that \
                                     tenant's and is written only onto its own phone",
                                    template.scope_key
                                )));
                            }
                            // A phone that does not exist is refused below.
                            template.scope_key.clone()
                        }
                        scope => {
                            return Err(SyncError::Invalid(format!(
                                "a {scope}-scope template belongs to no tenant"
                            )))
                        }
                    };
                    let resolved = Mutation::UpsertTemplate(crate::store::TemplateInput {
                        scope_key,
                        ..template.clone()
                    });
                    Box::pin(apply_one(conn, key, &resolved, now, report)).await?;
                }
                Mutation::UpsertTemplate(t) | Mutation::CreateTemplate(t) => {
                    if t.scope == TemplateScope::Phone {
                        // Locked, so the phone cannot be deleted or moved
                        // (which removes its templates) before this commits.
                        let phone: Option<Id> =
                            sqlx::query_scalar(concat!("SELECT id FROM phones WHERE mac = $1", $lock))
                                .bind(&t.scope_key)
                                .fetch_optional(&mut *conn)
                                .await?;
                        if phone.is_none() {
                            return Err(SyncError::Invalid(format!(
                                "phone {} does not exist; a phone-scope template needs its phone",
                                t.scope_key
                            )));
                        }
                    }
                    // Locked: two writers that both read version n would
                    // both write version n + 1, and the second's history
                    // row would collide with the first's.
                    let existing: Option<(Id, i64, String)> = sqlx::query_as(concat!(
                        "SELECT id, version, body FROM templates \
                         WHERE scope = $1 AND family = $2 AND scope_key = $3 AND file_pattern = $4",
                        $lock
                    ))
                    .bind(t.scope.as_str())
                    .bind(t.family.as_str())
                    .bind(&t.scope_key)
                    .bind(&t.file_pattern)
                    .fetch_optional(&mut *conn)
                    .await?;
                    mutation.refused_if(existing.is_some())?;
                    let (id, version) = match existing {
                        Some((_, _, body)) if body == t.body => {
                            report.templates.unchanged += 1;
                            return Ok(());
                        }
                        Some((id, version, _)) => {
                            sqlx::query(
                                "UPDATE templates SET body = $2, version = $3, updated_by = $4, updated_at = $5 \
                                 WHERE id = $1",
                            )
                            .bind(id)
                            .bind(&t.body)
                            .bind(version + 1)
                            .bind(&t.updated_by)
                            .bind(now)
                            .execute(&mut *conn)
                            .await?;
                            report.templates.updated += 1;
                            (id, version + 1)
                        }
                        None => {
                            let id: Id = sqlx::query_scalar(
                                "INSERT INTO templates (scope, family, scope_key, file_pattern, body, version, \
                                 updated_by, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $7) RETURNING id",
                            )
                            .bind(t.scope.as_str())
                            .bind(t.family.as_str())
                            .bind(&t.scope_key)
                            .bind(&t.file_pattern)
                            .bind(&t.body)
                            .bind(&t.updated_by)
                            .bind(now)
                            .fetch_one(&mut *conn)
                            .await?;
                            report.templates.inserted += 1;
                            (id, 1)
                        }
                    };
                    sqlx::query(
                        "INSERT INTO template_versions (template_id, version, body, updated_by, updated_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(id)
                    .bind(version)
                    .bind(&t.body)
                    .bind(&t.updated_by)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                    if let Some(keep) = t.keep_versions {
                        // The live version plus `keep` earlier ones. A
                        // `keep` past i64 (a quota meaning "no limit") is
                        // every version, not a negative count that keeps
                        // none.
                        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
                        sqlx::query("DELETE FROM template_versions WHERE template_id = $1 AND version < $2")
                            .bind(id)
                            .bind(version.saturating_sub(keep))
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                Mutation::DeleteTenant { slug } | Mutation::DeleteEmptyTenant { slug } => {
                    // Its phones locked first, as a phone-scope template's
                    // write locks its phone: the delete below would not see
                    // a template whose write is still open, and it would
                    // wait, keyed by MAC, for the MAC's next owner. Then the
                    // tenant's row: a write holding one of its phones and
                    // adding another (a foreign key check of the tenant)
                    // deadlocked with a delete holding the row first. (One
                    // adding a phone, then updating another, still can: no
                    // order serves both without every phone write taking
                    // its tenants' rows first.)
                    if !$lock.is_empty() {
                        sqlx::query(concat!(
                            "SELECT id FROM phones WHERE tenant_id = (SELECT id FROM tenants WHERE slug = $1)",
                            $lock
                        ))
                        .bind(slug)
                        .execute(&mut *conn)
                        .await?;
                    }
                    if matches!(mutation, Mutation::DeleteEmptyTenant { .. }) {
                        expect_empty_tenant(conn, slug).await?;
                    }
                    // Its templates go with it (its phones' and its own), so
                    // none waits for a later owner of a MAC.
                    report.templates.deleted += sqlx::query(
                        "DELETE FROM templates WHERE \
                         (scope = 'phone' AND scope_key IN (SELECT mac FROM phones WHERE tenant_id = \
                             (SELECT id FROM tenants WHERE slug = $1))) \
                         OR (scope = 'tenant' AND scope_key = CAST((SELECT id FROM tenants WHERE slug = $1) AS TEXT))",
                    )
                    .bind(slug)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    // And its unclaimed-devices list (unreadable once its
                    // id is gone; what a batch writes for it meanwhile is
                    // swept out with the writer's next sweep). Locked first
                    // in the order the batch writer locks them, by MAC: a
                    // delete in its plan's order could deadlock with a
                    // batch of a flood of the tenant's forged MACs.
                    let listed = concat!(
                        "SELECT mac FROM unclaimed_devices WHERE tenant_id = \
                         (SELECT id FROM tenants WHERE slug = $1) ORDER BY mac",
                        $lock
                    );
                    let _locked: Vec<String> = sqlx::query_scalar(listed)
                        .bind(slug)
                        .fetch_all(&mut *conn)
                        .await?;
                    sqlx::query(
                        "DELETE FROM unclaimed_devices WHERE tenant_id = \
                         (SELECT id FROM tenants WHERE slug = $1)",
                    )
                    .bind(slug)
                    .execute(&mut *conn)
                    .await?;
                    report.tenants.deleted += sqlx::query("DELETE FROM tenants WHERE slug = $1")
                        .bind(slug)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                }
                Mutation::DeletePhone { mac } => {
                    let deleted = sqlx::query("DELETE FROM phones WHERE mac = $1")
                        .bind(mac.to_string())
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    report.phones.deleted += deleted;
                    if deleted > 0 {
                        delete_phone_templates(conn, &mac.to_string(), report).await?;
                    }
                }
                Mutation::ReplacePhoneMac { from, to } => replace_phone_mac(conn, mutation, from, to, now, report).await?,
                Mutation::UpsertDirectorySource(source) | Mutation::CreateDirectorySource(source) => {
                    upsert_source(conn, key, mutation, source, now, report).await?
                }
                Mutation::DeleteDirectorySource { tenant, name } => delete_source(conn, tenant, name, report).await?,
                Mutation::CreateApiToken(token) => create_token(conn, token, now, report).await?,
                Mutation::RevokeApiToken { id } => revoke_token(conn, *id, now, report).await?,
                Mutation::DeleteTemplate { id } => delete_template(conn, *id, report).await?,
                Mutation::Expect { target, etag } => expect(conn, target, etag).await?,
                // Its share is of what the tenant had when the write began,
                // which only `apply_all` knows.
                Mutation::ReplaceDirectory { .. } => {
                    return Err(SyncError::Invalid("a directory replacement is applied only as part of a whole write".into()))
                }
                Mutation::DeleteDirectoryEntry { tenant, external_id } => {
                    let tenant = tenant_id(conn, tenant).await?;
                    report.directory_entries.deleted +=
                        sqlx::query("DELETE FROM directory_entries WHERE tenant_id = $1 AND external_id = $2")
                            .bind(tenant)
                            .bind(external_id)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected();
                }
            }
            Ok(())
        }

        /// The run of `UpsertPhone`s `mutations` starts with, when it is long
        /// enough to write in bulk and names each MAC once.
        fn phone_run(mutations: &[Mutation]) -> Option<Vec<&crate::store::PhoneInput>> {
            let run: Vec<&crate::store::PhoneInput> = mutations
                .iter()
                .map_while(|m| match m {
                    Mutation::UpsertPhone(p) => Some(p),
                    _ => None,
                })
                .collect();
            if run.len() < crate::store::bulk::BULK_MIN_PHONES {
                return None;
            }
            // foldhash: SipHash over a million MACs showed in the re-import's profile.
            let mut macs: foldhash::HashSet<Mac> =
                foldhash::HashSet::with_capacity_and_hasher(run.len(), Default::default());
            run.iter().all(|p| macs.insert(p.mac)).then_some(run)
        }

        /// Whether `mutation` writes phone rows one at a time (a phone, or a
        /// tenant's delete with its phones): such a write locks a phone's
        /// row (its own lock, or an `Expect` before it) and then needs the
        /// tables. A template's write, which locks its phone and never
        /// waits for the tables, is not held back by an import; an import's
        /// runs lock the tables themselves, more strongly.
        fn writes_phones(mutation: &Mutation) -> bool {
            matches!(
                mutation,
                Mutation::UpsertPhone(_)
                    | Mutation::CreatePhone(_)
                    | Mutation::DeletePhone { .. }
                    | Mutation::ReplacePhoneMac { .. }
                    | Mutation::DeleteTenant { .. }
                    | Mutation::DeleteEmptyTenant { .. }
            )
        }

        /// The tables' own lock for writing, taken at the start of a write
        /// that will lock a phone's row: one that held a row lock and then
        /// waited for the table behind an import's `SHARE ROW EXCLUSIVE`
        /// deadlocked with it once the import reached that row. (PostgreSQL
        /// only: SQLite's writers take turns.)
        async fn lock_phones_for_writing(conn: &mut $conn) -> Result<(), SyncError> {
            sqlx::query("LOCK TABLE phones, lines IN ROW EXCLUSIVE MODE")
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// A refusal of mutation `index` (of phone `item` of a batch), when
        /// the data is at fault rather than the database.
        fn rejected(e: SyncError, index: usize, item: Option<usize>) -> SyncError {
            match e {
                SyncError::Invalid(reason) => SyncError::Rejected { index, item, reason },
                // Constraint violations are the data's fault, not the database's.
                SyncError::Database(sqlx::Error::Database(db)) if db.constraint().is_some() || db.code().is_some_and(|c| c.starts_with("23")) => {
                    tracing::debug!(error = %db, "a write refused by a constraint");
                    SyncError::Rejected { index, item, reason: crate::store::constraint_reason(&*db).into() }
                }
                // PostgreSQL's refusal of U+0000 in text (character not in
                // repertoire), for what is not checked before the write.
                SyncError::Database(sqlx::Error::Database(db)) if db.code().is_some_and(|c| c == "22021") => {
                    SyncError::Rejected { index, item, reason: crate::store::nul::reason("a text field") }
                }
                other => other,
            }
        }

        /// Runs inside the caller's transaction. Progress counts rows: a
        /// batch of phones counts each phone.
        pub(super) async fn apply_all(
            conn: &mut $conn,
            key: &SecretKey,
            second: &super::SecondReader,
            mutations: &[Mutation],
            audit: &Audit,
            progress: Option<crate::store::Progress>,
            ending: crate::store::Ending,
        ) -> Result<WriteReport, SyncError> {
            // A dry run never takes the quiet change log's exclusive locks
            // nor drops and rebuilds keys for a write it rolls back: every
            // tenant's reads and every node's reload waited on them.
            let quiet_allowed = ending == crate::store::Ending::Commit;
            // Before the first statement, so that both backends refuse the
            // same text the same way (store/nul.rs).
            let nul = mutations.iter().enumerate().find_map(|(index, m)| Some((index, m.nul_field()?)));
            if let Some((index, field)) = nul {
                return Err(SyncError::Rejected { index, item: None, reason: crate::store::nul::reason(&field) });
            }
            if let Some(field) = audit.nul_field() {
                return Err(SyncError::Invalid(crate::store::nul::reason(&field)));
            }
            let now = now_millis();
            // Not before an import's runs: two of them holding this lock
            // would each wait for the other's to take their stronger one.
            let bulk = mutations.iter().any(|m| matches!(m, Mutation::UpsertPhones(_)))
                || mutations.iter().filter(|m| matches!(m, Mutation::UpsertPhone(_))).count()
                    >= crate::store::bulk::BULK_MIN_PHONES;
            if !$lock.is_empty() && !bulk && mutations.iter().any(writes_phones) {
                lock_phones_for_writing(conn).await?;
            }
            // What each replaced directory held before this write's first
            // statement: a replacement's share is of that.
            let mut had_before: std::collections::HashMap<&str, crate::store::bulk::directory::Held> =
                std::collections::HashMap::new();
            for mutation in mutations {
                if let Mutation::ReplaceDirectory { tenant, .. } = mutation {
                    if !had_before.contains_key(tenant.as_str()) {
                        let size = directory_size(conn, tenant).await?;
                        had_before.insert(tenant, size);
                    }
                }
            }
            let mut report = WriteReport::default();
            let mut bulk_until = 0;
            let mut done = 0u64;
            for (index, mutation) in mutations.iter().enumerate() {
                if index < bulk_until {
                    continue;
                }
                if let Mutation::ReplaceDirectory { tenant, keep, most_deleted_percent } = mutation {
                    let had = had_before.get(tenant.as_str()).copied().unwrap_or_default();
                    replace_directory(conn, tenant, keep, *most_deleted_percent, had, &mut report)
                        .await
                        .map_err(|e| rejected(e, index, None))?;
                    done += 1;
                    continue;
                }
                if let Mutation::UpsertPhones(batch) = mutation {
                    // Only the bulk path leaves a field as stored, so a batch
                    // that keeps any goes there however short it is.
                    let bulk = batch.len() >= crate::store::bulk::BULK_MIN_PHONES || batch.keeps_any();
                    if bulk && batch.macs_distinct() {
                        let reject = |item: usize, reason: String| SyncError::Rejected { index, item: Some(item), reason };
                        bulk_phones(conn, key, second, batch, &reject, done, now, &mut report, progress.as_ref(), quiet_allowed).await?;
                    } else {
                        if batch.keeps_any() {
                            return Err(SyncError::Invalid(crate::store::bulk::KEPT_NEEDS_BULK.into()));
                        }
                        // In MAC order, not the file's: two imports of the
                        // same phones in different orders each locked a row
                        // the other then waited for (a deadlock on
                        // PostgreSQL). Stable, so a MAC named twice ends as
                        // the file's later one says; a refusal still names
                        // the phone's place in the file.
                        let mut order: Vec<usize> = (0..batch.len()).collect();
                        order.sort_by_key(|&item| batch.mac(item));
                        for (written, item) in order.into_iter().enumerate() {
                            let phone = Mutation::UpsertPhone(batch.to_input(item));
                            apply_one(conn, key, &phone, now, &mut report)
                                .await
                                .map_err(|e| rejected(e, index, Some(item)))?;
                            // A phone is three statements and two a line:
                            // sixteen of them are about the 64 between yields.
                            if written % 16 == 15 {
                                crate::store::progress_point(progress.as_ref(), done + written as u64 + 1).await;
                            }
                        }
                    }
                    done += batch.len() as u64;
                    crate::store::progress_point(progress.as_ref(), done).await;
                    continue;
                }
                if let Some(run) = crate::store::bulk::directory::directory_run(&mutations[index..]) {
                    let reject = |item: usize, reason: String| SyncError::Rejected { index: index + item, item: None, reason };
                    bulk_directory(conn, &run, &reject, now, &mut report)
                        .await
                        .map_err(|e| rejected(e, index, None))?;
                    bulk_until = index + run.len();
                    done += run.len() as u64;
                    crate::store::progress_point(progress.as_ref(), done).await;
                    continue;
                }
                if let Some(run) = phone_run(&mutations[index..]) {
                    // The same compact form an import's phones come in (a
                    // copy, for the API's runs of a few thousand at most).
                    let batch: crate::store::PhoneBatch = run.iter().copied().collect();
                    let reject = |item: usize, reason: String| SyncError::Rejected { index: index + item, item: None, reason };
                    bulk_phones(conn, key, second, &batch, &reject, done, now, &mut report, progress.as_ref(), quiet_allowed).await?;
                    bulk_until = index + run.len();
                    done += run.len() as u64;
                    continue;
                }
                apply_one(conn, key, mutation, now, &mut report)
                    .await
                    .map_err(|e| rejected(crate::store::mutation_creates::name_taken(e, mutation), index, None))?;
                done += 1;
                if index % 16 == 15 || index + 1 == mutations.len() {
                    crate::store::progress_point(progress.as_ref(), done).await;
                }
            }
            let summary = serde_json::json!({ "detail": audit.detail, "result": report });
            // A token's revocation shows in its tenant's audit view, however
            // it was made: the CLI knows only the token's id, and reading
            // every table to find its tenant delayed an urgent revoke
            // behind a large import.
            let tenant = match (&audit.tenant, mutations) {
                (None, [Mutation::RevokeApiToken { id }]) => {
                    sqlx::query_scalar::<_, String>(
                        "SELECT t.slug FROM api_tokens a JOIN tenants t ON t.id = a.tenant_id WHERE a.id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
                }
                _ => audit.tenant.clone(),
            };
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, entity, entity_key, summary, tenant, tenant_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT id FROM tenants WHERE slug = $7))",
            )
            .bind(now)
            .bind(&audit.actor)
            .bind(&audit.action)
            .bind(&audit.entity)
            .bind(&audit.entity_key)
            .bind(summary.to_string())
            .bind(&tenant)
            .execute(&mut *conn)
            .await?;
            // The tenant a phone leaves would otherwise see nothing in its
            // own audit view (the write's row is the new tenant's, or the
            // platform's for an import): a row of its own, naming neither
            // the new tenant nor what the phone was written with, nor an
            // import's file names, which are the writer's words.
            let single = audit.entity == "phone";
            for (&from, &phones) in &report.moved_out {
                sqlx::query(
                    "INSERT INTO audit_log (at, actor, action, entity, entity_key, summary, tenant, tenant_id) \
                     VALUES ($1, $2, 'move_out', $3, $4, $5, (SELECT slug FROM tenants WHERE id = $6), (SELECT id FROM tenants WHERE id = $6))",
                )
                .bind(now)
                .bind(&audit.actor)
                .bind(if single { "phone" } else { "phones" })
                .bind(if single { audit.entity_key.as_str() } else { "" })
                .bind(serde_json::json!({ "detail": { "to_another_tenant": true, "phones": phones } }).to_string())
                .bind(from)
                .execute(&mut *conn)
                .await?;
            }
            Ok(report)
        }

        /// Refuses unless tenant `slug` holds no phone and no directory
        /// entry. Its row is locked first: a phone or entry written for it
        /// meanwhile checks its tenant (a foreign key) and waits for this
        /// transaction, so none slips in between the count and the delete.
        async fn expect_empty_tenant(conn: &mut $conn, slug: &str) -> Result<(), SyncError> {
            let tenant: Option<Id> = sqlx::query_scalar(concat!("SELECT id FROM tenants WHERE slug = $1", $lock))
                .bind(slug)
                .fetch_optional(&mut *conn)
                .await?;
            let tenant = tenant.ok_or_else(|| SyncError::NotFound(format!("tenant {slug}")))?;
            let (phones, entries): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM phones WHERE tenant_id = $1), \
                        (SELECT COUNT(*) FROM directory_entries WHERE tenant_id = $1)",
            )
            .bind(tenant)
            .fetch_one(&mut *conn)
            .await?;
            if phones > 0 || entries > 0 {
                return Err(SyncError::NotEmpty(format!(
                    "tenant {slug} still has {phones} phones and {entries} directory entries"
                )));
            }
            Ok(())
        }

        /// A hardware swap: the row keeps its id, so its lines (and their
        /// sealed passwords) stay with it, and the change log carries one
        /// phone update that every mirror re-indexes by the new MAC.
        async fn replace_phone_mac(
            conn: &mut $conn,
            mutation: &Mutation,
            from: &Mac,
            to: &Mac,
            now: Millis,
            report: &mut WriteReport,
        ) -> Result<(), SyncError> {
            // Locked, as a phone-scope template's write locks its phone: a
            // template written for the old MAC while this is open would
            // otherwise be left behind on a MAC no phone has.
            let phone: Option<Id> = sqlx::query_scalar(concat!("SELECT id FROM phones WHERE mac = $1", $lock))
                .bind(from.to_string())
                .fetch_optional(&mut *conn)
                .await?;
            let Some(phone) = phone else {
                return Err(SyncError::NotFound(format!("phone {from}")));
            };
            let taken: Option<Id> = sqlx::query_scalar("SELECT id FROM phones WHERE mac = $1")
                .bind(to.to_string())
                .fetch_optional(&mut *conn)
                .await?;
            mutation.refused_if(taken.is_some())?;
            report.phones.updated += sqlx::query("UPDATE phones SET mac = $2, updated_at = $3 WHERE id = $1")
                .bind(phone)
                .bind(to.to_string())
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            // Its own templates follow it: they are the desk's settings, not
            // the hardware's. No template can exist for `to` already, as a
            // phone-scope template needs its phone.
            report.templates.updated += sqlx::query(
                "UPDATE templates SET scope_key = $2, updated_at = $3 WHERE scope = 'phone' AND scope_key = $1",
            )
            .bind(from.to_string())
            .bind(to.to_string())
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(())
        }

        /// A phone's phone-scope templates, when the phone is deleted or
        /// moves to another tenant. Their versions go with them (a foreign
        /// key); the audit trail keeps who changed what.
        async fn delete_phone_templates(conn: &mut $conn, mac: &str, report: &mut WriteReport) -> Result<(), SyncError> {
            report.templates.deleted += sqlx::query("DELETE FROM templates WHERE scope = 'phone' AND scope_key = $1")
                .bind(mac)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(())
        }
    };
}

pub(crate) use shared_sql;

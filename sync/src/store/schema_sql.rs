//! SQL for the database's own state: the meta row, the change feed's
//! restart, the migrations applied, and the checks of schema and key a node
//! makes before it trusts a database. Expanded inside `shared_sql!`, so it
//! shares its connection type; `$read_meta` reads the meta row.

macro_rules! schema_sql {
    ($conn:ty, $read_meta:expr) => {
        pub(super) async fn read_meta(conn: &mut $conn) -> Result<Meta, SyncError> {
            let (epoch, txid, seq, database_id): (i64, i64, i64, String) = sqlx::query_as($read_meta)
            .fetch_one(&mut *conn)
            .await?;
            Ok(Meta {
                epoch,
                pruned_through: Cursor { txid, seq },
                database_id,
                // Not a row: PostgreSQL's reads add it (`postgres/timeline.rs`).
                timeline: None,
            })
        }

        /// `reload-all`: a new epoch, and the change feed started anew.
        /// Every node reloads in full, so the log before this point serves
        /// nobody; and after a restore it is the backup's, with a pruned
        /// point and ids a node's cursor can never pass (PostgreSQL
        /// transaction ids start again in a cluster `pg_restore` fills).
        pub(super) async fn restart_change_feed(conn: &mut $conn) -> Result<i64, SyncError> {
            sqlx::query("DELETE FROM change_log").execute(&mut *conn).await?;
            sqlx::query("UPDATE dialtone_meta SET pruned_txid = 0, pruned_seq = 0 WHERE singleton = 1")
                .execute(&mut *conn)
                .await?;
            bump_epoch(conn).await
        }

        /// A step of random size, not one: after a backup is restored,
        /// its epoch plus one can be the very epoch the nodes loaded after
        /// the backup was taken (an import bumped it meanwhile), and
        /// `reload-all` would reload none of them.
        pub(super) async fn bump_epoch(conn: &mut $conn) -> Result<i64, SyncError> {
            let step: i64 = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=1 << 31);
            Ok(sqlx::query_scalar(
                "UPDATE dialtone_meta SET epoch = epoch + $1 WHERE singleton = 1 RETURNING epoch",
            )
            .bind(step)
            .fetch_one(&mut *conn)
            .await?)
        }

        /// Highest applied migration, or None when the database was never migrated.
        pub(super) async fn applied_migration(conn: &mut $conn) -> Result<Option<i64>, SyncError> {
            newest_migration(conn, "SELECT max(version) FROM _sqlx_migrations WHERE success").await
        }

        /// Highest migration recorded, applied or failed: a newer binary's
        /// failed migration shows this binary is the older one as surely as
        /// an applied one, where sqlx would call it "partially applied" and
        /// advise removing its row.
        async fn recorded_migration(conn: &mut $conn) -> Result<Option<i64>, SyncError> {
            newest_migration(conn, "SELECT max(version) FROM _sqlx_migrations").await
        }

        async fn newest_migration(conn: &mut $conn, query: &'static str) -> Result<Option<i64>, SyncError> {
            match sqlx::query_scalar::<_, Option<i64>>(query)
                .fetch_one(&mut *conn)
                .await
            {
                Ok(v) => Ok(v),
                Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => Ok(None),
                Err(e) => Err(e.into()),
            }
        }

        /// Before a write of a process that has checked nothing yet
        /// (`KeyChecked`): the schema is not a newer binary's and the key is
        /// the database's. Once, then never again.
        pub(super) async fn check_once(
            conn: &mut $conn,
            key: &crate::SecretKey,
            known: i64,
            checked: &crate::store::KeyChecked,
        ) -> Result<(), SyncError> {
            if checked.get() {
                return Ok(());
            }
            refuse_newer(conn, known).await?;
            check_key(conn, key, true).await?;
            checked.set();
            Ok(())
        }

        /// Last before a write that may seal a value commits, its locks held:
        /// the database still takes `key`. `check_once` looks only at a
        /// process's first write, and a node started before a `dialtone
        /// rekey` (or a write queued behind the re-key's locks) would commit
        /// values sealed with the old key after the re-key moved to the new
        /// one. `read`: the backend's [`crate::store::rekey::KEY_CHECK_NOW`]
        /// or its locking form. A database with no check value kept has seen
        /// no re-key.
        pub(super) async fn confirm_key_unchanged(
            conn: &mut $conn,
            key: &crate::SecretKey,
            read: &str,
        ) -> Result<(), SyncError> {
            let stored: Option<String> = sqlx::query_scalar(read).fetch_one(&mut *conn).await?;
            match stored {
                Some(stored) if stored != key.check_value() => Err(crate::store::rekey::key_moved()),
                _ => Ok(()),
            }
        }

        /// A re-key's last writes on either backend (`store/rekey.rs`): the
        /// check value moved to `new_key`, and the run's audit row.
        pub(super) async fn finish_rekey(
            conn: &mut $conn,
            new_key: &SecretKey,
            audit: &Audit,
            report: &crate::store::RekeyReport,
        ) -> Result<(), SyncError> {
            sqlx::query(crate::store::rekey::SET_KEY_CHECK)
                .bind(new_key.check_value())
                .execute(&mut *conn)
                .await?;
            sqlx::query(crate::store::rekey::AUDIT_INSERT)
                .bind(now_millis())
                .bind(&audit.actor)
                .bind(&audit.action)
                .bind(&audit.entity)
                .bind(&audit.entity_key)
                .bind(crate::store::rekey::audit_summary(audit, report))
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        pub(super) async fn refuse_newer(conn: &mut $conn, known: i64) -> Result<(), SyncError> {
            match recorded_migration(conn).await? {
                Some(found) if found > known => Err(SyncError::SchemaTooNew { found, known }),
                _ => Ok(()),
            }
        }

        /// What to report for a migration that `failed`: a newer binary
        /// that migrated while this one waited for its turn leaves sqlx
        /// saying only "migration N was previously applied but is missing
        /// in the resolved migrations"; the operator needs to hear that
        /// this binary is the older one.
        pub(super) async fn newer_schema_or(conn: &mut $conn, known: i64, failed: SyncError) -> SyncError {
            match refuse_newer(conn, known).await {
                Err(newer @ SyncError::SchemaTooNew { .. }) => newer,
                _ => failed,
            }
        }

        pub(super) async fn check_schema(conn: &mut $conn, known: i64) -> Result<(), SyncError> {
            refuse_newer(conn, known).await?;
            match applied_migration(conn).await? {
                Some(v) if v == known => Ok(()),
                _ => Err(SyncError::Invalid(
                    "the database is not migrated to this version; run `dialtone migrate`".into(),
                )),
            }
        }

        /// Refuses a key other than the one the database's secrets are
        /// sealed with, before and after migrating. The first open with a
        /// key that opens one stored secret of each kind (or of a database
        /// holding none) keeps its check value; later opens compare with it.
        /// `record`: keep the value when none is kept yet (the column may
        /// not exist before the migration that adds it).
        pub(super) async fn check_key(conn: &mut $conn, key: &crate::SecretKey, record: bool) -> Result<(), SyncError> {
            let expected = key.check_value();
            let wrong = crate::crypto::not_the_sealing_key;
            let stored = match sqlx::query_scalar::<_, Option<String>>(
                "SELECT key_check FROM dialtone_meta WHERE singleton = 1",
            )
            .fetch_one(&mut *conn)
            .await
            {
                Ok(stored) => stored,
                Err(sqlx::Error::Database(e)) if !record && e.message().contains("key_check") => None,
                Err(e) => return Err(e.into()),
            };
            if let Some(stored) = stored {
                return if stored == expected { Ok(()) } else { Err(wrong()) };
            }
            // A database from before the check value: one sealed value of
            // each kind must open with this key.
            const SEALED: [(&str, crate::Purpose); 3] = [
                (
                    "SELECT password FROM lines WHERE password IS NOT NULL AND password <> '' LIMIT 1",
                    crate::Purpose::LinePassword,
                ),
                (
                    "SELECT http_password FROM phones WHERE http_password IS NOT NULL AND http_password <> '' LIMIT 1",
                    crate::Purpose::DeviceHttpPassword,
                ),
                (
                    "SELECT secret FROM directory_sources WHERE secret IS NOT NULL AND secret <> '' LIMIT 1",
                    crate::Purpose::SourceSecret,
                ),
            ];
            for (query, purpose) in SEALED {
                let sealed: Option<String> = sqlx::query_scalar(query).fetch_optional(&mut *conn).await?;
                if let Some(sealed) = sealed {
                    key.open(purpose, &crate::Sealed(sealed.into())).map_err(|_| wrong())?;
                }
            }
            if !record {
                return Ok(());
            }
            let kept = sqlx::query("UPDATE dialtone_meta SET key_check = $1 WHERE singleton = 1 AND key_check IS NULL")
                .bind(&expected)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if kept == 0 {
                // Another node kept its value first: the same, or refused.
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT key_check FROM dialtone_meta WHERE singleton = 1")
                        .fetch_one(&mut *conn)
                        .await?;
                if stored.as_deref() != Some(expected.as_str()) {
                    return Err(wrong());
                }
            }
            Ok(())
        }
    };
}

pub(crate) use schema_sql;

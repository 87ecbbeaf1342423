//! SQL for the tables that only grow and are pruned by age: provisioning
//! history (written in batches by the history writer, read per phone), the
//! audit log, and API tokens that ended (revoked or expired). Expanded inside `shared_sql!`, so it shares its
//! connection type.

macro_rules! history_sql {
    ($conn:ty) => {
        /// One multi-row INSERT per chunk: each statement is a round trip
        /// (for SQLite, a hop to sqlx's worker thread), and a boot storm
        /// records thousands of fetches a second.
        pub(super) async fn insert_boots(conn: &mut $conn, records: &[BootRecord]) -> Result<(), SyncError> {
            // 11 parameters a row, well under every backend's limit.
            for chunk in records.chunks(200) {
                let mut insert = sqlx::QueryBuilder::<<$conn as sqlx::Connection>::Database>::new(
                    "INSERT INTO provisioning_history (mac, at, remote_ip, user_agent, protocol, file, outcome, \
                     bytes, model, firmware, tenant_id) ",
                );
                insert.push_values(chunk, |mut row, r| {
                    row.push_bind(&r.mac)
                        .push_bind(r.at)
                        .push_bind(&r.remote_ip)
                        .push_bind(&r.user_agent)
                        .push_bind(&r.protocol)
                        .push_bind(&r.file)
                        .push_bind(&r.outcome)
                        .push_bind(r.bytes)
                        .push_bind(&r.model)
                        .push_bind(&r.firmware)
                        .push_bind(r.tenant_id);
                });
                insert.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// A phone's fetches, newest first: those stamped by `trusted`
        /// (see `crate::trusted_until`), then, unless `served_only`, those
        /// stamped after it, as far as `limit` reaches. Ranked by its stamp,
        /// a row from a clock stepped ahead came before every real fetch
        /// until this clock caught up with it, hiding today's fetches; it
        /// is kept, last, as it did happen at some time. Two reads down the
        /// `(mac, at)` index, not one sort of the phone's whole history.
        pub(super) async fn recent_boots(
            conn: &mut $conn,
            mac: &Mac,
            tenant: Option<Id>,
            limit: i64,
            served_only: bool,
            trusted: Millis,
        ) -> Result<Vec<BootRecord>, SyncError> {
            let mut rows = boots_stamped(conn, mac, tenant, limit, served_only, "<=", trusted).await?;
            let missing = limit.saturating_sub(rows.len() as i64);
            if !served_only && missing > 0 {
                rows.extend(boots_stamped(conn, mac, tenant, missing, false, ">", trusted).await?);
            }
            Ok(rows)
        }

        /// A phone's latest fetches whose `at` compares to `stamp` as `cmp`
        /// says, newest first; `served_only`: served ones only
        /// (`Store::served_boots` says why).
        async fn boots_stamped(
            conn: &mut $conn,
            mac: &Mac,
            tenant: Option<Id>,
            limit: i64,
            served_only: bool,
            cmp: &str,
            stamp: Millis,
        ) -> Result<Vec<BootRecord>, SyncError> {
            let mut query = format!(
                "SELECT mac, at, remote_ip, user_agent, protocol, file, outcome, bytes, model, \
                 firmware, tenant_id FROM provisioning_history WHERE mac = $1 AND at {cmp} $3"
            );
            if served_only {
                query.push_str(" AND outcome = 'ok'");
            }
            if tenant.is_some() {
                query.push_str(" AND tenant_id = $4");
            }
            query.push_str(" ORDER BY at DESC, id DESC LIMIT $2");
            let mut select = sqlx::query_as(&query).bind(mac.to_string()).bind(limit).bind(stamp);
            if let Some(tenant) = tenant {
                select = select.bind(tenant);
            }
            Ok(select.fetch_all(&mut *conn).await?)
        }

        pub(super) async fn delete_boots_before(conn: &mut $conn, cutoff: Millis) -> Result<u64, SyncError> {
            Ok(sqlx::query("DELETE FROM provisioning_history WHERE at < $1")
                .bind(cutoff)
                .execute(&mut *conn)
                .await?
                .rows_affected())
        }

        /// Tokens revoked (their last update) or expired before `cutoff`.
        pub(super) async fn delete_tokens_ended_before(conn: &mut $conn, cutoff: Millis) -> Result<u64, SyncError> {
            Ok(sqlx::query(
                "DELETE FROM api_tokens WHERE (revoked AND updated_at < $1) OR expires_at < $1",
            )
            .bind(cutoff)
            .execute(&mut *conn)
            .await?
            .rows_affected())
        }

        pub(super) async fn delete_audit_before(conn: &mut $conn, cutoff: Millis) -> Result<u64, SyncError> {
            Ok(sqlx::query("DELETE FROM audit_log WHERE at < $1")
                .bind(cutoff)
                .execute(&mut *conn)
                .await?
                .rows_affected())
        }
    };
}

pub(crate) use history_sql;

//! Unclaimed devices: phones that asked for their own files with a MAC no
//! tenant has. Written in batches by `crate::unclaimed`, read by admins.

use serde::{Deserialize, Serialize};

use crate::model::{Id, Millis};

/// The tenant id of the operator's list (fetches from outside every
/// tenant's networks, when recorded at all). Real ids start at 1.
pub const UNASSIGNED: Id = 0;

/// One device, or (as written) one batch's worth of fetches by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UnclaimedDevice {
    pub tenant_id: Id,
    /// Twelve lowercase hex digits.
    pub mac: String,
    pub family: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// The last source address it fetched from.
    pub source: String,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub count: i64,
}

/// How often a process sweeps deleted tenants' unclaimed devices out.
const ORPHAN_SWEEP_EVERY_MS: i64 = 60_000;

/// Whether this batch sweeps deleted tenants' lists: the first, and then
/// one a minute. A failed write's sweep is not tried again for a minute;
/// a lingering list is unreadable, only kept a little longer.
pub(crate) fn orphan_sweep_due() -> bool {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = crate::log_limit::monotonic_millis();
    let last = LAST.load(Ordering::Relaxed);
    now.saturating_sub(last) >= ORPHAN_SWEEP_EVERY_MS
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

macro_rules! unclaimed_sql {
    ($conn:ty) => {
        use crate::store::unclaimed::UnclaimedDevice;

        /// Upserts by (tenant, mac); `devices` must hold each key once (a
        /// PostgreSQL upsert may not touch a row twice). Then cuts each
        /// touched tenant's list to `per_tenant`: first those last seen
        /// after `trusted` (see `crate::trusted_until`), then the oldest
        /// `last_seen`. Ranked by their stamps, a thousand rows from a
        /// clock stepped a year ahead outranked every real sighting, and
        /// each write deleted the new phones it had just listed, for that
        /// year.
        pub(super) async fn upsert_unclaimed(
            conn: &mut $conn,
            devices: &[UnclaimedDevice],
            per_tenant: i64,
            trusted: Millis,
        ) -> Result<(), SyncError> {
            for chunk in devices.chunks(200) {
                let mut insert = sqlx::QueryBuilder::<<$conn as sqlx::Connection>::Database>::new(
                    "INSERT INTO unclaimed_devices (tenant_id, mac, family, model, firmware, source, \
                     first_seen, last_seen, count) ",
                );
                insert.push_values(chunk, |mut row, d| {
                    row.push_bind(d.tenant_id)
                        .push_bind(&d.mac)
                        .push_bind(&d.family)
                        .push_bind(&d.model)
                        .push_bind(&d.firmware)
                        .push_bind(&d.source)
                        .push_bind(d.first_seen)
                        .push_bind(d.last_seen)
                        .push_bind(d.count);
                });
                // What the phone said last wins, but silence (a file name
                // without a User-Agent) does not erase what it said before.
                // A `last_seen` past `trusted` gives way to any sighting: kept
                // as the later, it held the device first in line to be cut
                // however often it was seen since.
                insert.push(
                    " ON CONFLICT (tenant_id, mac) DO UPDATE SET \
                     family = COALESCE(excluded.family, unclaimed_devices.family), \
                     model = COALESCE(excluded.model, unclaimed_devices.model), \
                     firmware = COALESCE(excluded.firmware, unclaimed_devices.firmware), \
                     source = excluded.source, \
                     first_seen = CASE WHEN excluded.first_seen < unclaimed_devices.first_seen \
                       THEN excluded.first_seen ELSE unclaimed_devices.first_seen END, \
                     last_seen = CASE WHEN excluded.last_seen > unclaimed_devices.last_seen \
                       OR unclaimed_devices.last_seen > ",
                );
                insert.push_bind(trusted);
                insert.push(
                    " THEN excluded.last_seen ELSE unclaimed_devices.last_seen END, \
                     count = unclaimed_devices.count + excluded.count",
                );
                insert.build().execute(&mut *conn).await?;
            }
            let mut tenants: Vec<Id> = devices.iter().map(|d| d.tenant_id).collect();
            tenants.sort_unstable();
            tenants.dedup();
            // A list holds at most `per_tenant` and one write's devices, so
            // ordering it by an expression sorts that many rows.
            for tenant in tenants {
                let boundary: Option<(bool, Millis, String)> = sqlx::query_as(
                    "SELECT last_seen > $3 AS ahead, last_seen, mac FROM unclaimed_devices \
                     WHERE tenant_id = $1 ORDER BY ahead, last_seen DESC, mac DESC LIMIT 1 OFFSET $2",
                )
                .bind(tenant)
                .bind(per_tenant)
                .bind(trusted)
                .fetch_optional(&mut *conn)
                .await?;
                // The first row cut and every one after it: with a trusted
                // one first, every row stamped ahead too.
                let cut = match boundary {
                    None => continue,
                    Some((false, seen, mac)) => (
                        "last_seen > $4 OR last_seen < $2 OR (last_seen = $2 AND mac <= $3)",
                        seen,
                        mac,
                    ),
                    Some((true, seen, mac)) => (
                        "last_seen > $4 AND (last_seen < $2 OR (last_seen = $2 AND mac <= $3))",
                        seen,
                        mac,
                    ),
                };
                sqlx::query(&format!("DELETE FROM unclaimed_devices WHERE tenant_id = $1 AND ({})", cut.0))
                    .bind(tenant)
                    .bind(cut.1)
                    .bind(cut.2)
                    .bind(trusted)
                    .execute(&mut *conn)
                    .await?;
            }
            // A deleted tenant's list goes with it (ids are never reused,
            // so it was unreadable already; this keeps it from lingering).
            // A scan of the whole table: at most once a minute, not with
            // every batch (one each 200 ms on every node during a flood of
            // forged MACs).
            if $crate::store::unclaimed::orphan_sweep_due() {
                sqlx::query(
                    "DELETE FROM unclaimed_devices WHERE tenant_id <> 0 \
                     AND tenant_id NOT IN (SELECT id FROM tenants)",
                )
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        /// Last seen first, those last seen after `trusted` (see
        /// `crate::trusted_until`) after the rest: the order the cut keeps.
        pub(super) async fn unclaimed_devices(
            conn: &mut $conn,
            tenant: Id,
            limit: i64,
            trusted: Millis,
        ) -> Result<Vec<UnclaimedDevice>, SyncError> {
            Ok(sqlx::query_as(
                "SELECT tenant_id, mac, family, model, firmware, source, first_seen, last_seen, count \
                 FROM unclaimed_devices WHERE tenant_id = $1 \
                 ORDER BY last_seen > $3, last_seen DESC, mac LIMIT $2",
            )
            .bind(tenant)
            .bind(limit)
            .bind(trusted)
            .fetch_all(&mut *conn)
            .await?)
        }

        /// How many devices each tenant (or [`UNASSIGNED`]) lists, `only`
        /// one tenant's or every one's; tenants listing none are absent.
        /// A MAC that has become a phone since it was seen is not counted,
        /// as the lists leave it out.
        pub(super) async fn unclaimed_counts(
            conn: &mut $conn,
            only: Option<Id>,
        ) -> Result<Vec<(Id, i64)>, SyncError> {
            const COUNTED: &str = "SELECT u.tenant_id, count(*) FROM unclaimed_devices u \
                 WHERE NOT EXISTS (SELECT 1 FROM phones p WHERE p.mac = u.mac)";
            let counts = match only {
                Some(tenant) => {
                    sqlx::query_as(&format!("{COUNTED} AND u.tenant_id = $1 GROUP BY u.tenant_id"))
                        .bind(tenant)
                        .fetch_all(&mut *conn)
                        .await?
                }
                None => {
                    sqlx::query_as(&format!("{COUNTED} GROUP BY u.tenant_id ORDER BY u.tenant_id"))
                        .fetch_all(&mut *conn)
                        .await?
                }
            };
            Ok(counts)
        }

        pub(super) async fn delete_unclaimed(conn: &mut $conn, tenant: Id, mac: &Mac) -> Result<bool, SyncError> {
            Ok(sqlx::query("DELETE FROM unclaimed_devices WHERE tenant_id = $1 AND mac = $2")
                .bind(tenant)
                .bind(mac.to_string())
                .execute(&mut *conn)
                .await?
                .rows_affected()
                > 0)
        }
    };
}

pub(crate) use unclaimed_sql;

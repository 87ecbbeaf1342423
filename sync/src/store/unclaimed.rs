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

macro_rules! unclaimed_sql {
    ($conn:ty) => {
        use crate::store::unclaimed::UnclaimedDevice;

        /// Upserts by (tenant, mac); `devices` must hold each key once (a
        /// PostgreSQL upsert may not touch a row twice). Then cuts each
        /// touched tenant's list to `per_tenant`, oldest `last_seen` first.
        pub(super) async fn upsert_unclaimed(
            conn: &mut $conn,
            devices: &[UnclaimedDevice],
            per_tenant: i64,
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
                insert.push(
                    " ON CONFLICT (tenant_id, mac) DO UPDATE SET \
                     family = COALESCE(excluded.family, unclaimed_devices.family), \
                     model = COALESCE(excluded.model, unclaimed_devices.model), \
                     firmware = COALESCE(excluded.firmware, unclaimed_devices.firmware), \
                     source = excluded.source, \
                     first_seen = CASE WHEN excluded.first_seen < unclaimed_devices.first_seen \
                       THEN excluded.first_seen ELSE unclaimed_devices.first_seen END, \
                     last_seen = CASE WHEN excluded.last_seen > unclaimed_devices.last_seen \
                       THEN excluded.last_seen ELSE unclaimed_devices.last_seen END, \
                     count = unclaimed_devices.count + excluded.count",
                );
                insert.build().execute(&mut *conn).await?;
            }
            let mut tenants: Vec<Id> = devices.iter().map(|d| d.tenant_id).collect();
            tenants.sort_unstable();
            tenants.dedup();
            for tenant in tenants {
                let boundary: Option<(Millis, String)> = sqlx::query_as(
                    "SELECT last_seen, mac FROM unclaimed_devices WHERE tenant_id = $1 \
                     ORDER BY last_seen DESC, mac DESC LIMIT 1 OFFSET $2",
                )
                .bind(tenant)
                .bind(per_tenant)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some((seen, mac)) = boundary {
                    sqlx::query(
                        "DELETE FROM unclaimed_devices WHERE tenant_id = $1 \
                         AND (last_seen < $2 OR (last_seen = $2 AND mac <= $3))",
                    )
                    .bind(tenant)
                    .bind(seen)
                    .bind(mac)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            // A deleted tenant's list goes with it (ids are never reused,
            // so it was unreadable already; this keeps it from lingering).
            sqlx::query(
                "DELETE FROM unclaimed_devices WHERE tenant_id <> 0 \
                 AND tenant_id NOT IN (SELECT id FROM tenants)",
            )
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        pub(super) async fn unclaimed_devices(
            conn: &mut $conn,
            tenant: Id,
            limit: i64,
        ) -> Result<Vec<UnclaimedDevice>, SyncError> {
            Ok(sqlx::query_as(
                "SELECT tenant_id, mac, family, model, firmware, source, first_seen, last_seen, count \
                 FROM unclaimed_devices WHERE tenant_id = $1 ORDER BY last_seen DESC, mac LIMIT $2",
            )
            .bind(tenant)
            .bind(limit)
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

//! SQL behind the admin fleet view: each phone's latest fetch and a
//! tenant's fetches per hour, read through the `(mac, at)` index a chunk of
//! MACs at a time. Provisioning history is the largest table; scanning it by
//! time alone would make a small tenant pay for every other tenant's boots.
//! Expanded inside `shared_sql!`, so it shares its connection type.

use serde::Serialize;

use crate::model::Millis;
use crate::store::BootRecord;

/// MACs per statement: 500 bound parameters fit every backend's limit, and
/// each statement stays a short read.
pub(crate) const FLEET_CHUNK: usize = 500;

/// What the fleet view needs from provisioning history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetHistory {
    /// Per asked MAC with any fetch while the tenant owned it, the latest.
    pub latest: Vec<BootRecord>,
    /// Start of the hour (ms) and fetches in it, oldest first; empty hours
    /// are left out.
    pub boots_per_hour: Vec<(Millis, i64)>,
}

macro_rules! fleet_sql {
    ($conn:ty) => {
        use crate::store::fleet::{FleetHistory, FLEET_CHUNK};

        /// `trusted`: see `crate::trusted_until`. A fetch stamped after it
        /// is the latest only of a phone with no other: taken at its stamp,
        /// a row from a clock stepped ahead named the firmware of a year
        /// ago as current and kept a silent phone out of `not_seen`.
        pub(super) async fn fleet_history(
            conn: &mut $conn,
            tenant: Id,
            macs: &[Mac],
            since: Millis,
            trusted: Millis,
        ) -> Result<FleetHistory, SyncError> {
            type Builder<'q> = sqlx::QueryBuilder<'q, <$conn as sqlx::Connection>::Database>;
            const HOUR: i64 = 3_600_000;
            let mut out = FleetHistory::default();
            let mut hours = std::collections::BTreeMap::<i64, i64>::new();
            for chunk in macs.chunks(FLEET_CHUNK) {
                let texts: Vec<String> = chunk.iter().map(|m| m.to_string()).collect();
                // Per MAC, one backward step down the (mac, at) index from
                // `trusted`, and a second from the top only for a MAC with
                // none below it (COALESCE stops at the first found). Rows
                // made under an earlier owner of the MAC are skipped.
                let mut latest = Builder::new(
                    "SELECT h.mac, h.at, h.remote_ip, h.user_agent, h.protocol, h.file, h.outcome, h.bytes, \
                     h.model, h.firmware, h.tenant_id FROM provisioning_history h WHERE h.id IN \
                     (SELECT COALESCE(",
                );
                for (n, cmp) in ["<=", ">"].into_iter().enumerate() {
                    if n > 0 {
                        latest.push(", ");
                    }
                    latest.push("(SELECT p.id FROM provisioning_history p WHERE p.mac = m.column1 AND p.tenant_id = ");
                    latest.push_bind(tenant);
                    latest.push(format_args!(" AND p.at {cmp} "));
                    latest.push_bind(trusted);
                    latest.push(" ORDER BY p.at DESC, p.id DESC LIMIT 1)");
                }
                latest.push(") FROM (VALUES ");
                let mut values = latest.separated(", ");
                for mac in &texts {
                    values.push("(").push_bind_unseparated(mac.as_str()).push_unseparated(")");
                }
                latest.push(") AS m)");
                out.latest.extend(
                    latest
                        .build_query_as::<BootRecord>()
                        .fetch_all(&mut *conn)
                        .await?,
                );

                let mut counts = Builder::new("SELECT at / ");
                counts.push(HOUR);
                counts.push(", COUNT(*) FROM provisioning_history WHERE tenant_id = ");
                counts.push_bind(tenant);
                counts.push(" AND at >= ");
                counts.push_bind(since);
                counts.push(" AND mac IN (");
                let mut list = counts.separated(", ");
                for mac in &texts {
                    list.push_bind(mac.as_str());
                }
                counts.push(") GROUP BY at / ");
                counts.push(HOUR);
                let rows: Vec<(i64, i64)> = counts.build_query_as().fetch_all(&mut *conn).await?;
                for (hour, boots) in rows {
                    *hours.entry(hour * HOUR).or_default() += boots;
                }
            }
            out.boots_per_hour = hours.into_iter().collect();
            Ok(out)
        }
    };
}

pub(crate) use fleet_sql;

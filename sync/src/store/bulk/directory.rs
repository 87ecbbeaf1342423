//! Bulk directory-entry upserts (imports of a tenant's phone book). A run
//! of `UpsertDirectoryEntry`s is staged whole, then written with one
//! UPDATE of the rows that differ and one INSERT of the rows that are
//! missing: the database compares, inside the import's transaction, as
//! the row-by-row path's `IS DISTINCT FROM` did. Row by row took three
//! round trips an entry: 200,000 entries, one tenant at the default quota,
//! took 145 s (BENCHMARKS.md, directory imports).
//!
//! Unlike phones, nothing here reads the table into the process: entries
//! carry no secret to compare without sealing and no child rows, so the
//! database can tell same from changed on its own, with the unique
//! `(tenant_id, external_id)` index the row-by-row path probed.

use crate::store::{DirectoryEntryInput, Mutation};

/// Shorter runs go row by row: staging costs more than a few point queries.
pub(crate) const BULK_MIN_ENTRIES: usize = 200;

pub(crate) const DIRECTORY_STAGE: &str = "import_directory";

/// `seq` is the entry's place in the run: new rows get their ids in the
/// run's order, as row by row.
pub(crate) const DIRECTORY_COLUMNS: &[&str] = &[
    "seq",
    "tenant_id",
    "external_id",
    "name",
    "company",
    "numbers",
];

/// The staging table's columns, for both dialects (SQLite reads `BIGINT`
/// as an integer column).
pub(crate) const DIRECTORY_STAGE_COLUMNS: &str =
    "(seq BIGINT NOT NULL, tenant_id BIGINT NOT NULL, \
     external_id TEXT NOT NULL, name TEXT NOT NULL, company TEXT, numbers TEXT NOT NULL)";

/// Rows whose fields differ; `$1` is the time of the write.
pub(crate) const UPDATE_CHANGED_ENTRIES: &str = "UPDATE directory_entries SET name = s.name, \
     company = s.company, numbers = s.numbers, updated_at = $1 FROM import_directory s \
     WHERE directory_entries.tenant_id = s.tenant_id AND directory_entries.external_id = s.external_id \
     AND (directory_entries.name IS DISTINCT FROM s.name OR directory_entries.company IS DISTINCT FROM s.company \
     OR directory_entries.numbers IS DISTINCT FROM s.numbers)";

/// Rows with no stored entry of their key, in the run's order.
pub(crate) const INSERT_MISSING_ENTRIES: &str = "INSERT INTO directory_entries \
     (tenant_id, external_id, name, company, numbers, updated_at) \
     SELECT s.tenant_id, s.external_id, s.name, s.company, s.numbers, $1 FROM import_directory s \
     WHERE NOT EXISTS (SELECT 1 FROM directory_entries d \
     WHERE d.tenant_id = s.tenant_id AND d.external_id = s.external_id) ORDER BY s.seq";

/// The run of `UpsertDirectoryEntry`s `mutations` starts with, when it is
/// long enough to write in bulk and names each key once (a key given twice
/// would be updated from either row, or inserted twice).
pub(crate) fn directory_run(mutations: &[Mutation]) -> Option<Vec<&DirectoryEntryInput>> {
    let run: Vec<&DirectoryEntryInput> = mutations
        .iter()
        .map_while(|m| match m {
            Mutation::UpsertDirectoryEntry(d) => Some(d),
            _ => None,
        })
        .collect();
    if run.len() < BULK_MIN_ENTRIES {
        return None;
    }
    let mut keys: foldhash::HashSet<(&str, &str)> =
        foldhash::HashSet::with_capacity_and_hasher(run.len(), Default::default());
    run.iter()
        .all(|d| keys.insert((&d.tenant, &d.external_id)))
        .then_some(run)
}

/// A tenant's directory when a write began: its entries, and the highest
/// id among them (ids only grow), which tells its entries of then from
/// those written since.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Held {
    pub entries: u64,
    pub last_id: i64,
}

/// What a directory replacement deleted of the entries the tenant had
/// when the write began: the share is of those, not of what the run's own
/// upserts added (a sheet of other keys would otherwise delete every old
/// entry as half of old and new together).
pub(crate) struct Cut {
    pub deleted: u64,
    pub had: u64,
}

impl Cut {
    /// Refuses a cut that deleted more than `most_percent` of the entries
    /// the tenant had, which a whole address book exported again rarely
    /// does and a file cut short or the wrong sheet always does.
    pub fn within(&self, tenant: &str, most_percent: u8) -> Result<(), crate::SyncError> {
        // Entries another write added meanwhile can be among the deleted.
        let had = self.had.max(self.deleted);
        if self.deleted * 100 <= u64::from(most_percent) * had {
            return Ok(());
        }
        // Rounded up: a share just past the limit never reads as it.
        let tenths = (self.deleted * 1000).div_ceil(had);
        Err(crate::SyncError::Invalid(format!(
            "replacing the directory of {tenant:?} would delete {} of the {had} entries it had \
             ({}.{}%), more than the {most_percent}% a replacement may delete: check that the \
             files hold the whole directory, or allow more (--max-deleted-percent; \
             max_deleted_percent in the API)",
            self.deleted,
            tenths / 10,
            tenths % 10,
        )))
    }
}

/// Expands to `bulk_directory` and `replace_directory` over `$conn`, inside
/// `shared_sql!`. `$keys` selects the texts of the JSON array bound as `$2`.
macro_rules! bulk_directory_sql {
    ($conn:ty, $keys:literal) => {
        /// What tenant `slug`'s directory holds before the write's first
        /// statement (nothing for a tenant not yet written): what a
        /// replacement's share is of.
        pub(super) async fn directory_size(
            conn: &mut $conn,
            slug: &str,
        ) -> Result<crate::store::bulk::directory::Held, SyncError> {
            let (entries, last_id): (i64, Option<i64>) = sqlx::query_as(
                "SELECT count(*), max(d.id) FROM directory_entries d \
                 JOIN tenants t ON t.id = d.tenant_id WHERE t.slug = $1",
            )
            .bind(slug)
            .fetch_one(&mut *conn)
            .await?;
            Ok(crate::store::bulk::directory::Held {
                entries: entries.max(0) as u64,
                last_id: last_id.unwrap_or(0),
            })
        }

        /// [`Mutation::ReplaceDirectory`]: one statement, however many
        /// entries go, refused past its share of what the tenant `held`
        /// when the write began. Only entries of then count against it: on
        /// PostgreSQL another writer's entries, added meanwhile, are
        /// deleted too (the files are the whole directory) but must not
        /// make the tenant's own API use fail a replacement.
        pub(super) async fn replace_directory(
            conn: &mut $conn,
            slug: &str,
            keep: &[String],
            most_deleted_percent: u8,
            held: crate::store::bulk::directory::Held,
            report: &mut WriteReport,
        ) -> Result<(), SyncError> {
            let tenant = tenant_id(&mut *conn, slug).await?;
            let keep = serde_json::Value::from(keep.to_vec()).to_string();
            let held_then: i64 = sqlx::query_scalar(concat!(
                "SELECT count(*) FROM directory_entries WHERE tenant_id = $1 AND id <= $3 \
                 AND (external_id IS NULL OR external_id NOT IN (",
                $keys,
                "))"
            ))
            .bind(tenant)
            .bind(&keep)
            .bind(held.last_id)
            .fetch_one(&mut *conn)
            .await?;
            let cut = crate::store::bulk::directory::Cut {
                deleted: held_then.max(0) as u64,
                had: held.entries,
            };
            cut.within(slug, most_deleted_percent)?;
            let deleted = sqlx::query(concat!(
                "DELETE FROM directory_entries WHERE tenant_id = $1 \
                 AND (external_id IS NULL OR external_id NOT IN (",
                $keys,
                "))"
            ))
            .bind(tenant)
            .bind(keep)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            report.directory_entries.deleted += deleted;
            Ok(())
        }

        /// Upserts `entries` (keys distinct) writing only rows that are
        /// new or differ. `reject` names entry `i` in a refusal.
        pub(super) async fn bulk_directory(
            conn: &mut $conn,
            entries: &[&crate::store::DirectoryEntryInput],
            reject: &(dyn Fn(usize, String) -> SyncError + Send + Sync),
            now: Millis,
            report: &mut WriteReport,
        ) -> Result<(), SyncError> {
            use crate::store::bulk::directory::*;
            use crate::store::bulk::Cell;

            let started = std::time::Instant::now();
            let tenants = tenant_ids_by_slug(&mut *conn).await?;
            let mut tenant_ids = Vec::with_capacity(entries.len());
            for (i, entry) in entries.iter().enumerate() {
                match tenants.get(&entry.tenant) {
                    Some(id) => tenant_ids.push(*id),
                    None => return Err(reject(i, crate::store::unknown_tenant(&entry.tenant))),
                }
            }
            super::stage_directory(&mut *conn).await?;
            let mut stager =
                super::Stager::open(&mut *conn, DIRECTORY_STAGE, DIRECTORY_COLUMNS, false).await?;
            for (i, entry) in entries.iter().enumerate() {
                let numbers = crate::store::rows::numbers_to_json(&entry.numbers);
                stager
                    .row(&[
                        Cell::Int(i as i64),
                        Cell::Int(tenant_ids[i]),
                        Cell::text(&entry.external_id),
                        Cell::text(&entry.name),
                        Cell::text_or_null(entry.company.as_deref()),
                        Cell::Text(numbers.into()),
                    ])
                    .await?;
            }
            stager.finish().await?;
            let staged = started.elapsed();
            let updated = sqlx::query(UPDATE_CHANGED_ENTRIES)
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            let inserted = sqlx::query(INSERT_MISSING_ENTRIES)
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            super::drop_staging(&mut *conn).await?;
            let counts = &mut report.directory_entries;
            counts.inserted += inserted;
            counts.updated += updated;
            counts.unchanged += (entries.len() as u64).saturating_sub(inserted + updated);
            tracing::info!(
                entries = entries.len(),
                inserted,
                updated,
                stage_ms = staged.as_millis() as u64,
                write_ms = (started.elapsed() - staged).as_millis() as u64,
                "bulk directory import"
            );
            Ok(())
        }
    };
}

pub(crate) use bulk_directory_sql;

#[cfg(test)]
mod tests {
    use super::Cut;

    #[test]
    fn a_replacement_may_delete_up_to_its_share_and_no_more() {
        let cut = |deleted, had| Cut { deleted, had };
        assert!(cut(50, 100).within("acme", 50).is_ok());
        assert!(cut(2, 3).within("acme", 66).is_err());
        assert!(cut(2, 3).within("acme", 67).is_ok());
        assert!(cut(1_000_000, 1_000_000).within("acme", 100).is_ok());
        assert!(cut(1, 1_000_000).within("acme", 0).is_err());
        assert!(cut(0, 0).within("acme", 0).is_ok());
        // More deleted than counted at the start: another write's entries.
        assert!(cut(5, 3).within("acme", 100).is_ok());
        assert!(cut(5, 3).within("acme", 99).is_err());
        let refused = cut(900, 1000).within("acme", 50).unwrap_err().to_string();
        assert!(
            refused.contains("delete 900 of the 1000 entries it had (90.0%)"),
            "{refused}"
        );
        assert!(refused.contains("--max-deleted-percent"), "{refused}");
        let refused = cut(200, 301).within("acme", 66).unwrap_err().to_string();
        assert!(refused.contains("(66.5%), more than the 66%"), "{refused}");
        let refused = cut(5001, 10_000)
            .within("acme", 50)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("(50.1%), more than the 50%"), "{refused}");
    }
}

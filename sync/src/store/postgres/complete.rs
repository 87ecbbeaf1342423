//! Whether the mirrored tables are whole: every change-log trigger, primary
//! key and foreign key the migrations give them. `pg_restore` makes those
//! last, in its post-data section, once the rows are copied (under `-j`,
//! once their own table's are), while the database id a node compares
//! (`rows::READ_META_POSTGRES`) names the restored change log as soon as
//! that table and `dialtone_meta` are back. A node that reloaded then read
//! the tables `pg_restore` had filled so far, and the rows copied after
//! its load wrote no change-log row for it to catch up with: every node
//! served no phones, or phones without their tenants, until a
//! `reload-all`. A load made in a snapshot that lacks any of them is
//! refused instead ([`SyncError::SchemaIncomplete`]), as an outage: the
//! node keeps what it serves and tries again at its next poll.

use sqlx::PgConnection;

use crate::error::SyncError;

/// A mirrored table as the migrations make it.
pub(super) struct Mirrored {
    pub table: &'static str,
    /// Its change-log triggers, by the names `0001_initial.sql`,
    /// `0006_statement_change_log.sql` and
    /// `0009_directory_statement_change_log.sql` give them. A migration
    /// that renames one changes them here too; the nodes of the release
    /// before it would refuse every load from the migrated database.
    pub triggers: &'static [&'static str],
    /// The table its foreign key points to (constraints are named by
    /// PostgreSQL, so they are found by what they join).
    pub parent: Option<&'static str>,
}

pub(super) const MIRRORED: &[Mirrored] = &[
    Mirrored {
        table: "tenants",
        triggers: &["tenants_log"],
        parent: None,
    },
    Mirrored {
        table: "phones",
        triggers: &[
            "phones_log_insert",
            "phones_log_update",
            "phones_log_delete",
        ],
        parent: Some("tenants"),
    },
    Mirrored {
        table: "lines",
        triggers: &["lines_log_insert", "lines_log_update", "lines_log_delete"],
        parent: Some("phones"),
    },
    Mirrored {
        table: "templates",
        triggers: &["templates_log"],
        parent: None,
    },
    Mirrored {
        table: "directory_entries",
        triggers: &[
            "directory_entries_log_insert",
            "directory_entries_log_update",
            "directory_entries_log_delete",
        ],
        parent: Some("tenants"),
    },
    Mirrored {
        table: "directory_sources",
        triggers: &["directory_sources_log"],
        parent: Some("tenants"),
    },
    Mirrored {
        table: "api_tokens",
        triggers: &["api_tokens_log"],
        parent: Some("tenants"),
    },
];

/// The change-log triggers of `table` (none for a table not mirrored).
pub(super) fn change_log_triggers(table: &str) -> &'static [&'static str] {
    MIRRORED
        .iter()
        .find(|m| m.table == table)
        .map_or(&[], |m| m.triggers)
}

/// What of [`MIRRORED`] the catalog lacks, each named. The catalog is read
/// in the transaction's snapshot like any table, so a trigger found here
/// was made after its table's rows, which the same snapshot holds.
const MISSING: &str = "\
    SELECT 'trigger ' || t.name || ' on ' || t.tab FROM unnest($1::text[], $2::text[]) AS t(tab, name) \
     WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g \
                        WHERE g.tgrelid = to_regclass(t.tab) AND g.tgname = t.name) \
    UNION ALL \
    SELECT 'primary key of ' || k.tab FROM unnest($3::text[]) AS k(tab) \
     WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c \
                        WHERE c.conrelid = to_regclass(k.tab) AND c.contype = 'p') \
    UNION ALL \
    SELECT 'foreign key from ' || f.tab || ' to ' || f.parent \
      FROM unnest($4::text[], $5::text[]) AS f(tab, parent) \
     WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c \
                        WHERE c.conrelid = to_regclass(f.tab) \
                          AND c.confrelid = to_regclass(f.parent) AND c.contype = 'f')";

/// How many missing objects an error names; the rest are counted.
const NAMED: usize = 3;

/// Refuses a database whose mirrored tables lack anything of
/// [`MIRRORED`], in the snapshot `conn`'s transaction reads.
pub(super) async fn check(conn: &mut PgConnection) -> Result<(), SyncError> {
    let (trigger_tables, triggers): (Vec<&str>, Vec<&str>) = MIRRORED
        .iter()
        .flat_map(|m| m.triggers.iter().map(move |t| (m.table, *t)))
        .unzip();
    let tables: Vec<&str> = MIRRORED.iter().map(|m| m.table).collect();
    let (children, parents): (Vec<&str>, Vec<&str>) = MIRRORED
        .iter()
        .filter_map(|m| m.parent.map(|p| (m.table, p)))
        .unzip();
    let missing: Vec<String> = sqlx::query_scalar(MISSING)
        .bind(trigger_tables)
        .bind(triggers)
        .bind(tables)
        .bind(children)
        .bind(parents)
        .fetch_all(conn)
        .await?;
    if missing.is_empty() {
        return Ok(());
    }
    let mut named = missing[..missing.len().min(NAMED)].join(", ");
    if missing.len() > NAMED {
        named.push_str(&format!(" and {} more", missing.len() - NAMED));
    }
    Err(SyncError::SchemaIncomplete(named))
}

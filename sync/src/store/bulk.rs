//! Bulk phone upserts (imports): the rows a run of `UpsertPhone`s would
//! change are found by comparing the run with the tables, read once inside
//! the writing transaction after the tables are locked against other
//! writers (so the comparison is exact), and only those rows are written:
//! staged into temporary tables (PostgreSQL: COPY; SQLite: multi-row
//! INSERTs), then applied with one set-based statement each. Secrets are
//! compared without sealing ([`crate::crypto::SecretKey::seals_to`]); only
//! rows that change are sealed.
//!
//! Each backend provides `lock_for_import`, `read_stored` (rows borrowed
//! as [`StoredPhone`]/[`StoredLine`], `bulk/compare.rs`, fed to the
//! [`Comparison`], `bulk/comparison.rs`), `Stager` (open/row/finish),
//! `probe_joins` and `quiet_change_log`/`loud_change_log`; the SQL here is
//! shared.

/// Runs of `UpsertPhone` shorter than this go row by row: reading the whole
/// phone table costs more than a few hundred point queries.
pub(crate) const BULK_MIN_PHONES: usize = 200;

/// A batch that leaves fields as stored, where only one phone at a time
/// could be written (a MAC given twice): an import never makes one.
pub(crate) const KEPT_NEEDS_BULK: &str =
    "phones that leave fields as stored must name each MAC once";

/// Above this many changed rows the change log gets no row per change:
/// every node would reload everything anyway (a watcher further behind
/// than `max_catch_up_rows` does), so the import bumps the epoch instead,
/// and writing millions of change-log rows would cost more than the rows.
pub(crate) const QUIET_CHANGE_LOG_ROWS: u64 = 50_000;

/// How an import's writes reach the change log: what each backend's
/// `quiet_change_log` chose.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ChangeLog {
    /// A change-log row per row written, as for any other write.
    PerRow,
    /// No row per change; `loud_change_log` bumps the epoch instead.
    Quiet,
    /// Quiet, and phones and lines were empty and emptied anew in this
    /// transaction (PostgreSQL's `TRUNCATE`), so rows inserted into them
    /// can be written frozen (`COPY ... FREEZE`).
    QuietOverFreshTables,
}

/// How a phone of the run compares with its row.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PhoneState {
    New,
    Same,
    Changed,
    /// Moved to another tenant: nothing the old tenant stored (its
    /// credentials, variables, lines) may follow the phone, so the fields
    /// the run keeps as stored are not kept; the row is written whole,
    /// with the run's defaults, and so are its lines.
    Moved,
}

impl PhoneState {
    /// The row is written, and what it keeps is kept.
    pub(crate) fn keeps_stored(self) -> bool {
        self == PhoneState::Changed
    }

    /// Where the row goes: a moved one is staged as a changed one.
    pub(crate) fn staged(self) -> PhoneState {
        match self {
            PhoneState::Moved => PhoneState::Changed,
            other => other,
        }
    }
}

/// How a line of the run compares with its row.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineState {
    Missing,
    Same,
    Changed,
    /// Another extension at the row's position: another account, so the
    /// fields the run keeps as stored are the old account's and are not
    /// kept; the row is written whole, with the run's defaults.
    Replaced,
}

impl LineState {
    /// The row is written, and what it keeps is kept.
    pub(crate) fn keeps_stored(self) -> bool {
        self == LineState::Changed
    }

    /// Where the row goes: a replaced one is staged as a changed one.
    pub(crate) fn staged(self) -> LineState {
        match self {
            LineState::Replaced => LineState::Changed,
            other => other,
        }
    }
}

/// One cell of a staged row. Text is borrowed from the run but for sealed
/// secrets, and numbers and MACs are written by the stager itself, so a
/// staged row allocates nothing but its secrets.
pub(crate) enum Cell<'a> {
    Null,
    Text(std::borrow::Cow<'a, str>),
    /// A `BIGINT` column.
    Int(i64),
    /// An `INTEGER` column (a line's position): PostgreSQL's binary COPY
    /// takes each column at its own width.
    Int32(i32),
    Mac(crate::model::Mac),
}

impl<'a> Cell<'a> {
    pub(crate) fn text(text: &'a str) -> Self {
        Cell::Text(text.into())
    }

    pub(crate) fn text_or_null(text: Option<&'a str>) -> Self {
        text.map_or(Cell::Null, Cell::text)
    }

    /// A secret sealed for storage.
    pub(crate) fn sealed(sealed: crate::crypto::Sealed) -> Self {
        Cell::Text(String::from(sealed.0).into())
    }

    /// The cell as a bound parameter would carry it (`None` is NULL).
    pub(crate) fn to_text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Text(text) => Some(text.as_ref().to_owned()),
            Cell::Int(n) => Some(n.to_string()),
            Cell::Int32(n) => Some(n.to_string()),
            Cell::Mac(mac) => Some(mac.to_string()),
        }
    }
}

/// New phones and lines go straight into their tables, with ids reserved
/// up front (so lines know their phone's id without a join); changed ones
/// are staged by id and applied with one UPDATE each.
const PHONE_TABLE_COLUMNS: [&str; 10] = [
    "id",
    "mac",
    "tenant_id",
    "family",
    "model",
    "label",
    "variables",
    "http_user",
    "http_password",
    "updated_at",
];
const LINE_TABLE_COLUMNS: [&str; 11] = [
    "id",
    "phone_id",
    "position",
    "extension",
    "display_name",
    "auth_user",
    "password",
    "registrar",
    "proxy",
    "settings",
    "updated_at",
];
pub(crate) const PHONE_COLUMNS: &[&str] = &PHONE_TABLE_COLUMNS;
pub(crate) const LINE_COLUMNS: &[&str] = &LINE_TABLE_COLUMNS;
/// A staged row's columns: its table's, then the fields it keeps as stored
/// ([`crate::store::Kept`]'s bits).
pub(crate) const PHONE_STAGE_COLUMNS: &[&str] = &and_kept::<10, 11>(PHONE_TABLE_COLUMNS);
pub(crate) const LINE_STAGE_COLUMNS: &[&str] = &and_kept::<11, 12>(LINE_TABLE_COLUMNS);
pub(crate) const PHONE_STAGE: &str = "import_phones";
pub(crate) const LINE_STAGE: &str = "import_lines";

/// `columns`, then `kept` (`M` is `N + 1`).
const fn and_kept<const N: usize, const M: usize>(columns: [&'static str; N]) -> [&'static str; M] {
    let mut all = ["kept"; M];
    let mut i = 0;
    while i < N {
        all[i] = columns[i];
        i += 1;
    }
    all
}

/// Phone-scope templates belong to the phone's tenant: they do not move
/// with it. Runs before the phones are updated.
pub(crate) const DELETE_MOVED_TEMPLATES: &str = "DELETE FROM templates WHERE scope = 'phone' AND scope_key IN \
     (SELECT p.mac FROM import_phones s JOIN phones p ON p.id = s.id WHERE p.tenant_id <> s.tenant_id)";

/// How many phones each tenant loses to another, for its `move_out` audit
/// row. Runs before the phones are updated.
pub(crate) const MOVED_OUT_BY_TENANT: &str = "SELECT p.tenant_id, count(*) FROM import_phones s \
     JOIN phones p ON p.id = s.id WHERE p.tenant_id <> s.tenant_id GROUP BY p.tenant_id";

/// The UPDATEs that apply the staged rows; a field whose bit the row's
/// `kept` holds stays as stored.
pub(crate) fn update_staged() -> [String; 2] {
    use crate::store::Kept;
    let set = |table: &str, column: &str, kept: Option<Kept>| match kept {
        None => format!("{column} = s.{column}"),
        Some(kept) => format!(
            "{column} = CASE WHEN s.kept & {bit} = 0 THEN s.{column} ELSE {table}.{column} END",
            bit = kept.bits()
        ),
    };
    let phones = [
        ("tenant_id", None),
        ("family", None),
        ("model", Some(Kept::MODEL)),
        ("label", Some(Kept::LABEL)),
        ("variables", Some(Kept::VARIABLES)),
        ("http_user", Some(Kept::HTTP_USER)),
        ("http_password", Some(Kept::HTTP_PASSWORD)),
        ("updated_at", None),
    ];
    let lines = [
        ("extension", None),
        ("display_name", Some(Kept::DISPLAY_NAME)),
        ("auth_user", Some(Kept::AUTH_USER)),
        ("password", Some(Kept::PASSWORD)),
        ("registrar", None),
        ("proxy", Some(Kept::PROXY)),
        ("settings", Some(Kept::LINE_SETTINGS)),
        ("updated_at", None),
    ];
    let sets = |table: &str, columns: &[(&str, Option<Kept>)]| {
        let sets: Vec<String> = (columns.iter())
            .map(|&(column, kept)| set(table, column, kept))
            .collect();
        sets.join(", ")
    };
    [
        format!(
            "UPDATE phones SET {} FROM import_phones s WHERE phones.id = s.id",
            sets("phones", &phones)
        ),
        format!(
            "UPDATE lines SET {} FROM import_lines s WHERE lines.id = s.id",
            sets("lines", &lines)
        ),
    ]
}

mod compare;
mod comparison;
pub(crate) mod directory;
pub(crate) use compare::{taken, Stored, StoredLine, StoredPhone, LINE_READ, PHONE_READ};
pub(crate) use comparison::Comparison;

/// Expands to `bulk_phones` over `$conn`, inside `shared_sql!`.
macro_rules! bulk_sql {
    ($conn:ty, $ids_filter:literal, $lock:literal) => {
        /// Upserts `phones` (MACs distinct) writing only what differs from
        /// the tables. `reject` names phone `i` in a refusal; `done` rows of
        /// the write came before these (for `progress`).
        #[allow(clippy::too_many_arguments)]
        pub(super) async fn bulk_phones(
            conn: &mut $conn,
            key: &SecretKey,
            second: &super::SecondReader,
            phones: &crate::store::PhoneBatch,
            reject: &(dyn Fn(usize, String) -> SyncError + Send + Sync),
            done: u64,
            now: Millis,
            report: &mut WriteReport,
            progress: Option<&crate::store::Progress>,
            quiet_allowed: bool,
        ) -> Result<(), SyncError> {
            use crate::store::bulk::*;

            let started = std::time::Instant::now();
            super::lock_for_import(&mut *conn).await?;
            let locked_at = started.elapsed();
            let tenants = tenant_ids_by_slug(&mut *conn).await?;
            // By the batch's small tenant table, not per phone.
            let tenant_ids: Vec<Option<Id>> = phones
                .tenants()
                .iter()
                .map(|slug| tenants.get(&**slug).copied())
                .collect();
            if let Some(i) =
                (0..phones.len()).find(|&i| tenant_ids[phones.tenant_index(i)].is_none())
            {
                return Err(reject(
                    i,
                    crate::store::unknown_tenant(&phones.get(i).tenant),
                ));
            }
            let tenant_id = |i: usize| tenant_ids[phones.tenant_index(i)].unwrap_or_default();
            let n = phones.len();
            let mut comparison = Comparison::new(key, phones, &tenant_ids);
            let mut read_phones_at = started.elapsed();
            super::read_stored(&mut *conn, second, n, |stored| {
                if matches!(stored, Stored::PhonesRead) {
                    read_phones_at = started.elapsed();
                }
                Ok(comparison.offer(stored))
            })
            .await?;
            let Comparison {
                mut ids,
                states,
                lines,
                line_ids,
                gone,
                stored_rows,
                held,
                ..
            } = comparison;
            let read_lines_at = started.elapsed();
            let mut staged_phones = 0u64;
            for state in &states {
                match state {
                    PhoneState::New => report.phones.inserted += 1,
                    PhoneState::Changed | PhoneState::Moved => report.phones.updated += 1,
                    PhoneState::Same => report.phones.unchanged += 1,
                }
                staged_phones += u64::from(*state != PhoneState::Same);
            }
            for state in &lines {
                match state {
                    LineState::Missing => report.lines.inserted += 1,
                    LineState::Changed | LineState::Replaced => report.lines.updated += 1,
                    LineState::Same => report.lines.unchanged += 1,
                }
            }
            report.lines.deleted += gone.len() as u64;
            let staged_lines = (report.lines.inserted + report.lines.updated) as u64;
            crate::store::progress_point(progress, done + n as u64 / 2).await;
            let writes = staged_phones + staged_lines + gone.len() as u64;
            let compared = started.elapsed();
            tracing::debug!(
                locked_ms = locked_at.as_millis() as u64,
                read_phones_ms = (read_phones_at - locked_at).as_millis() as u64,
                read_lines_ms = (read_lines_at - read_phones_at).as_millis() as u64,
                rows_to_write = writes,
                ?held,
                "bulk phone import: compared"
            );
            if writes == 0 {
                tracing::info!(
                    phones = n,
                    rows_written = 0,
                    compare_ms = compared.as_millis() as u64,
                    "bulk phone import"
                );
                return Ok(());
            }
            let change_log = if writes > QUIET_CHANGE_LOG_ROWS && quiet_allowed {
                super::quiet_change_log(&mut *conn, stored_rows == 0).await?
            } else {
                ChangeLog::PerRow
            };
            let quiet = change_log != ChangeLog::PerRow;
            // Only the tables themselves were emptied anew, not the stages.
            let frozen = |target: &str| {
                change_log == ChangeLog::QuietOverFreshTables
                    && matches!(target, "phones" | "lines")
            };

            let new_phones = states.iter().filter(|s| **s == PhoneState::New).count();
            let mut next_phone =
                super::reserve_ids(&mut *conn, "phones", new_phones as i64).await?;
            for (id, state) in ids.iter_mut().zip(&states) {
                if *state == PhoneState::New {
                    *id = next_phone;
                    next_phone += 1;
                }
            }
            // A staged row also carries what it keeps as stored; a field it
            // keeps is not sealed (the UPDATE leaves the stored one).
            let phone_cells = |i: usize| -> [Cell; 11] {
                let p = phones.get(i);
                let kept = if states[i].keeps_stored() {
                    p.kept
                } else {
                    crate::store::Kept::NONE
                };
                [
                    Cell::Int(ids[i]),
                    Cell::Mac(p.mac),
                    Cell::Int(tenant_id(i)),
                    Cell::text(p.family.as_str()),
                    Cell::text_or_null(p.model),
                    Cell::text_or_null(p.label),
                    Cell::text(p.variables),
                    Cell::text_or_null(p.http_user),
                    match p.http_password {
                        Some(pw) if !kept.contains(crate::store::Kept::HTTP_PASSWORD) => {
                            Cell::sealed(key.seal(Purpose::DeviceHttpPassword, pw))
                        }
                        _ => Cell::Null,
                    },
                    Cell::Int(now),
                    Cell::Int(i64::from(kept.bits())),
                ]
            };
            // Inserts first (lines need their phones), then the staged updates.
            for (target, columns, wanted) in [
                ("phones", PHONE_COLUMNS, PhoneState::New),
                (PHONE_STAGE, PHONE_STAGE_COLUMNS, PhoneState::Changed),
            ] {
                let mut stager =
                    super::Stager::open(&mut *conn, target, columns, frozen(target)).await?;
                for i in 0..n {
                    if states[i].staged() == wanted {
                        stager.row(&phone_cells(i)[..columns.len()]).await?;
                    }
                }
                stager.finish().await?;
            }
            let new_lines = lines
                .iter()
                .filter(|s| matches!(s, LineState::Missing))
                .count();
            let first_line = super::reserve_ids(&mut *conn, "lines", new_lines as i64).await?;
            for (target, columns, wanted) in [
                ("lines", LINE_COLUMNS, LineState::Missing),
                (LINE_STAGE, LINE_STAGE_COLUMNS, LineState::Changed),
            ] {
                let mut next_line = first_line;
                let mut stager =
                    super::Stager::open(&mut *conn, target, columns, frozen(target)).await?;
                for i in 0..n {
                    for (at, flat) in phones.line_range(i).enumerate() {
                        let state = lines[flat];
                        if state.staged() != wanted {
                            continue;
                        }
                        let kept = if state.keeps_stored() {
                            phones.line(flat).kept
                        } else {
                            crate::store::Kept::NONE
                        };
                        let id = match state {
                            LineState::Missing => {
                                next_line += 1;
                                next_line - 1
                            }
                            _ => line_ids[flat],
                        };
                        let line = phones.line(flat);
                        let password = match line.password {
                            Some(pw) if !kept.contains(crate::store::Kept::PASSWORD) => {
                                Cell::sealed(key.seal(Purpose::LinePassword, pw))
                            }
                            _ => Cell::Null,
                        };
                        let cells: [Cell; 12] = [
                            Cell::Int(id),
                            Cell::Int(ids[i]),
                            Cell::Int32(at as i32 + 1),
                            Cell::text(line.extension),
                            Cell::text(line.display_name),
                            Cell::text(line.auth_user),
                            password,
                            Cell::text(line.registrar),
                            Cell::text_or_null(line.proxy),
                            Cell::text(line.settings),
                            Cell::Int(now),
                            Cell::Int(i64::from(kept.bits())),
                        ];
                        stager.row(&cells[..columns.len()]).await?;
                    }
                }
                stager.finish().await?;
            }
            let staged_at = started.elapsed();
            // Staged rows join their tables by id: a few against many go by
            // index, one probe a row.
            let few = 8 * (staged_phones + staged_lines) < stored_rows;
            super::probe_joins(&mut *conn, few).await?;
            if !$lock.is_empty() && states.contains(&PhoneState::Moved) {
                // As for one phone's move (`apply_one`): the moved phones
                // locked first, so that no template written for one of them
                // is still open when their templates are deleted.
                sqlx::query(concat!(
                    "SELECT p.id FROM import_phones s JOIN phones p ON p.id = s.id \
                     WHERE p.tenant_id <> s.tenant_id",
                    $lock,
                    " OF p"
                ))
                .execute(&mut *conn)
                .await?;
            }
            if states.contains(&PhoneState::Moved) {
                let moved: Vec<(i64, i64)> = sqlx::query_as(MOVED_OUT_BY_TENANT)
                    .fetch_all(&mut *conn)
                    .await?;
                for (tenant, phones) in moved {
                    *report.moved_out.entry(tenant).or_default() += phones as u64;
                }
            }
            report.templates.deleted += sqlx::query(DELETE_MOVED_TEMPLATES)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            for statement in update_staged() {
                sqlx::query(&statement).execute(&mut *conn).await?;
            }
            if few {
                super::probe_joins(&mut *conn, false).await?;
            }
            for chunk in gone.chunks(10_000) {
                let ids = serde_json::to_string(chunk).expect("ids serialize");
                sqlx::query(concat!("DELETE FROM lines WHERE ", $ids_filter))
                    .bind(ids)
                    .execute(&mut *conn)
                    .await?;
            }
            let updated_at = started.elapsed();
            if quiet {
                super::loud_change_log(&mut *conn).await?;
            }
            tracing::debug!(
                stage_ms = (staged_at - compared).as_millis() as u64,
                update_ms = (updated_at - staged_at).as_millis() as u64,
                change_log_ms = (started.elapsed() - updated_at).as_millis() as u64,
                "bulk phone import: written"
            );
            super::drop_staging(&mut *conn).await?;
            tracing::info!(
                phones = n,
                rows_written = writes,
                ?change_log,
                compare_ms = compared.as_millis() as u64,
                write_ms = (started.elapsed() - compared).as_millis() as u64,
                "bulk phone import"
            );
            crate::store::progress_point(progress, done + n as u64).await;
            Ok(())
        }
    };
}

pub(crate) use bulk_sql;

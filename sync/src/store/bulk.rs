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

/// Above this many changed rows the change log gets no row per change:
/// every node would reload everything anyway (a watcher further behind
/// than `max_catch_up_rows` does), so the import bumps the epoch instead,
/// and writing millions of change-log rows would cost more than the rows.
pub(crate) const QUIET_CHANGE_LOG_ROWS: u64 = 50_000;

/// How a phone of the run compares with its row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PhoneState {
    New,
    Same,
    Changed,
}

/// How a line of the run compares with its row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum LineState {
    Missing,
    Same,
    Changed,
}

/// One cell of a staged row. Text is borrowed from the run but for sealed
/// secrets, and numbers and MACs are written by the stager itself, so a
/// staged row allocates nothing but its secrets.
pub(crate) enum Cell<'a> {
    Null,
    Text(std::borrow::Cow<'a, str>),
    Int(i64),
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
            Cell::Mac(mac) => Some(mac.to_string()),
        }
    }
}

/// New phones and lines go straight into their tables, with ids reserved
/// up front (so lines know their phone's id without a join); changed ones
/// are staged by id and applied with one UPDATE each.
pub(crate) const PHONE_COLUMNS: &[&str] = &[
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
pub(crate) const LINE_COLUMNS: &[&str] = &[
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
pub(crate) const PHONE_STAGE: &str = "import_phones";
pub(crate) const LINE_STAGE: &str = "import_lines";

/// Phone-scope templates belong to the phone's tenant: they do not move
/// with it. Runs before the phones are updated.
pub(crate) const DELETE_MOVED_TEMPLATES: &str = "DELETE FROM templates WHERE scope = 'phone' AND scope_key IN \
     (SELECT p.mac FROM import_phones s JOIN phones p ON p.id = s.id WHERE p.tenant_id <> s.tenant_id)";

pub(crate) const UPDATE_STAGED: &[&str] = &[
    "UPDATE phones SET tenant_id = s.tenant_id, family = s.family, model = s.model, label = s.label, \
     variables = s.variables, http_user = s.http_user, http_password = s.http_password, updated_at = s.updated_at \
     FROM import_phones s WHERE phones.id = s.id",
    "UPDATE lines SET extension = s.extension, display_name = s.display_name, auth_user = s.auth_user, \
     password = s.password, registrar = s.registrar, proxy = s.proxy, settings = s.settings, \
     updated_at = s.updated_at FROM import_lines s WHERE lines.id = s.id",
];

mod compare;
mod comparison;
mod digest;
pub(crate) use compare::{taken, Stored, StoredLine, StoredPhone, LINE_READ, PHONE_READ};
pub(crate) use comparison::Comparison;
pub(crate) use digest::{
    by_id_pays, run_digests, Digest, Digested, StoredDigest, DIGEST_COLUMNS, DIGEST_SELECT,
    DIGEST_TABLE,
};

/// Expands to `bulk_phones` over `$conn`, inside `shared_sql!`.
macro_rules! bulk_sql {
    ($conn:ty, $ids_filter:literal) => {
        /// The digests (`bulk/digest.rs`) of the stored phones of the run
        /// that lack the run's, once their rows are written: the writes
        /// made the database forget what it held of them, unless a large
        /// run turned the triggers off, so differing digests are deleted
        /// here too. Phones inserted by this run get theirs next time.
        /// Evaluates to the digests written.
        macro_rules! write_digests {
            ($c:expr, $phones:expr, $states:expr, $digested:expr, $ids:expr, $digests:expr) => {{
                let (phones, states, digested, ids, digests): (
                    &crate::store::PhoneBatch,
                    &[PhoneState],
                    &[Digested],
                    &[Id],
                    &[Digest],
                ) = ($phones, $states, $digested, $ids, $digests);
                let replaced: Vec<Id> = (0..states.len())
                    .filter(|&i| digested[i] == Digested::Differs)
                    .map(|i| ids[i])
                    .collect();
                for chunk in replaced.chunks(10_000) {
                    let ids = serde_json::to_string(chunk).expect("ids serialize");
                    sqlx::query(concat!("DELETE FROM phone_digests WHERE ", $ids_filter))
                        .bind(ids)
                        .execute(&mut *$c)
                        .await?;
                }
                let mut written = 0u64;
                let wanted = |i: &usize| digested[*i] != Digested::Same;
                if (0..states.len()).any(|i| wanted(&i)) {
                    let mut stager =
                        super::Stager::open(&mut *$c, DIGEST_TABLE, DIGEST_COLUMNS).await?;
                    for i in (0..states.len()).filter(wanted) {
                        let [high, low] = digests[i];
                        stager
                            .row(&[
                                Cell::Int(ids[i]),
                                Cell::Mac(phones.mac(i)),
                                Cell::Int(high),
                                Cell::Int(low),
                            ])
                            .await?;
                        written += 1;
                    }
                    stager.finish().await?;
                }
                written
            }};
        }

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
        ) -> Result<(), SyncError> {
            use crate::store::bulk::*;
            use std::collections::HashMap;

            let started = std::time::Instant::now();
            super::lock_for_import(&mut *conn).await?;
            let locked_at = started.elapsed();
            let tenants: HashMap<String, Id> =
                sqlx::query_as::<_, (String, Id)>("SELECT slug, id FROM tenants")
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .collect();
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
                    format!("unknown tenant {:?}", phones.get(i).tenant),
                ));
            }
            let tenant_id = |i: usize| tenant_ids[phones.tenant_index(i)].unwrap_or_default();
            let n = phones.len();
            let digests = run_digests(key, phones, &tenant_ids);
            let digested_at = started.elapsed();
            let mut comparison = Comparison::new(key, phones, &tenant_ids, &digests);
            super::read_digests(&mut *conn, |row| comparison.offer_digest(row)).await?;
            let digests_read_at = started.elapsed();
            let (unsettled_ids, unsettled_macs) = comparison.unsettled();
            let unsettled = unsettled_ids.len() + unsettled_macs.len();
            let by_id = by_id_pays(unsettled, n);
            let mut read_phones_at = digests_read_at;
            let mut mark = |stored: &Stored| {
                if matches!(stored, Stored::PhonesRead) {
                    read_phones_at = started.elapsed();
                }
            };
            if by_id {
                comparison.read_unsettled();
                if unsettled > 0 {
                    super::read_by_id(&mut *conn, &unsettled_ids, &unsettled_macs, |stored| {
                        mark(&stored);
                        Ok(comparison.offer(stored))
                    })
                    .await?;
                }
            } else {
                // Too many to read by id: both tables whole, compared
                // afresh, as without digests.
                let digested = std::mem::take(&mut comparison.digested);
                comparison = Comparison::new(key, phones, &tenant_ids, &digests);
                comparison.digested = digested;
                super::read_stored(&mut *conn, second, n, |stored| {
                    mark(&stored);
                    Ok(comparison.offer(stored))
                })
                .await?;
            }
            let Comparison {
                mut ids,
                states,
                lines,
                line_ids,
                gone,
                stored_rows,
                held,
                digested,
                ..
            } = comparison;
            let read_lines_at = started.elapsed();
            let mut staged_phones = 0u64;
            for state in &states {
                match state {
                    PhoneState::New => report.phones.inserted += 1,
                    PhoneState::Changed => report.phones.updated += 1,
                    PhoneState::Same => report.phones.unchanged += 1,
                }
                staged_phones += u64::from(*state != PhoneState::Same);
            }
            for state in &lines {
                match state {
                    LineState::Missing => report.lines.inserted += 1,
                    LineState::Changed => report.lines.updated += 1,
                    LineState::Same => report.lines.unchanged += 1,
                }
            }
            report.lines.deleted += gone.len() as u64;
            let staged_lines = (report.lines.inserted + report.lines.updated) as u64;
            if let Some(progress) = progress {
                progress(done + n as u64 / 2);
            }
            let writes = staged_phones + staged_lines + gone.len() as u64;
            let compared = started.elapsed();
            tracing::debug!(
                locked_ms = locked_at.as_millis() as u64,
                digest_ms = (digested_at - locked_at).as_millis() as u64,
                read_digests_ms = (digests_read_at - digested_at).as_millis() as u64,
                unsettled,
                by_id,
                read_phones_ms = (read_phones_at - digests_read_at).as_millis() as u64,
                read_lines_ms = (read_lines_at - read_phones_at).as_millis() as u64,
                rows_to_write = writes,
                ?held,
                "bulk phone import: compared"
            );
            if writes == 0 {
                // Digests are the import's bookkeeping, not rows it wrote:
                // stale ones of unchanged phones are replaced all the same.
                let digests_written =
                    write_digests!(conn, phones, &states, &digested, &ids, &digests);
                tracing::info!(
                    phones = n,
                    rows_written = 0,
                    digests_written,
                    compare_ms = compared.as_millis() as u64,
                    "bulk phone import"
                );
                return Ok(());
            }
            let quiet = writes > QUIET_CHANGE_LOG_ROWS
                && super::quiet_change_log(&mut *conn, stored_rows == 0).await?;
            super::import_keeps_digests(&mut *conn, true).await?;

            let new_phones = states.iter().filter(|s| **s == PhoneState::New).count();
            let mut next_phone =
                super::reserve_ids(&mut *conn, "phones", new_phones as i64).await?;
            for (id, state) in ids.iter_mut().zip(&states) {
                if *state == PhoneState::New {
                    *id = next_phone;
                    next_phone += 1;
                }
            }
            let phone_cells = |i: usize| -> [Cell; 10] {
                let p = phones.get(i);
                [
                    Cell::Int(ids[i]),
                    Cell::Mac(p.mac),
                    Cell::Int(tenant_id(i)),
                    Cell::text(p.family.as_str()),
                    Cell::text_or_null(p.model),
                    Cell::text_or_null(p.label),
                    Cell::text(p.variables),
                    Cell::text_or_null(p.http_user),
                    p.http_password.map_or(Cell::Null, |pw| {
                        Cell::sealed(key.seal(Purpose::DeviceHttpPassword, pw))
                    }),
                    Cell::Int(now),
                ]
            };
            // Inserts first (lines need their phones), then the staged updates.
            for (target, wanted) in [
                ("phones", PhoneState::New),
                (PHONE_STAGE, PhoneState::Changed),
            ] {
                let mut stager = super::Stager::open(&mut *conn, target, PHONE_COLUMNS).await?;
                for i in 0..n {
                    if states[i] == wanted {
                        stager.row(&phone_cells(i)).await?;
                    }
                }
                stager.finish().await?;
            }
            let new_lines = lines
                .iter()
                .filter(|s| matches!(s, LineState::Missing))
                .count();
            let first_line = super::reserve_ids(&mut *conn, "lines", new_lines as i64).await?;
            for (target, wanted) in [
                ("lines", LineState::Missing),
                (LINE_STAGE, LineState::Changed),
            ] {
                let mut next_line = first_line;
                let mut stager = super::Stager::open(&mut *conn, target, LINE_COLUMNS).await?;
                for i in 0..n {
                    for (at, flat) in phones.line_range(i).enumerate() {
                        let state = lines[flat];
                        if state != wanted {
                            continue;
                        }
                        let id = match state {
                            LineState::Missing => {
                                next_line += 1;
                                next_line - 1
                            }
                            _ => line_ids[flat],
                        };
                        let line = phones.line(flat);
                        let password = line.password.map_or(Cell::Null, |pw| {
                            Cell::sealed(key.seal(Purpose::LinePassword, pw))
                        });
                        let cells: [Cell; 11] = [
                            Cell::Int(id),
                            Cell::Int(ids[i]),
                            Cell::Int(at as i64 + 1),
                            Cell::text(line.extension),
                            Cell::text(line.display_name),
                            Cell::text(line.auth_user),
                            password,
                            Cell::text(line.registrar),
                            Cell::text_or_null(line.proxy),
                            Cell::text(line.settings),
                            Cell::Int(now),
                        ];
                        stager.row(&cells).await?;
                    }
                }
                stager.finish().await?;
            }
            let staged_at = started.elapsed();
            // Staged rows join their tables by id: a few against many go by
            // index, one probe a row.
            let few = 8 * (staged_phones + staged_lines) < stored_rows;
            super::probe_joins(&mut *conn, few).await?;
            report.templates.deleted += sqlx::query(DELETE_MOVED_TEMPLATES)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            for statement in UPDATE_STAGED {
                sqlx::query(statement).execute(&mut *conn).await?;
            }
            for chunk in gone.chunks(10_000) {
                let ids = serde_json::to_string(chunk).expect("ids serialize");
                sqlx::query(concat!("DELETE FROM lines WHERE ", $ids_filter))
                    .bind(ids)
                    .execute(&mut *conn)
                    .await?;
            }
            let inserted = (states.iter().zip(&ids))
                .filter(|(state, _)| **state == PhoneState::New)
                .map(|(_, id)| *id);
            if let (Some(first), Some(last)) = (inserted.clone().min(), inserted.max()) {
                // No digest can name a new phone's id, but one written while
                // rows came in with ids of their own and triggers off.
                sqlx::query("DELETE FROM phone_digests WHERE id BETWEEN $1 AND $2")
                    .bind(first)
                    .bind(last)
                    .execute(&mut *conn)
                    .await?;
            }
            let digests_written = write_digests!(conn, phones, &states, &digested, &ids, &digests);
            super::import_keeps_digests(&mut *conn, false).await?;
            if few {
                super::probe_joins(&mut *conn, false).await?;
            }
            let updated_at = started.elapsed();
            if quiet {
                super::loud_change_log(&mut *conn).await?;
            }
            tracing::debug!(
                stage_ms = (staged_at - compared).as_millis() as u64,
                update_ms = (updated_at - staged_at).as_millis() as u64,
                digests_written,
                change_log_ms = (started.elapsed() - updated_at).as_millis() as u64,
                "bulk phone import: written"
            );
            super::drop_staging(&mut *conn).await?;
            tracing::info!(
                phones = n,
                rows_written = writes,
                quiet,
                compare_ms = compared.as_millis() as u64,
                write_ms = (started.elapsed() - compared).as_millis() as u64,
                "bulk phone import"
            );
            if let Some(progress) = progress {
                progress(done + n as u64);
            }
            Ok(())
        }
    };
}

pub(crate) use bulk_sql;

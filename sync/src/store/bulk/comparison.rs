//! The comparison of a run with the stored rows, fed row by row as a
//! backend reads them ([`Stored`]), with what it found per phone and line.
//!
//! Rows come back in about the order they went in, which is the order of a
//! file imported again: each phone row is first tried against the phone
//! after the last one found, then against the one as far from it as the
//! row's id is from its id (ids were given in a run's order, and a row
//! read out of place keeps its id), and an index is built only when those
//! guesses fail. Lines name their phone by id. Read after every phone, a
//! line is placed the same way (its phone is the last line's or the
//! next), then by an index of the ids read. Read beside the phones, a line looks for its
//! phone among those read lately, in the order they were read (the two
//! tables were written in the same order), a little ahead of the last
//! line's or a little behind it (a row updated in place moves within its
//! page); a line that lies elsewhere is kept aside until every phone is
//! read, up to a bound, after which lines wait for every phone.

use super::compare::{find, same_secret, Sorted};
use super::{LineState, PhoneState, Stored, StoredLine, StoredPhone};
use crate::crypto::{Purpose, SecretKey};
use crate::model::Id;
use crate::store::{Kept, PhoneBatch};

/// Phones read lately, kept for lines to look among. (Small in unit
/// tests, so that each bound is reached.)
const RECENT: usize = if cfg!(test) { 32 } else { 1 << 16 };
/// How far past the last line's phone a line looks for its own.
const LOOK_AHEAD: u64 = if cfg!(test) { 8 } else { 64 };
/// How far before it: a row updated in place (PostgreSQL's HOT update,
/// which the lines' fill factor makes the common case) is read at the end
/// of its page, up to a page of rows (~35 lines) late. Without this, every
/// line edited since its phone was last written came back kept aside, and
/// after a few imports of 10,000 changes the bound made lines wait for
/// every phone.
const LOOK_BEHIND: u64 = if cfg!(test) { 8 } else { 64 };
/// Phones read ahead of the lines, at most: the phone stream waits beyond,
/// so the phones a line looks behind at are still among the recent ones.
const AHEAD: u64 = RECENT as u64 - LOOK_BEHIND;
/// Bytes of lines kept aside (copied) while phones are still read: ~25,000
/// lines of the bench's rows, as many as lie out of order after a few
/// imports that changed 10,000 lines each.
const KEPT_ASIDE_BYTES: usize = if cfg!(test) { 2048 } else { 4 << 20 };
/// A phone read that is not in the run.
const NOT_IN_RUN: u32 = u32::MAX;

pub(crate) struct Comparison<'r> {
    key: &'r SecretKey,
    phones: &'r PhoneBatch,
    tenant_ids: &'r [Option<Id>],
    /// Each phone's stored id (where its state is not `New`).
    pub ids: Vec<Id>,
    pub states: Vec<PhoneState>,
    /// Per line of the batch (`PhoneBatch::line_range`).
    pub lines: Vec<LineState>,
    pub line_ids: Vec<Id>,
    /// Stored lines past the end of their phone's lines in the run.
    pub gone: Vec<Id>,
    /// Phone and line rows read.
    pub stored_rows: u64,
    /// How the read went beside the phones, for the debug log.
    pub held: Held,
    by_mac: Sorted<crate::model::Mac>,
    by_id: Sorted<Id>,
    next_phone: usize,
    /// The last phone found: (stored id, index in the run).
    last_found: Option<(Id, usize)>,
    next_line: usize,
    phones_read: bool,
    beside: Option<Beside>,
}

/// Rows held back while lines came beside the phones.
#[derive(Default, Debug)]
pub(crate) struct Held {
    /// Phone rows refused (too far ahead of the lines).
    pub phones: u64,
    /// Line rows refused (their phone not read yet).
    pub lines: u64,
    pub kept_aside: u64,
    /// Whether lines ended up waiting for every phone.
    pub lines_waited_for_all: bool,
}

/// While lines come beside the phones.
struct Beside {
    /// (stored id, index in the run) of the phones read lately, by read
    /// number modulo [`RECENT`].
    recent: Vec<(Id, u32)>,
    read: u64,
    /// The read number of the last line's phone.
    cursor: u64,
    aside: Aside,
    /// Too many lines out of order: the rest wait for every phone.
    wait_for_all: bool,
}

impl<'r> Comparison<'r> {
    /// `tenant_ids`: the stored id of each of the batch's tenants.
    pub(crate) fn new(
        key: &'r SecretKey,
        phones: &'r PhoneBatch,
        tenant_ids: &'r [Option<Id>],
    ) -> Self {
        Comparison {
            key,
            phones,
            tenant_ids,
            ids: vec![0; phones.len()],
            states: vec![PhoneState::New; phones.len()],
            lines: vec![LineState::Missing; phones.total_lines()],
            line_ids: vec![0; phones.total_lines()],
            gone: Vec::new(),
            stored_rows: 0,
            held: Held::default(),
            by_mac: Sorted::default(),
            by_id: Sorted::default(),
            next_phone: 0,
            last_found: None,
            next_line: 0,
            phones_read: false,
            beside: None,
        }
    }

    fn tenant_id(&self, i: usize) -> Id {
        self.tenant_ids[self.phones.tenant_index(i)].unwrap_or_default()
    }

    /// Whether the row was taken (see [`Stored`]).
    pub(crate) fn offer(&mut self, stored: Stored<'_>) -> bool {
        match stored {
            Stored::Beside => {
                self.beside = Some(Beside {
                    recent: vec![(0, NOT_IN_RUN); RECENT],
                    read: 0,
                    cursor: 0,
                    aside: Aside::default(),
                    wait_for_all: false,
                });
                true
            }
            Stored::Phone(row) => self.phone(row),
            Stored::PhonesRead => {
                self.phones_read = true;
                self.by_mac = Sorted::default();
                if let Some(beside) = self.beside.take() {
                    for k in 0..beside.aside.rows.len() {
                        self.line_after_phones(&beside.aside.get(k));
                    }
                }
                true
            }
            Stored::Line(row) if self.phones_read => {
                self.stored_rows += 1;
                self.line_after_phones(&row);
                true
            }
            Stored::Line(row) => self.line_beside(&row),
        }
    }

    fn phone(&mut self, row: StoredPhone<'_>) -> bool {
        if let Some(beside) = &self.beside {
            if !beside.wait_for_all && beside.read - beside.cursor >= AHEAD {
                self.held.phones += 1;
                return false;
            }
        }
        self.stored_rows += 1;
        // A row read out of place (written into an earlier page's free
        // space, or moved by an update) keeps its id, and ids were given
        // in the run's order: its place is as far from the last phone
        // found as its id is from that phone's.
        let by_id = self.last_found.and_then(|(id, at)| {
            let at = (at as i64).checked_add(row.id.checked_sub(id)?)?;
            usize::try_from(at).ok()
        });
        let found = find(
            self.phones,
            &mut self.by_mac,
            self.next_phone,
            by_id,
            row.mac,
        );
        if let Some(beside) = &mut self.beside {
            let at = (beside.read % RECENT as u64) as usize;
            beside.recent[at] = (row.id, found.map_or(NOT_IN_RUN, |i| i as u32));
            beside.read += 1;
        }
        let Some(i) = found else {
            return true;
        };
        self.next_phone = i + 1;
        self.last_found = Some((row.id, i));
        let p = self.phones.get(i);
        self.ids[i] = row.id;
        // A field the run keeps as stored is no difference. The seal's
        // HMAC last: any other difference decides first.
        let given = |field: Kept| !p.kept.contains(field);
        let changed = row.tenant_id != self.tenant_id(i)
            || row.family != p.family.as_str().as_bytes()
            || (given(Kept::MODEL) && row.model != p.model.map(str::as_bytes))
            || (given(Kept::LABEL) && row.label != p.label.map(str::as_bytes))
            || (given(Kept::VARIABLES) && row.variables != p.variables.as_bytes())
            || (given(Kept::HTTP_USER) && row.http_user != p.http_user.map(str::as_bytes))
            || (given(Kept::HTTP_PASSWORD)
                && !same_secret(
                    self.key,
                    Purpose::DeviceHttpPassword,
                    p.http_password,
                    row.http_password,
                ));
        // Whatever the run keeps, a phone moving tenants keeps nothing: its
        // lines' kept fields (a file without `password`) no more than its own.
        self.states[i] = if row.tenant_id != self.tenant_id(i) {
            PhoneState::Moved
        } else if changed {
            PhoneState::Changed
        } else {
            PhoneState::Same
        };
        true
    }

    fn line_beside(&mut self, row: &StoredLine<'_>) -> bool {
        let Some(beside) = &mut self.beside else {
            // A backend that reads lines after phones only: not yet.
            return false;
        };
        if beside.wait_for_all {
            return false;
        }
        let end = beside.read.min(beside.cursor + LOOK_AHEAD);
        let is_its_phone = |k: u64| beside.recent[(k % RECENT as u64) as usize].0 == row.phone_id;
        // Never behind what the ring still holds (phones stop AHEAD past
        // the cursor, so this only guards).
        let oldest = (beside.cursor.saturating_sub(LOOK_BEHIND))
            .max(beside.read.saturating_sub(RECENT as u64));
        let found = (beside.cursor..end)
            .find(|&k| is_its_phone(k))
            .or_else(|| (oldest..beside.cursor).rev().find(|&k| is_its_phone(k)));
        match found {
            Some(k) => {
                // A late line leaves the cursor where the lines are.
                beside.cursor = beside.cursor.max(k);
                let i = beside.recent[(k % RECENT as u64) as usize].1;
                if i != NOT_IN_RUN {
                    self.compare_line(i as usize, row);
                }
                self.stored_rows += 1;
                true
            }
            // Its phone may be among the next ones read.
            None if end < beside.cursor + LOOK_AHEAD => {
                self.held.lines += 1;
                false
            }
            None if beside.aside.bytes() < KEPT_ASIDE_BYTES => {
                beside.aside.push(row);
                self.held.kept_aside += 1;
                self.stored_rows += 1;
                true
            }
            None => {
                beside.wait_for_all = true;
                self.held.lines_waited_for_all = true;
                false
            }
        }
    }

    fn line_after_phones(&mut self, row: &StoredLine<'_>) {
        let n = self.phones.len();
        let (states, ids) = (&self.states, &self.ids);
        let stored_id = |i: usize| (states[i] != PhoneState::New).then(|| ids[i]);
        let guess = [self.next_line, self.next_line + 1]
            .into_iter()
            .find(|&i| i < n && stored_id(i) == Some(row.phone_id));
        let Some(i) = guess.or_else(|| self.by_id.find(n, stored_id, &row.phone_id)) else {
            return;
        };
        self.next_line = i;
        self.compare_line(i, row);
    }

    fn compare_line(&mut self, i: usize, row: &StoredLine<'_>) {
        let moved = self.states[i] == PhoneState::Moved;
        if self.phones.kept(i).contains(Kept::LINES) && !moved {
            // Neither compared nor removed: the run gives no lines.
            return;
        }
        let range = self.phones.line_range(i);
        let Some(flat) = usize::try_from(row.position - 1)
            .ok()
            .filter(|&at| at < range.len())
            .map(|at| range.start + at)
        else {
            self.gone.push(row.id);
            return;
        };
        let line = self.phones.line(flat);
        let kept = |field: Kept| line.kept.contains(field);
        let same = line.extension.as_bytes() == row.extension
            && (kept(Kept::DISPLAY_NAME) || line.display_name.as_bytes() == row.display_name)
            && (kept(Kept::AUTH_USER) || line.auth_user.as_bytes() == row.auth_user)
            && line.registrar.as_bytes() == row.registrar
            && (kept(Kept::PROXY) || line.proxy.map(str::as_bytes) == row.proxy)
            && (kept(Kept::LINE_SETTINGS) || line.settings.as_bytes() == row.settings)
            && (kept(Kept::PASSWORD)
                || same_secret(self.key, Purpose::LinePassword, line.password, row.password));
        // Kept fields stay only with the account: the same extension on a
        // phone that stays with its tenant.
        let replaced =
            !line.kept.is_empty() && (moved || line.extension.as_bytes() != row.extension);
        self.lines[flat] = if replaced {
            LineState::Replaced
        } else if same {
            LineState::Same
        } else {
            LineState::Changed
        };
        self.line_ids[flat] = row.id;
    }
}

/// Lines kept aside: their rows' buffers are gone by the time they are
/// placed. One text buffer, as the batch keeps its own (a `String` a
/// field cost three times the bytes).
#[derive(Default)]
struct Aside {
    text: Vec<u8>,
    rows: Vec<AsideRow>,
}

struct AsideRow {
    id: Id,
    phone_id: Id,
    position: i32,
    /// Where each text field ends in `text` (the first starts at `start`).
    start: u32,
    ends: [u32; 7],
    /// Password and proxy present.
    present: [bool; 2],
}

impl Aside {
    fn bytes(&self) -> usize {
        self.text.len() + self.rows.len() * std::mem::size_of::<AsideRow>()
    }

    fn push(&mut self, row: &StoredLine<'_>) {
        let start = self.text.len() as u32;
        let mut ends = [0; 7];
        let fields = [
            row.extension,
            row.display_name,
            row.auth_user,
            row.password.unwrap_or_default(),
            row.registrar,
            row.proxy.unwrap_or_default(),
            row.settings,
        ];
        for (end, field) in ends.iter_mut().zip(fields) {
            self.text.extend_from_slice(field);
            *end = self.text.len() as u32;
        }
        self.rows.push(AsideRow {
            id: row.id,
            phone_id: row.phone_id,
            position: row.position,
            start,
            ends,
            present: [row.password.is_some(), row.proxy.is_some()],
        });
    }

    fn get(&self, k: usize) -> StoredLine<'_> {
        let row = &self.rows[k];
        let field = |i: usize| {
            let from = if i == 0 { row.start } else { row.ends[i - 1] };
            &self.text[from as usize..row.ends[i] as usize]
        };
        StoredLine {
            id: row.id,
            phone_id: row.phone_id,
            position: row.position,
            extension: field(0),
            display_name: field(1),
            auth_user: field(2),
            password: row.present[0].then(|| field(3)),
            registrar: field(4),
            proxy: row.present[1].then(|| field(5)),
            settings: field(6),
        }
    }
}

#[cfg(test)]
#[path = "comparison_tests.rs"]
mod tests;

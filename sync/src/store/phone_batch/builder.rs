//! [`PhoneBatchBuilder`]: a batch built a row at a time (a CSV file's
//! phones, whose lines may come in later rows).

use super::{put, Kept, LineRef, Packed, PhoneBatch, PhoneFields, PhoneRef};
use crate::model::Mac;
use crate::store::PhoneInput;

/// More text, phones or lines than a batch can address (4 GiB of text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFull;

/// Builds a batch whose phones' lines may come later and out of order (a
/// CSV file's rows): every phone is added as it comes, lines name their
/// phone and position, and [`PhoneBatchBuilder::finish`] groups and orders
/// them and drops the phones not kept.
#[derive(Default)]
pub struct PhoneBatchBuilder {
    batch: PhoneBatch,
    /// A small table: a run names a handful of tenants.
    tenant_index: foldhash::HashMap<Box<str>, u32>,
    /// Each line's phone, position and record, in the order added.
    lines: Vec<(u32, u32, u32)>,
    /// More than 32-bit offsets and indices address.
    full: bool,
}

const DROPPED: u32 = u32::MAX;
const KEPT: u32 = u32::MAX - 1;

impl PhoneBatchBuilder {
    /// Sized for about `phones` phones of `text` bytes: address space only,
    /// pages are touched as they fill.
    pub fn with_capacity(phones: usize, text: usize) -> Self {
        let mut b = PhoneBatchBuilder::default();
        b.batch.phones.reserve(phones);
        b.batch.text.reserve(text);
        b.lines.reserve(phones);
        b
    }

    pub fn len(&self) -> usize {
        self.batch.phones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.phones.is_empty()
    }

    /// Phone `i` as added (before `finish`).
    pub fn get(&self, i: usize) -> PhoneRef<'_> {
        self.batch.get(i)
    }

    pub fn mac(&self, i: usize) -> Mac {
        self.batch.phones[i].mac
    }

    /// Adds a phone without lines; it is dropped by `finish` unless kept.
    pub fn phone(&mut self, p: &PhoneFields<'_>) -> usize {
        let tenant = match self.tenant_index.get(p.tenant) {
            Some(&t) => t,
            None => {
                let t = self.batch.tenants.len() as u32;
                self.batch.tenants.push(p.tenant.into());
                self.tenant_index.insert(p.tenant.into(), t);
                t
            }
        };
        let at = self.offset();
        self.batch.keeps |= !p.kept.is_empty();
        let text = &mut self.batch.text;
        text.push(p.kept.phone_byte());
        put(text, p.model);
        put(text, p.label);
        put(text, Some(p.variables));
        put(text, p.http_user);
        put(text, p.http_password);
        self.batch.phones.push(Packed {
            at,
            first_line: DROPPED,
            tenant,
            mac: p.mac,
            family: p.family,
        });
        self.full |= self.batch.phones.len() >= KEPT as usize;
        self.batch.phones.len() - 1
    }

    /// Adds a line to phone `phone` at `position` (1 is first).
    pub fn line(&mut self, phone: usize, position: u32, l: &LineRef<'_>) {
        let at = self.offset();
        self.batch.keeps |= !l.kept.is_empty();
        let text = &mut self.batch.text;
        text.push(l.kept.line_byte());
        put(text, Some(l.extension));
        put(text, Some(l.display_name));
        put(text, Some(l.auth_user));
        put(text, l.password);
        put(text, Some(l.registrar));
        put(text, l.proxy);
        put(text, Some(l.settings));
        self.lines.push((phone as u32, position, at));
    }

    /// A whole phone with its lines, in order; not kept until `keep`.
    pub fn input(&mut self, p: &PhoneInput) -> usize {
        let i = self.phone(&PhoneFields {
            tenant: &p.tenant,
            mac: p.mac,
            family: p.family,
            model: p.model.as_deref(),
            label: p.label.as_deref(),
            variables: &p.variables,
            http_user: p.http_user.as_deref(),
            http_password: p.http_password.as_deref(),
            kept: Kept::NONE,
        });
        for (n, l) in p.lines.iter().enumerate() {
            self.line(i, n as u32 + 1, &l.into());
        }
        i
    }

    /// Drops every phone from the `len`-th on, with their lines and text.
    /// Every line added after phone `len` must be one of theirs, as when
    /// phones come whole ([`PhoneBatchBuilder::input`]).
    pub fn truncate(&mut self, len: usize) {
        let Some(first) = self.batch.phones.get(len) else {
            return;
        };
        self.batch.text.truncate(first.at as usize);
        self.batch.phones.truncate(len);
        self.lines.retain(|&(phone, _, _)| (phone as usize) < len);
        debug_assert!(self
            .lines
            .iter()
            .all(|l| (l.2 as usize) < self.batch.text.len()));
    }

    /// Where the next record starts.
    fn offset(&mut self) -> u32 {
        let at = u32::try_from(self.batch.text.len());
        self.full |= at.is_err();
        at.unwrap_or(0)
    }

    /// More was added than a batch can address: `finish` will refuse it,
    /// and phones read back before it may not be what was added.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Phone `i` goes into the batch.
    pub fn keep(&mut self, i: usize) {
        self.batch.phones[i].first_line = KEPT;
    }

    /// Phone `i` (a later row of the same phone) is not a phone of its
    /// own: its lines are `into`'s.
    pub fn merge(&mut self, i: usize, into: usize) {
        self.batch.phones[i].first_line = into as u32;
    }

    /// Groups lines by phone (the order added within a phone), orders
    /// each phone's lines by position, and drops the phones not kept and
    /// those whose positions do not run 1, 2, 3... Tells `each` what
    /// became of every phone kept, in order (by its index as added).
    /// Phones keep the order they were added in.
    pub fn finish(mut self, mut each: impl FnMut(Finished<'_>)) -> Result<PhoneBatch, BatchFull> {
        if self.full {
            return Err(BatchFull);
        }
        let phones = &self.batch.phones;
        let owner = |phone: u32| match phones[phone as usize].first_line {
            DROPPED | KEPT => phone,
            into => into,
        };
        for line in &mut self.lines {
            line.0 = owner(line.0);
        }
        // Stable: a phone's lines stay in the order they came.
        if !self.lines.is_sorted_by_key(|l| l.0) {
            self.lines.sort_by_key(|l| l.0);
        }
        let mut lines: Vec<u32> = Vec::with_capacity(self.lines.len());
        let mut groups = self.lines.chunk_by_mut(|a, b| a.0 == b.0).peekable();
        let mut positions = Vec::new();
        // Compacted in place: no second vector of phones.
        let mut kept = 0;
        for i in 0..self.batch.phones.len() {
            let group: &mut [(u32, u32, u32)] = match groups.peek() {
                Some(g) if g[0].0 as usize == i => groups.next().unwrap_or_default(),
                _ => &mut [],
            };
            let mut p = self.batch.phones[i];
            if p.first_line != KEPT {
                continue;
            }
            if !group.iter().enumerate().all(|(n, l)| l.1 == n as u32 + 1) {
                group.sort_by_key(|l| l.1);
                positions.clear();
                positions.extend(group.iter().map(|l| l.1));
                if positions
                    .iter()
                    .enumerate()
                    .any(|(n, &at)| at != n as u32 + 1)
                {
                    each(Finished::BadLines(i, p.mac, &positions));
                    continue;
                }
            }
            p.first_line = u32::try_from(lines.len()).map_err(|_| BatchFull)?;
            lines.extend(group.iter().map(|l| l.2));
            self.batch.phones[kept] = p;
            kept += 1;
            each(Finished::Kept(i));
        }
        self.batch.phones.truncate(kept);
        self.batch.phones.shrink_to_fit();
        self.batch.lines = lines;
        Ok(self.batch)
    }
}

/// What became of a phone in [`PhoneBatchBuilder::finish`].
#[derive(Debug, PartialEq, Eq)]
pub enum Finished<'a> {
    /// Phone `.0` (as added) is in the batch, next in order.
    Kept(usize),
    /// Phone `.0` is dropped: its lines' positions, sorted, do not run 1,
    /// 2, 3...
    BadLines(usize, Mac, &'a [u32]),
}

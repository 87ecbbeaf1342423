//! A run of phone upserts held compactly, for imports of a million phones:
//! every text field of every phone and line in one shared buffer, a
//! phone's tenant as an index into a small table, and per phone 20 bytes
//! of fixed fields and 4 per line. As `PhoneInput`s with a `Location`
//! each, a phone with one line cost ~1.2 KB of heap in a dozen
//! allocations (the line vector alone reserved four 168-byte slots); here
//! it costs its text plus 24 bytes, which is what keeps an import's peak
//! memory near its file's size.
//!
//! Fields are read back borrowed ([`PhoneRef`], [`LineRef`]); the bulk
//! path compares and stages from them without materialising a phone.

use std::ops::Range;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{LineInput, PhoneInput};
use crate::model::{Family, Mac};

/// Phones in order; phone `i`'s lines are `lines[phones[i].first_line ..
/// phones[i + 1].first_line]` (the last phone's run to the end).
///
/// In `text`, a phone's record holds its [`Kept`] fields as one ASCII
/// byte, then model, label, variables, http_user and http_password; a
/// line's record its kept fields' byte, then extension, display_name,
/// auth_user, password, registrar, proxy and settings. Each field is its
/// length plus one (0: absent) as a varint of ASCII bytes (six bits each,
/// 0x40 when more follow), then its text. So `text` is one `String`, and a
/// field is read back by slicing it, without checking its UTF-8 again (that
/// check had been 4% of a re-import's time).
#[derive(Clone, Default)]
pub struct PhoneBatch {
    text: String,
    tenants: Vec<Box<str>>,
    phones: Vec<Packed>,
    /// Offsets into `text` of each line's record. Offsets are 32 bits (4
    /// GiB of text, tens of millions of phones): a batch past that is
    /// refused ([`BatchFull`]) rather than costing every phone 8 bytes more.
    lines: Vec<u32>,
    /// Whether any phone or line keeps a stored field.
    keeps: bool,
}

/// Fields an import leaves as they are stored: for a phone or line that
/// exists, the field is neither compared nor written; a new one takes the
/// value the batch holds (the field's default). One bit per field, a
/// phone's in the low six bits and a line's in the next five, so that
/// each half fits one ASCII byte of a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kept(u16);

impl Kept {
    pub const NONE: Kept = Kept(0);
    pub const MODEL: Kept = Kept(1);
    pub const LABEL: Kept = Kept(1 << 1);
    pub const VARIABLES: Kept = Kept(1 << 2);
    pub const HTTP_USER: Kept = Kept(1 << 3);
    pub const HTTP_PASSWORD: Kept = Kept(1 << 4);
    /// The phone's whole line list: no line is added, changed or removed.
    pub const LINES: Kept = Kept(1 << 5);
    pub const DISPLAY_NAME: Kept = Kept(1 << 6);
    pub const AUTH_USER: Kept = Kept(1 << 7);
    pub const PASSWORD: Kept = Kept(1 << 8);
    pub const PROXY: Kept = Kept(1 << 9);
    pub const LINE_SETTINGS: Kept = Kept(1 << 10);
    const PHONE_BITS: u16 = 0x3f;
    const LINE_SHIFT: u32 = 6;

    pub fn contains(self, field: Kept) -> bool {
        self.0 & field.0 == field.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn bits(self) -> u16 {
        self.0
    }

    /// The phone's half, as its record's first byte.
    fn phone_byte(self) -> char {
        char::from((self.0 & Self::PHONE_BITS) as u8)
    }

    /// The line's half, as its record's first byte.
    fn line_byte(self) -> char {
        char::from((self.0 >> Self::LINE_SHIFT) as u8 & 0x3f)
    }

    fn from_phone_byte(byte: u8) -> Kept {
        Kept(u16::from(byte))
    }

    fn from_line_byte(byte: u8) -> Kept {
        Kept(u16::from(byte) << Self::LINE_SHIFT)
    }
}

impl std::ops::BitOr for Kept {
    type Output = Kept;
    fn bitor(self, other: Kept) -> Kept {
        Kept(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Kept {
    fn bitor_assign(&mut self, other: Kept) {
        self.0 |= other.0;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed {
    /// Offset into `text` of the phone's record.
    at: u32,
    /// While a builder holds the phone: what becomes of it (`DROPPED`,
    /// `KEPT`, or the phone it is merged into).
    first_line: u32,
    tenant: u32,
    mac: Mac,
    family: Family,
}

/// One phone of a batch, its text borrowed from the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhoneRef<'a> {
    pub mac: Mac,
    pub family: Family,
    pub tenant: &'a str,
    /// The tenant's place in [`PhoneBatch::tenants`].
    pub tenant_index: usize,
    pub model: Option<&'a str>,
    pub label: Option<&'a str>,
    pub variables: &'a str,
    pub http_user: Option<&'a str>,
    pub http_password: Option<&'a str>,
    /// The phone's fields (and whether its line list) left as stored.
    pub kept: Kept,
}

/// One line of a phone of a batch (see [`LineInput`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRef<'a> {
    pub extension: &'a str,
    pub display_name: &'a str,
    pub auth_user: &'a str,
    pub password: Option<&'a str>,
    pub registrar: &'a str,
    pub proxy: Option<&'a str>,
    pub settings: &'a str,
    /// The line's fields left as stored.
    pub kept: Kept,
}

impl<'a> From<&'a LineInput> for LineRef<'a> {
    fn from(l: &'a LineInput) -> Self {
        LineRef {
            extension: &l.extension,
            display_name: &l.display_name,
            auth_user: &l.auth_user,
            password: l.password.as_deref(),
            registrar: &l.registrar,
            proxy: l.proxy.as_deref(),
            settings: &l.settings,
            kept: Kept::NONE,
        }
    }
}

impl LineRef<'_> {
    pub fn to_input(&self) -> LineInput {
        LineInput {
            extension: self.extension.into(),
            display_name: self.display_name.into(),
            auth_user: self.auth_user.into(),
            password: self.password.map(Into::into),
            registrar: self.registrar.into(),
            proxy: self.proxy.map(Into::into),
            settings: self.settings.into(),
        }
    }
}

/// A phone's fields other than its lines, as [`PhoneBatchBuilder::phone`]
/// takes them.
#[derive(Clone, Copy, Debug)]
pub struct PhoneFields<'a> {
    pub tenant: &'a str,
    pub mac: Mac,
    pub family: Family,
    pub model: Option<&'a str>,
    pub label: Option<&'a str>,
    pub variables: &'a str,
    pub http_user: Option<&'a str>,
    pub http_password: Option<&'a str>,
    pub kept: Kept,
}

fn put(text: &mut String, field: Option<&str>) {
    let mut n = field.map_or(0, |f| f.len() as u64 + 1);
    loop {
        let group = (n & 0x3f) as u8;
        n >>= 6;
        if n == 0 {
            text.push(char::from(group));
            break;
        }
        text.push(char::from(group | 0x40));
    }
    if let Some(f) = field {
        text.push_str(f);
    }
}

/// Reads the fields of one record in order.
struct Fields<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Fields<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let mut n = 0u64;
        let mut shift = 0;
        loop {
            let byte = bytes[self.at];
            self.at += 1;
            n |= u64::from(byte & 0x3f) << shift;
            if byte & 0x40 == 0 {
                break;
            }
            shift += 6;
        }
        let len = n.checked_sub(1)? as usize;
        let field = &self.text[self.at..self.at + len];
        self.at += len;
        Some(field)
    }

    fn text(&mut self) -> &'a str {
        self.next().unwrap_or("")
    }
}

impl PhoneBatch {
    pub fn len(&self) -> usize {
        self.phones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.phones.is_empty()
    }

    /// The distinct tenant slugs the phones name, indexed by
    /// [`PhoneRef::tenant_index`].
    pub fn tenants(&self) -> &[Box<str>] {
        &self.tenants
    }

    pub fn mac(&self, i: usize) -> Mac {
        self.phones[i].mac
    }

    pub fn family(&self, i: usize) -> Family {
        self.phones[i].family
    }

    pub fn tenant_index(&self, i: usize) -> usize {
        self.phones[i].tenant as usize
    }

    pub fn get(&self, i: usize) -> PhoneRef<'_> {
        let p = &self.phones[i];
        let mut f = Fields {
            text: &self.text,
            at: p.at as usize + 1,
        };
        PhoneRef {
            mac: p.mac,
            family: p.family,
            tenant: &self.tenants[p.tenant as usize],
            tenant_index: p.tenant as usize,
            model: f.next(),
            label: f.next(),
            variables: f.text(),
            http_user: f.next(),
            http_password: f.next(),
            kept: Kept::from_phone_byte(self.text.as_bytes()[p.at as usize]),
        }
    }

    /// Phone `i`'s lines as indices into every line of the batch (so one
    /// flat array can hold a value per line).
    pub fn line_range(&self, i: usize) -> Range<usize> {
        let start = self.phones[i].first_line as usize;
        let end = self
            .phones
            .get(i + 1)
            .map_or(self.lines.len(), |p| p.first_line as usize);
        start..end
    }

    /// Every line of the batch.
    pub fn total_lines(&self) -> usize {
        self.lines.len()
    }

    /// Line `flat` of the batch (see [`PhoneBatch::line_range`]).
    pub fn line(&self, flat: usize) -> LineRef<'_> {
        let at = self.lines[flat] as usize;
        let mut f = Fields {
            text: &self.text,
            at: at + 1,
        };
        LineRef {
            extension: f.text(),
            display_name: f.text(),
            auth_user: f.text(),
            password: f.next(),
            registrar: f.text(),
            proxy: f.next(),
            settings: f.text(),
            kept: Kept::from_line_byte(self.text.as_bytes()[at]),
        }
    }

    /// Phone `i`'s kept fields, without reading its others.
    pub fn kept(&self, i: usize) -> Kept {
        Kept::from_phone_byte(self.text.as_bytes()[self.phones[i].at as usize])
    }

    /// Every phone's kept fields, then every line's.
    fn kept_marks(&self) -> impl Iterator<Item = Kept> + '_ {
        let phones = (0..self.len()).map(|i| self.get(i).kept);
        phones.chain((0..self.total_lines()).map(|l| self.line(l).kept))
    }

    /// Whether any phone or line leaves a field as stored.
    pub fn keeps_any(&self) -> bool {
        self.keeps
    }

    /// Phone `i` as a whole input: fields it keeps read as the batch holds
    /// them (their defaults), see [`PhoneBatch::keeps_any`].
    pub fn to_input(&self, i: usize) -> PhoneInput {
        let p = self.get(i);
        PhoneInput {
            tenant: p.tenant.into(),
            mac: p.mac,
            family: p.family,
            model: p.model.map(Into::into),
            label: p.label.map(Into::into),
            variables: p.variables.into(),
            http_user: p.http_user.map(Into::into),
            http_password: p.http_password.map(Into::into),
            lines: self
                .line_range(i)
                .map(|l| self.line(l).to_input())
                .collect(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = PhoneInput> + '_ {
        (0..self.len()).map(|i| self.to_input(i))
    }

    /// Takes phone `i` out (its text stays in the buffer): a rejected
    /// phone skipped by `dialtone import --skip-invalid`.
    pub fn remove(&mut self, i: usize) {
        let lines = self.line_range(i);
        let removed = lines.len() as u32;
        self.lines.drain(lines);
        self.phones.remove(i);
        for p in &mut self.phones[i..] {
            p.first_line -= removed;
        }
    }

    /// Takes out every phone whose place `gone` lists (ascending), in one
    /// pass: many phones refused for one reason (an unknown tenant) cost
    /// one copy, not one shift of the batch each.
    pub fn remove_all(&mut self, gone: &[usize]) {
        if gone.is_empty() {
            return;
        }
        let mut gone = gone.iter().copied().peekable();
        let mut phones = Vec::with_capacity(self.phones.len().saturating_sub(gone.len()));
        let mut lines = Vec::with_capacity(self.lines.len());
        for i in 0..self.phones.len() {
            if gone.next_if_eq(&i).is_some() {
                continue;
            }
            let range = self.line_range(i);
            phones.push(Packed {
                first_line: lines.len() as u32,
                ..self.phones[i]
            });
            lines.extend_from_slice(&self.lines[range]);
        }
        self.phones = phones;
        self.lines = lines;
    }

    /// Whether no MAC is given twice (the bulk path needs one phone per
    /// MAC). MACs already rising need no more; otherwise a copy of them is
    /// sorted, as numbers (8 bytes a phone, not a hash map's 16 to 32; a
    /// number compares in one step where six bytes took a loop).
    pub fn macs_distinct(&self) -> bool {
        if self.phones.windows(2).all(|w| w[0].mac < w[1].mac) {
            return true;
        }
        let mut macs: Vec<u64> = self.phones.iter().map(|p| p.mac.number()).collect();
        macs.sort_unstable();
        macs.windows(2).all(|w| w[0] != w[1])
    }
}

impl<'a> FromIterator<&'a PhoneInput> for PhoneBatch {
    fn from_iter<I: IntoIterator<Item = &'a PhoneInput>>(phones: I) -> Self {
        let mut builder = PhoneBatchBuilder::default();
        for p in phones {
            let i = builder.input(p);
            builder.keep(i);
        }
        // Lines come in order and every phone is kept: nothing to report.
        builder.finish(|_| {}).unwrap_or_default()
    }
}

/// The same phones with the same lines, in the same order (the buffers may
/// differ: a builder leaves merged rows' text behind).
impl PartialEq for PhoneBatch {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.iter().eq(other.iter())
            && self.kept_marks().eq(other.kept_marks())
    }
}

impl Eq for PhoneBatch {}

impl std::fmt::Debug for PhoneBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// As whole phones: a batch sent this way keeps no stored field (only an
/// import's own files do).
impl Serialize for PhoneBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PhoneBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let phones = Vec::<PhoneInput>::deserialize(d)?;
        Ok(phones.iter().collect())
    }
}

mod builder;
pub use builder::{BatchFull, Finished, PhoneBatchBuilder};

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(n: u8, lines: usize) -> PhoneInput {
        PhoneInput {
            tenant: format!("t{}", n % 3),
            mac: Mac([0, 0x15, 0x65, 0, 0, n]),
            family: Family::ALL[n as usize % Family::ALL.len()],
            model: n.is_multiple_of(2).then(|| format!("model {n}")),
            label: None,
            variables: if n.is_multiple_of(4) {
                "{}".into()
            } else {
                format!("{{\"n\":{n}}}")
            },
            http_user: n.is_multiple_of(3).then(|| "admin".into()),
            http_password: n.is_multiple_of(3).then(|| "x".repeat(200)),
            lines: (0..lines)
                .map(|l| LineInput {
                    extension: format!("{n}{l}"),
                    display_name: format!("Line {l} of {n}"),
                    auth_user: String::new(),
                    password: (l % 2 == 0).then(|| "é".repeat(70)),
                    registrar: "sip.example.net".into(),
                    proxy: (l == 1).then(|| "proxy".into()),
                    settings: "{}".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn inputs_come_back_as_they_went_in() {
        let inputs: Vec<PhoneInput> = (0..40).map(|n| phone(n, n as usize % 4)).collect();
        let batch: PhoneBatch = inputs.iter().collect();
        assert_eq!(batch.len(), 40);
        assert_eq!(batch.iter().collect::<Vec<_>>(), inputs);
        assert_eq!(batch.tenants().len(), 3);
        assert_eq!(batch.get(5).tenant, "t2");
        assert_eq!(batch.line_range(3), 3..6);
        let json = serde_json::to_string(&batch).unwrap();
        let back: PhoneBatch = serde_json::from_str(&json).unwrap();
        assert_eq!(back, batch);
    }

    /// The import's memory target rests on these (BENCHMARKS.md, round 4).
    #[test]
    fn fields_of_every_length_class_come_back() {
        // Around each step of the varint (one ASCII byte holds 6 bits).
        for len in [0, 1, 61, 62, 63, 64, 4093, 4094, 4095, 4096, 300_000] {
            let mut input = phone(1, 1);
            input.label = Some("ü".repeat(len / 2) + &"x".repeat(len % 2));
            input.lines[0].display_name = "y".repeat(len);
            let batch: PhoneBatch = std::iter::once(&input).collect();
            assert_eq!(batch.iter().next().unwrap(), input, "length {len}");
        }
    }

    #[test]
    fn fixed_fields_stay_small() {
        assert_eq!(std::mem::size_of::<Packed>(), 20);
        let batch: PhoneBatch = [phone(1, 1)].iter().collect();
        assert_eq!(std::mem::size_of_val(&batch.lines[0]), 4);
    }

    #[test]
    fn remove_all_is_removing_each() {
        let inputs: Vec<PhoneInput> = (0..12).map(|n| phone(n, n as usize % 4)).collect();
        let gone = [0, 3, 4, 11];
        let mut batch: PhoneBatch = inputs.iter().collect();
        batch.remove_all(&gone);
        let expected: Vec<PhoneInput> = (0..12)
            .filter(|n| !gone.contains(n))
            .map(|n| inputs[n].clone())
            .collect();
        assert_eq!(batch.iter().collect::<Vec<_>>(), expected);
        batch.remove_all(&[]);
        assert_eq!(batch.len(), 8);
    }

    #[test]
    fn remove_keeps_the_others_lines() {
        let inputs: Vec<PhoneInput> = (0..6).map(|n| phone(n, 2)).collect();
        let mut batch: PhoneBatch = inputs.iter().collect();
        batch.remove(2);
        let mut expected = inputs.clone();
        expected.remove(2);
        assert_eq!(batch.iter().collect::<Vec<_>>(), expected);
        assert_eq!(batch.total_lines(), 10);
    }

    #[test]
    fn builder_groups_orders_and_drops() {
        let mut b = PhoneBatchBuilder::default();
        let a = phone(1, 0);
        let line = |ext: &str| LineInput {
            extension: ext.into(),
            ..phone(0, 1).lines.remove(0)
        };
        let first = b.input(&a);
        b.keep(first);
        b.line(first, 2, &(&line("102")).into());
        let gap = b.input(&phone(2, 0));
        b.keep(gap);
        b.line(gap, 2, &(&line("202")).into());
        let again = b.input(&a);
        b.merge(again, first);
        b.line(again, 1, &(&line("101")).into());
        let dropped = b.input(&phone(3, 1));
        let last = b.input(&phone(4, 1));
        b.keep(last);
        let _ = dropped;
        let mut bad = Vec::new();
        let mut kept = Vec::new();
        let batch = b
            .finish(|f| match f {
                Finished::Kept(i) => kept.push(i),
                Finished::BadLines(i, mac, p) => bad.push((i, mac, p.to_vec())),
            })
            .unwrap();
        assert_eq!(bad, [(gap, phone(2, 0).mac, vec![2])]);
        assert_eq!(kept, [first, last]);
        assert_eq!(batch.len(), 2);
        let got = batch.to_input(0);
        let extensions: Vec<&str> = got.lines.iter().map(|l| l.extension.as_str()).collect();
        assert_eq!(extensions, ["101", "102"]);
        assert_eq!(batch.to_input(1), phone(4, 1));
    }
}

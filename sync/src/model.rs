//! Schema types shared by every crate. These are the rows of the mirrored
//! tables as the mirror holds them: compact (`Box<str>`), cheap to clone behind
//! an `Arc`, and serializable into the snapshot file. Fields that repeat
//! across many rows (model, registrar, empty settings) are `Arc<str>`, shared
//! through [`crate::intern`] at load time.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::crypto::Sealed;
use crate::error::SyncError;

pub type Id = i64;

/// Milliseconds since the Unix epoch; the only time type the schema uses, so
/// both backends store it the same way.
pub type Millis = i64;

/// Why text holding U+0000 is refused wherever it comes in (an import's
/// row, the API, the database's own refusal): PostgreSQL cannot store it in
/// text, and SQLite would keep it to be cut short wherever a C string is
/// made of it.
pub const NUL_TEXT: &str = "contains U+0000 (NUL), which no text field may hold";

/// `str::trim`, answered without decoding a character when the text is
/// empty or both its ends are visible ASCII, as nearly every cell of an
/// import is: a phones row trims about a dozen cells, and `trim`'s search
/// from each end was ~6% of a million-row parse.
pub(crate) fn trim(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (None, _) => text,
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

/// `text` cut to at most `max` bytes, at a character boundary: for text a
/// client or a template sets that is kept in a queue, a cache or a row.
pub fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The time `retain` before `now`, for pruning what is older. `now` is
/// never this node's clock as it reads: a forward step would prune all
/// (PostgreSQL reads the database's, SQLite its store's prune clock).
/// Saturates: a retention longer than the clock reaches back prunes
/// nothing, where a wrapped one would have put the cutoff in the future
/// and pruned all.
pub fn cutoff_before(now: Millis, retain: std::time::Duration) -> Millis {
    let retain = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
    now.saturating_sub(retain)
}

/// The mirrored tables. The change log names rows by `(Entity, Id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Entity {
    Tenant,
    Phone,
    Line,
    Template,
    DirectoryEntry,
    DirectorySource,
    ApiToken,
}

impl Entity {
    pub const ALL: [Entity; 7] = [
        Entity::Tenant,
        Entity::Phone,
        Entity::Line,
        Entity::Template,
        Entity::DirectoryEntry,
        Entity::DirectorySource,
        Entity::ApiToken,
    ];

    pub fn table(self) -> &'static str {
        match self {
            Entity::Tenant => "tenants",
            Entity::Phone => "phones",
            Entity::Line => "lines",
            Entity::Template => "templates",
            Entity::DirectoryEntry => "directory_entries",
            Entity::DirectorySource => "directory_sources",
            Entity::ApiToken => "api_tokens",
        }
    }

    pub fn from_table(table: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.table() == table)
    }
}

/// A MAC address, normalized. Displayed as 12 lowercase hex digits, which is
/// also how the database stores it, so lookups never depend on input style.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The OUI (vendor prefix) as a 24-bit number.
    pub fn oui(&self) -> u32 {
        u32::from_be_bytes([0, self.0[0], self.0[1], self.0[2]])
    }

    pub fn to_upper(&self) -> String {
        self.to_string().to_ascii_uppercase()
    }

    /// The address as a number, ordered as the MACs are.
    pub fn number(&self) -> u64 {
        let [a, b, c, d, e, f] = self.0;
        u64::from_be_bytes([0, 0, a, b, c, d, e, f])
    }

    /// The twelve lowercase hex digits, without a formatter: imports write
    /// a million of them.
    pub fn hex(&self) -> [u8; 12] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 12];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        out
    }

    /// A MAC given for a new phone (the API's create, an import): an
    /// address a phone can have. The spelling is [`Mac::from_str`]'s, as
    /// it always was: spreadsheets hold MACs in many shapes
    /// (`0015-65aa-bbcc`, `001565-aabbcc`), and an import that read them
    /// before must read them again.
    pub fn parse_new(text: &str) -> Result<Mac, SyncError> {
        let given = trim(text);
        let mac: Mac = given.parse()?;
        let why_not = if mac.0 == [0; 6] {
            Some("it is all zeros")
        } else if mac.0 == [0xff; 6] {
            Some("it is the broadcast address")
        } else if mac.0[0] & 1 == 1 {
            Some("it is a group (multicast) address: its first byte is odd")
        } else {
            None
        };
        match why_not {
            Some(why) => Err(SyncError::Invalid(format!(
                "{mac} is no phone's MAC address: {why}"
            ))),
            None => Ok(mac),
        }
    }
}

impl FromStr for Mac {
    type Err = SyncError;

    /// Accepts `001565aabbcc`, `00:15:65:AA:BB:CC`, `00-15-65-aa-bb-cc` and
    /// Cisco's `0015.65aa.bbcc`; anything else is an error, never a guess.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || SyncError::Invalid(format!("not a MAC address: {s:?}"));
        let trimmed = trim(s);
        let mut digits = [0u8; 12];
        let mut n = 0;
        // Bytes, not chars: anything outside ASCII is invalid either way,
        // and a million-phone import parses a MAC a row.
        for b in trimmed.bytes() {
            let digit = match b {
                b':' | b'-' | b'.' => continue,
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(invalid()),
            };
            if n == 12 {
                return Err(invalid());
            }
            digits[n] = digit;
            n += 1;
        }
        if n != 12 {
            return Err(invalid());
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = (digits[2 * i] << 4) | digits[2 * i + 1];
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        f.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident ($noun:literal) { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = SyncError;
            /// Any ASCII case; compared in place, since an import names a
            /// family a row and a lowercased copy was an allocation each.
            fn from_str(s: &str) -> Result<Self, SyncError> {
                let wanted = trim(s);
                $(if wanted.eq_ignore_ascii_case($text) {
                    return Ok($name::$variant);
                })+
                // The client's text is cut: a 60 KB family name was
                // echoed whole into the 422 and every import report line.
                Err(SyncError::Invalid(format!(
                    concat!("unknown ", $noun, " {:?}; expected one of: {}"),
                    crate::log_text(s),
                    [$($text),+].join(", ")
                )))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Vendor families, as named in `docs/vendors.md`.
    Family ("family") {
        Yealink = "yealink",
        Poly = "poly",
        CiscoSpa = "cisco-spa",
        CiscoMpp = "cisco-mpp",
        CiscoSep = "cisco-sep",
        Grandstream = "grandstream",
        Snom = "snom",
        Fanvil = "fanvil",
    }
);

text_enum!(
    /// Where a template applies, most specific last.
    TemplateScope ("template scope") {
        Family = "family",
        Model = "model",
        Tenant = "tenant",
        Phone = "phone",
    }
);

text_enum!(
    SourceKind ("source kind") {
        Ldap = "ldap",
        Http = "http",
    }
);

text_enum!(
    TokenScope ("token scope") {
        GlobalAdmin = "global-admin",
        TenantAdmin = "tenant-admin",
        TenantRead = "tenant-read",
        Lookup = "lookup",
    }
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: Id,
    pub slug: Box<str>,
    pub name: Box<str>,
    /// ISO 3166 alpha-2 region used to read national phone numbers.
    pub default_region: Box<str>,
    /// JSON object text.
    pub settings: Box<str>,
    pub updated_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    pub id: Id,
    pub tenant_id: Id,
    pub mac: Mac,
    pub family: Family,
    #[serde(
        serialize_with = "crate::intern::ser_opt",
        deserialize_with = "crate::intern::de_opt"
    )]
    pub model: Option<Arc<str>>,
    pub label: Option<Box<str>>,
    /// JSON object text: per-phone template variables.
    #[serde(
        serialize_with = "crate::intern::ser",
        deserialize_with = "crate::intern::de"
    )]
    pub variables: Arc<str>,
    pub http_user: Option<Box<str>>,
    pub http_password: Option<Sealed>,
    pub updated_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub id: Id,
    pub phone_id: Id,
    /// 1-based line key position on the phone.
    pub position: i32,
    pub extension: Box<str>,
    pub display_name: Box<str>,
    pub auth_user: Box<str>,
    pub password: Option<Sealed>,
    #[serde(
        serialize_with = "crate::intern::ser",
        deserialize_with = "crate::intern::de"
    )]
    pub registrar: Arc<str>,
    #[serde(
        serialize_with = "crate::intern::ser_opt",
        deserialize_with = "crate::intern::de_opt"
    )]
    pub proxy: Option<Arc<str>>,
    /// JSON object text.
    #[serde(
        serialize_with = "crate::intern::ser",
        deserialize_with = "crate::intern::de"
    )]
    pub settings: Arc<str>,
    pub updated_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub id: Id,
    pub scope: TemplateScope,
    pub family: Family,
    /// Empty for family defaults; the model name, tenant id or MAC otherwise.
    pub scope_key: Box<str>,
    /// The file name (pattern) this template renders, e.g. `{mac}.cfg`.
    pub file_pattern: Box<str>,
    pub body: Box<str>,
    pub version: i64,
    pub updated_by: Box<str>,
    pub updated_at: Millis,
}

/// The natural key of a template: at most one live template per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TemplateKey {
    pub scope: TemplateScope,
    pub family: Family,
    pub scope_key: Box<str>,
    pub file_pattern: Box<str>,
}

impl Template {
    pub fn key(&self) -> TemplateKey {
        TemplateKey {
            scope: self.scope,
            family: self.family,
            scope_key: self.scope_key.clone(),
            file_pattern: self.file_pattern.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirectoryNumber {
    /// As the directory holds it; normalization happens in directory/.
    pub number: Box<str>,
    /// work, mobile, home, fax, other...
    pub kind: Box<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub id: Id,
    pub tenant_id: Id,
    /// Key from the system this entry was imported from; makes imports idempotent.
    pub external_id: Option<Box<str>>,
    pub name: Box<str>,
    pub company: Option<Box<str>>,
    pub numbers: Vec<DirectoryNumber>,
    pub updated_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorySource {
    pub id: Id,
    pub tenant_id: Id,
    pub name: Box<str>,
    pub kind: SourceKind,
    /// Lower runs first; the local directory is priority 0.
    pub priority: i32,
    pub enabled: bool,
    /// JSON object text: URL, base DN, filter, attributes...
    pub settings: Box<str>,
    /// LDAP bind password or HTTP credential.
    pub secret: Option<Sealed>,
    pub timeout_ms: i32,
    pub updated_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: Id,
    pub name: Box<str>,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub token_hash: Box<str>,
    pub scope: TokenScope,
    pub tenant_id: Option<Id>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked: bool,
    pub updated_at: Millis,
}

/// One row of any mirrored table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Row {
    Tenant(Tenant),
    Phone(Phone),
    Line(Line),
    Template(Template),
    DirectoryEntry(DirectoryEntry),
    DirectorySource(DirectorySource),
    ApiToken(ApiToken),
}

impl Row {
    pub fn entity(&self) -> Entity {
        match self {
            Row::Tenant(_) => Entity::Tenant,
            Row::Phone(_) => Entity::Phone,
            Row::Line(_) => Entity::Line,
            Row::Template(_) => Entity::Template,
            Row::DirectoryEntry(_) => Entity::DirectoryEntry,
            Row::DirectorySource(_) => Entity::DirectorySource,
            Row::ApiToken(_) => Entity::ApiToken,
        }
    }

    pub fn id(&self) -> Id {
        match self {
            Row::Tenant(r) => r.id,
            Row::Phone(r) => r.id,
            Row::Line(r) => r.id,
            Row::Template(r) => r.id,
            Row::DirectoryEntry(r) => r.id,
            Row::DirectorySource(r) => r.id,
            Row::ApiToken(r) => r.id,
        }
    }
}

/// Every mirrored row, as read by a cold load or from a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    pub tenants: Vec<Tenant>,
    pub phones: Vec<Phone>,
    pub lines: Vec<Line>,
    pub templates: Vec<Template>,
    pub directory_entries: Vec<DirectoryEntry>,
    pub directory_sources: Vec<DirectorySource>,
    pub api_tokens: Vec<ApiToken>,
}

impl Dataset {
    pub fn push(&mut self, row: Row) {
        match row {
            Row::Tenant(r) => self.tenants.push(r),
            Row::Phone(r) => self.phones.push(r),
            Row::Line(r) => self.lines.push(r),
            Row::Template(r) => self.templates.push(r),
            Row::DirectoryEntry(r) => self.directory_entries.push(r),
            Row::DirectorySource(r) => self.directory_sources.push(r),
            Row::ApiToken(r) => self.api_tokens.push(r),
        }
    }

    /// Sorted by id so two datasets compare equal regardless of read order.
    pub fn sort(&mut self) {
        self.tenants.sort_by_key(|r| r.id);
        self.phones.sort_by_key(|r| r.id);
        self.lines.sort_by_key(|r| r.id);
        self.templates.sort_by_key(|r| r.id);
        self.directory_entries.sort_by_key(|r| r.id);
        self.directory_sources.sort_by_key(|r| r.id);
        self.api_tokens.sort_by_key(|r| r.id);
    }

    pub fn row_count(&self) -> usize {
        self.tenants.len()
            + self.phones.len()
            + self.lines.len()
            + self.templates.len()
            + self.directory_entries.len()
            + self.directory_sources.len()
            + self.api_tokens.len()
    }
}

/// Position in the change log. PostgreSQL: `(txid, seq)` where txid is the
/// writing transaction's xid8; SQLite: `(0, seq)`, since SQLite has one writer
/// and sequence order is commit order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Cursor {
    pub txid: i64,
    pub seq: i64,
}

/// PostgreSQL: the transactions above a cursor that a read of the change log
/// already saw. The cursor itself stops at the oldest transaction still
/// writing, so while one stays open (a long import, a session left in a
/// transaction) every later commit sits above it; without this, each catch-up
/// would fetch them all again and, past `max_catch_up_rows`, reload the
/// whole mirror at every poll until that transaction ends. Every transaction
/// below `xmax` and not in `running` had ended when the read was taken, so
/// its rows were read then; only `running` and those from `xmax` on can
/// still bring rows. Held in memory beside the cursor, never persisted: a
/// mirror without it reads everything above its cursor once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenAbove {
    pub xmax: i64,
    /// Sorted.
    pub running: Vec<i64>,
}

impl SeenAbove {
    /// Parses PostgreSQL's `pg_snapshot` text, `xmin:xmax:xip,...`, into
    /// the snapshot's xmin and what a read under it saw.
    pub fn from_pg_snapshot(text: &str) -> Option<(i64, SeenAbove)> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let mut running = parts
            .next()?
            .split(',')
            .filter(|x| !x.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<i64>, _>>()
            .ok()?;
        running.sort_unstable();
        (xmin <= xmax).then_some((xmin, SeenAbove { xmax, running }))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.txid, self.seq)
    }
}

/// The meta row: a schema epoch that forces every node to reload when bumped,
/// and how far the change log has been pruned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub epoch: i64,
    pub pruned_through: Cursor,
    /// Random at creation: a snapshot from another database is never applied.
    pub database_id: String,
    /// PostgreSQL's WAL timeline, read with the rows (load, catch-up);
    /// `None` on SQLite, when the read failed, or from a snapshot older
    /// than format 6. A promoted standby keeps the database id and issues
    /// transaction ids the lost primary already gave out, so only this
    /// tells its log from the one the cursor was in. Outside the encoding
    /// (the snapshot and its freshness file carry it as fields of their
    /// own): the snapshot header's layout stays that of format 5.
    #[serde(skip)]
    pub timeline: Option<u32>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_retention_past_the_clock_prunes_nothing() {
        let now = now_millis();
        assert!(cutoff_before(now, Duration::MAX) < 0);
        assert!(cutoff_before(now, Duration::from_secs(u64::MAX)) < 0);
        let day = cutoff_before(now, Duration::from_secs(86_400));
        assert_eq!(day, now - 86_400_000);
    }

    use super::*;

    #[test]
    fn mac_accepts_common_spellings() {
        for s in [
            "001565aabbcc",
            "00:15:65:AA:BB:CC",
            "00-15-65-aa-bb-cc",
            "0015.65aa.bbcc",
        ] {
            assert_eq!(s.parse::<Mac>().unwrap().to_string(), "001565aabbcc", "{s}");
        }
        assert_eq!("001565aabbcc".parse::<Mac>().unwrap().oui(), 0x001565);
    }

    #[test]
    fn mac_rejects_garbage() {
        for s in [
            "",
            "001565aabbc",
            "001565aabbccd",
            "00:15:65:aa:bb:cg",
            "x01565aabbcc",
        ] {
            assert!(s.parse::<Mac>().is_err(), "{s}");
        }
    }

    #[test]
    fn enums_round_trip_text() {
        for f in Family::ALL {
            assert_eq!(f.as_str().parse::<Family>().unwrap(), *f);
        }
        assert!("nokia".parse::<Family>().is_err());
        assert!("".parse::<Family>().is_err());
        assert!("yealinkk".parse::<Family>().is_err());
    }

    #[test]
    fn enums_take_any_ascii_case_and_surrounding_space() {
        for text in [" Yealink", "YEALINK\t", "\u{a0}yeaLINK\u{3000}"] {
            assert_eq!(text.parse::<Family>().unwrap(), Family::Yealink, "{text:?}");
        }
        assert_eq!("Cisco-MPP".parse::<Family>().unwrap(), Family::CiscoMpp);
        // Only ASCII letters fold: the Kelvin sign, whose lowercase is `k`,
        // does not spell yealink.
        assert!("yealin\u{212a}".parse::<Family>().is_err());
    }

    #[test]
    fn trim_answers_as_str_trim_does() {
        let texts = [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\ta\n",
            "\u{a0}a",
            "a\u{3000}",
            "\u{2028}",
            "é",
            " é ",
            "\u{85}x",
            "x\u{85}",
            "a b",
            "~",
            "\u{7f}a",
            "a\u{1}",
        ];
        for text in texts {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("abc", 10), "abc");
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip("€€", 5), "€");
        assert_eq!(clip("€", 0), "");
    }
}

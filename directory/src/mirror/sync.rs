//! Reading a directory for its mirror. The server is the tenant's and may
//! be hostile: pages, entries, bytes and time are all capped here, values
//! past a sane size are dropped, and nothing the server sends is put in a
//! filter unchecked and unescaped.

use std::collections::HashMap;
use std::time::Duration;

use ldap3::controls::{Control, PagedResults, RawControl};
use ldap3::{ldap_escape, Ldap, Scope, SearchEntry};

use super::budget::{next_entry, ByteBudget};
use super::{RawEntry, Watermark};
use crate::error::DirectoryError;
use crate::ldap::{server_text, LdapSource};
use crate::ldap_wire::element;
use crate::source_label::SourceLabel;

const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// A DN past this is not a person's; the entry is skipped.
const MAX_DN: usize = 1024;
/// Characters of a name kept: past them it is no name.
const MAX_NAME: usize = crate::name::MAX_RAW_NAME_CHARS;
const MAX_NUMBER: usize = 64;
const MAX_NUMBERS_PER_ENTRY: usize = 16;
/// Attribute bytes a sync reads per entry it may keep, on average.
const BYTES_PER_ENTRY: usize = 8 * 1024;
/// A root DSE is one entry, and only two attributes of it are asked for.
const MAX_ROOT_DSE_BYTES: usize = 64 * 1024;
/// A paging cookie is an opaque handle, not a payload.
const MAX_COOKIE: usize = 4096;

/// What one search of a sync may pass on before the relay closes the
/// connection (`ldap_searches.rs`). A server that ignores paging sends
/// everything in one search, and the read counts only entries it keeps
/// and only their attributes' bytes, so the relay allows twice what a
/// whole read may hold: the read stops at its own limits first, and a
/// server that sends past those faster than they are read is cut off.
pub(crate) fn search_bounds(max_entries: usize) -> crate::ldap_searches::SearchBounds {
    crate::ldap_searches::SearchBounds {
        entries: max_entries.saturating_mul(2).saturating_add(16),
        bytes: max_entries
            .saturating_mul(2 * BYTES_PER_ENTRY)
            .saturating_add(crate::ldap_wire::MAX_MESSAGE),
        past: crate::ldap_searches::Past::Close,
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_entries: usize,
    pub page_size: i32,
    /// Each LDAP operation (one page) at most.
    pub op_timeout: Duration,
}

impl Limits {
    fn max_pages(&self) -> usize {
        // Servers may return short pages (AD's MaxPageSize, filtered
        // entries); four times the pages a full read needs is generous,
        // and a server paging empty pages forever still stops.
        (self.max_entries / self.page_size.max(1) as usize + 1) * 4 + 16
    }

    fn max_bytes(&self) -> usize {
        self.max_entries.saturating_mul(BYTES_PER_ENTRY)
    }
}

/// What one read brought: the entries, whether `max_entries` cut it short,
/// and the newest `modifyTimestamp` seen.
#[derive(Debug, Default)]
pub struct Read {
    pub entries: Vec<RawEntry>,
    pub capped: bool,
    pub newest: Option<String>,
}

/// What a server's root DSE says about its changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootDse {
    /// Active Directory's `highestCommittedUSN`.
    pub usn: Option<u64>,
    /// Its `dsServiceName`, the DN of the DC's NTDS Settings object: a USN
    /// counts that DC's own changes, and means nothing on another DC.
    pub dc: Option<Box<str>>,
}

/// How this server shows changes, read from its root DSE: AD publishes
/// `highestCommittedUSN` and the DC it is of; others are asked for
/// `modifyTimestamp` on entries. An unreadable root DSE is an `Ldap` error
/// (full syncs only); one that breaks a bound (more than one entry, too
/// many bytes, not done in `timeout`) is a `MirrorLimit`, and the server
/// is read no further.
pub async fn root_dse(ldap: &mut Ldap, timeout: Duration) -> Result<RootDse, DirectoryError> {
    let failed: fn(_) -> _ = |e: ldap3::LdapError| {
        DirectoryError::Ldap(format!("root DSE: {}", server_text(&e.to_string())))
    };
    let read = async {
        let mut stream = ldap
            .with_timeout(timeout)
            .streaming_search(
                "",
                Scope::Base,
                "(objectClass=*)",
                vec!["highestCommittedUSN", "dsServiceName"],
            )
            .await
            .map_err(failed)?;
        let mut budget = ByteBudget::new("root DSE", MAX_ROOT_DSE_BYTES);
        let mut root = RootDse::default();
        let mut seen = false;
        while let Some(entry) = next_entry(&mut stream, &mut budget, failed).await? {
            if seen {
                // A base search names one entry; a server sending more
                // would go on for as long as it is read.
                return Err(DirectoryError::MirrorLimit(
                    "root DSE: more than one entry".into(),
                ));
            }
            seen = true;
            root = RootDse {
                usn: first(&entry.attrs, "highestCommittedUSN").and_then(|v| v.trim().parse().ok()),
                // Kept in the mirror file: bounded like an entry's DN.
                dc: first(&entry.attrs, "dsServiceName")
                    .filter(|dc| !dc.is_empty() && dc.len() <= MAX_DN)
                    .map(Box::from),
            };
        }
        stream.finish().await.success().map_err(failed)?;
        Ok(root)
    };
    // ldap3's timeout is per message: a server trickling messages is cut here.
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(DirectoryError::MirrorLimit(format!(
                "root DSE: not read within {} s",
                timeout.as_secs()
            )))
        })
}

/// Why an incremental read from `since` could miss changes on the server
/// whose root DSE said `root`, if it could: the read must be a full one
/// then. A `modifyTimestamp` is the entry's own on any server. A USN holds
/// on the DC it came from alone (an LDAP URL may lead to several DCs, or
/// to another after a failover), and only while that DC's count has not
/// gone back (a DC restored from a backup counts again from the backup's).
/// A watermark naming no DC, on a server that names one, may be another
/// DC's: an older release's file, read once in full.
pub fn usn_mismatch(since: &Watermark, root: &RootDse) -> Option<&'static str> {
    let (usn, dc) = match since {
        Watermark::ModifyTimestamp(_) => return None,
        Watermark::Usn(usn) => (*usn, None),
        Watermark::DcUsn { usn, dc } => (*usn, Some(&**dc)),
    };
    match (dc, root.dc.as_deref()) {
        (None, Some(_)) => Some("the watermark names no domain controller"),
        (Some(_), None) => Some("the server no longer names its domain controller"),
        (Some(was), Some(now)) if was != now => Some("another domain controller answered"),
        _ if root.usn.is_some_and(|now| now < usn) => {
            Some("the domain controller's USN went back (restored from a backup?)")
        }
        _ => None,
    }
}

/// `since`, or `None` (read in full) if it does not hold on the server
/// whose root DSE said `root` ([`usn_mismatch`]), saying why.
pub fn since_on_this_server(
    source: &SourceLabel,
    since: Option<Watermark>,
    root: &RootDse,
) -> Option<Watermark> {
    let since = since?;
    let Some(why) = usn_mismatch(&since, root) else {
        return Some(since);
    };
    let dc = server_text(root.dc.as_deref().unwrap_or("none"));
    tracing::info!(
        tenant = source.tenant,
        source_id = source.id,
        source = ?source.name,
        why,
        %dc,
        "reading the directory in full, not incrementally"
    );
    None
}

impl RootDse {
    /// Where the next incremental read starts after a full read that
    /// started when the root DSE said this and saw `newest` as its newest
    /// `modifyTimestamp`.
    pub fn watermark(&self, newest: Option<String>) -> Option<Watermark> {
        match (self.usn, &self.dc) {
            (Some(usn), Some(dc)) => Some(Watermark::DcUsn {
                usn,
                dc: dc.clone(),
            }),
            (Some(usn), None) => Some(Watermark::Usn(usn)),
            (None, _) => newest.map(Watermark::ModifyTimestamp),
        }
    }

    /// Where the next incremental read starts after one from `since`
    /// (which [`since_on_this_server`] let through) that read all that
    /// changed: a USN moves on to this one, a time to a newer `newest`.
    pub fn watermark_after(&self, since: Watermark, newest: Option<String>) -> Watermark {
        match since {
            Watermark::ModifyTimestamp(old) => {
                Watermark::ModifyTimestamp(newest.filter(|new| *new > old).unwrap_or(old))
            }
            usn => self.watermark(None).unwrap_or(usn),
        }
    }
}

/// The search filter: the source's own, entries with a number, and for an
/// incremental read only what changed since `since`. Without the number
/// clause an incremental read also returns entries that lost their
/// numbers, so the merge can drop them.
pub fn filter(
    source_filter: Option<&str>,
    number_attributes: &[String],
    since: Option<&Watermark>,
) -> String {
    let mut parts = String::new();
    if let Some(f) = source_filter {
        parts.push_str(f);
    }
    match since {
        None => {
            parts.push_str("(|");
            for attr in number_attributes {
                parts.push_str(&format!("({attr}=*)"));
            }
            parts.push(')');
        }
        Some(Watermark::Usn(usn) | Watermark::DcUsn { usn, .. }) => {
            parts.push_str(&format!("(uSNChanged>={})", usn.saturating_add(1)));
        }
        Some(Watermark::ModifyTimestamp(at)) => {
            parts.push_str(&format!("(modifyTimestamp>={})", ldap_escape(at.as_str())));
        }
    }
    format!("(&{parts})")
}

/// A GeneralizedTime as servers write `modifyTimestamp`
/// (`20261130145500Z`, maybe with a fraction): the only shape accepted
/// back into a filter.
pub fn is_generalized_time(value: &str) -> bool {
    let Some(body) = value.strip_suffix('Z') else {
        return false;
    };
    let (whole, fraction) = body.split_once('.').unwrap_or((body, "0"));
    whole.len() == 14
        && whole.bytes().all(|b| b.is_ascii_digit())
        && !fraction.is_empty()
        && fraction.len() <= 9
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// Reads every entry `filter` matches, page by page (RFC 2696).
pub async fn read_all(
    source: &LdapSource,
    ldap: &mut Ldap,
    filter: &str,
    limits: Limits,
) -> Result<Read, DirectoryError> {
    let settings = source.settings();
    let mut attrs = settings.requested_attributes();
    attrs.extend(settings.number_attributes.iter().cloned());
    attrs.push("modifyTimestamp".into());
    let failed: fn(_) -> _ = |e: ldap3::LdapError| {
        DirectoryError::Ldap(format!("search: {}", server_text(&e.to_string())))
    };
    let mut budget = ByteBudget::new("search", limits.max_bytes());
    let (mut read, mut cookie) = (Read::default(), Vec::new());
    for _ in 0..limits.max_pages() {
        let control = RawControl::from(PagedResults {
            size: limits.page_size,
            cookie: std::mem::take(&mut cookie),
        });
        let mut stream = ldap
            .with_timeout(limits.op_timeout)
            .with_controls(vec![control])
            .streaming_search(&settings.base_dn, source.scope(), filter, &attrs)
            .await
            .map_err(failed)?;
        while let Some(entry) = next_entry(&mut stream, &mut budget, failed).await? {
            if read.entries.len() >= limits.max_entries {
                read.capped = true;
                break;
            }
            if let Some(at) = first(&entry.attrs, "modifyTimestamp") {
                if is_generalized_time(at) && read.newest.as_deref().is_none_or(|n| at > n) {
                    read.newest = Some(at.to_string());
                }
            }
            if let Some(raw) = raw_entry(source, entry) {
                read.entries.push(raw);
            }
        }
        if read.capped {
            // Closing the connection ends the search; it is not reused.
            return Ok(read);
        }
        let done = stream.finish().await;
        budget.charge_result(&done)?;
        if done.rc != 0 {
            // A size or time limit here means a partial read, which would
            // drop every entry not read: the old mirror is better.
            return Err(DirectoryError::Ldap(format!(
                "search failed: rc={} {}",
                done.rc,
                server_text(&done.text)
            )));
        }
        cookie = done
            .ctrls
            .iter()
            .find_map(|Control(_, raw)| (raw.ctype == PAGED_RESULTS_OID).then(|| paged_cookie(raw)))
            .flatten()
            .unwrap_or_default();
        if cookie.len() > MAX_COOKIE {
            return Err(DirectoryError::MirrorLimit(
                "paging cookie too large".into(),
            ));
        }
        if cookie.is_empty() {
            return Ok(read);
        }
    }
    Err(DirectoryError::MirrorLimit(format!(
        "more than {} pages",
        limits.max_pages()
    )))
}

/// The cookie of a paged-results response control (a SEQUENCE of the
/// size estimate and the cookie), read without recursion: the value is an
/// OCTET STRING to the relay's check, so the server may nest anything in
/// it, and a recursive BER parser (ldap3's) would overflow a worker's
/// stack on a deep enough nesting; ldap3's control parser panics on a
/// malformed value besides.
fn paged_cookie(raw: &RawControl) -> Option<Vec<u8>> {
    let (value, _) = element(raw.val.as_deref()?)?;
    let (estimate, rest) = element(value.content)?;
    let (cookie, _) = element(rest)?;
    let shape = value.tag == 0x30 && estimate.tag == 0x02 && cookie.tag == 0x04;
    shape.then(|| cookie.content.to_vec())
}

fn first<'a>(attrs: &'a HashMap<String, Vec<String>>, name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

/// The parts of an entry the mirror keeps, each bounded.
fn raw_entry(source: &LdapSource, entry: SearchEntry) -> Option<RawEntry> {
    if entry.dn.len() > MAX_DN {
        return None;
    }
    // A longer one is no name when it is shown (`crate::name`).
    let name = source
        .name_of(&entry.attrs)
        .filter(|n| n.chars().nth(MAX_NAME).is_none())
        .map(Into::into);
    let mut numbers: Vec<Box<str>> = Vec::new();
    for attr in &source.settings().number_attributes {
        let values = entry
            .attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
            .flat_map(|(_, v)| v);
        for value in values {
            let value = value.trim();
            if !value.is_empty()
                && value.len() <= MAX_NUMBER
                && numbers.len() < MAX_NUMBERS_PER_ENTRY
                && !numbers.iter().any(|n| **n == *value)
            {
                numbers.push(value.into());
            }
        }
    }
    Some(RawEntry {
        dn: entry.dn.into(),
        name,
        numbers,
    })
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;

//! The tenant's directory served to its phones, in each family's own XML:
//! Yealink `YealinkIPPhoneDirectory`, Cisco `CiscoIPPhoneDirectory` (with
//! paging and search), Poly `<mac>-directory.xml`, Snom
//! `SnomIPPhoneDirectory`, Grandstream `AddressBook`, sorted by name so
//! the bytes only change when the data does.
//!
//! A large tenant's directory is costly to sort and write, and every phone
//! of the tenant fetches the same one, so it is built on the render pool
//! under the tenant's share and kept in the render cache per tenant, family
//! and query, until the tenant's directory stamp or row changes.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;

use dialtone_sync::{DirectoryEntry, Family, MirrorState, Phone};
use sha2::{Digest, Sha256};

use crate::error::ProvisionError;
use crate::files::{hex, Step};
use crate::identify::{FileKind, Identity};
use crate::provision::{Provisioner, Rendered};
use crate::render_cache::{DirectoryKey, Inputs, RenderKey};

#[path = "phonebook_text.rs"]
mod text;
use text::{dial_string, split_name};

#[path = "phonebook_query.rs"]
mod query;
use query::form_encode;
pub use query::Query;

/// Cisco phones show at most 32 entries per page.
pub const CISCO_PAGE: usize = 32;

/// Pages of a paged directory kept in the render cache, per phone; later
/// ones are built each time, like searches, under the tenant's share and
/// at a cost to their source (`directory_budget.rs`). A directory at the
/// entry quota is thousands of pages per phone's MAC, which anyone who
/// knows one could otherwise walk into the cache every tenant shares.
pub(crate) const CACHED_PAGES: usize = 16;

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() || noncharacter(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A Unicode noncharacter: U+FDD0 to U+FDEF and the last two of every
/// plane. U+FFFE and U+FFFF are not XML 1.0 characters at all, so a name
/// holding one made the whole directory unreadable; the others are for a
/// program's own use, never for text it hands on.
fn noncharacter(c: char) -> bool {
    matches!(c, '\u{fdd0}'..='\u{fdef}') || u32::from(c) & 0xfffe == 0xfffe
}

/// Entries sorted by name (then id), each with its numbers in stored order.
pub fn sorted(entries: Vec<Arc<DirectoryEntry>>, search: Option<&str>) -> Vec<Arc<DirectoryEntry>> {
    // Each name lowercased once, not once per comparison.
    let mut keyed: Vec<(String, Arc<DirectoryEntry>)> = entries
        .into_iter()
        .map(|e| (e.name.to_lowercase(), e))
        .filter(|(name, e)| {
            search.is_none_or(|term| {
                name.contains(term)
                    || e.company
                        .as_deref()
                        .is_some_and(|c| c.to_lowercase().contains(term))
            })
        })
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// Whether `family` has a directory format here.
pub fn supported(family: Family) -> bool {
    family != Family::Fanvil
}

/// Whether the family's format pages (and links to its own URL).
fn paged(family: Family) -> bool {
    matches!(
        family,
        Family::CiscoSpa | Family::CiscoMpp | Family::CiscoSep
    )
}

/// Room kept for a document's closing lines when rows stop at the cap.
const CLOSING_ROOM: usize = 64;

/// A directory document: its text, and whether rows were left out to keep
/// it within its byte cap.
pub struct Document {
    pub text: String,
    pub truncated: bool,
}

/// Renders the directory for `family`, at most `max_bytes` of it (rows
/// past that are left out, the document still whole); `None` for families
/// without a directory format here (the request is then "not found").
pub fn render(
    family: Family,
    title: &str,
    entries: &[Arc<DirectoryEntry>],
    query: &Query,
    self_url: &str,
    max_bytes: usize,
) -> Option<Document> {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut truncated = false;
    // Whether the next row (or contact) still fits: a tenant's directory
    // holds up to 200,000 entries of 16 numbers, gigabytes of XML, which
    // no phone loads and no node should build.
    let mut room = |x: &String| {
        let fits = x.len() + CLOSING_ROOM < max_bytes;
        truncated |= !fits;
        fits
    };
    match family {
        Family::Yealink | Family::Snom => {
            let root = if family == Family::Yealink {
                "YealinkIPPhoneDirectory"
            } else {
                "SnomIPPhoneDirectory"
            };
            let _ = writeln!(x, "<{root}>\n  <Title>{}</Title>", esc(title));
            'rows: for e in entries {
                for n in &e.numbers {
                    if !room(&x) {
                        break 'rows;
                    }
                    let _ = writeln!(
                        x,
                        "  <DirectoryEntry>\n    <Name>{}</Name>\n    <Telephone>{}</Telephone>\n  </DirectoryEntry>",
                        esc(&e.name),
                        esc(&dial_string(&n.number))
                    );
                }
            }
            let _ = writeln!(x, "</{root}>");
        }
        Family::CiscoSpa | Family::CiscoMpp | Family::CiscoSep => {
            // Counted, not collected: a page needs 32 rows, not millions.
            let count: usize = entries.iter().map(|e| e.numbers.len()).sum();
            let rows = entries
                .iter()
                .flat_map(|e| e.numbers.iter().map(move |n| (&*e.name, &*n.number)));
            let pages = count.div_ceil(CISCO_PAGE).max(1);
            let page = query.page.min(pages - 1);
            let _ = writeln!(
                x,
                "<CiscoIPPhoneDirectory>\n  <Title>{}</Title>\n  <Prompt>{}</Prompt>",
                esc(title),
                esc(&format!("Page {} of {}", page + 1, pages))
            );
            for (name, number) in rows.skip(page * CISCO_PAGE).take(CISCO_PAGE) {
                let _ = writeln!(
                    x,
                    "  <DirectoryEntry>\n    <Name>{}</Name>\n    <Telephone>{}</Telephone>\n  </DirectoryEntry>",
                    esc(name),
                    esc(&dial_string(number))
                );
            }
            let search = query
                .search
                .as_deref()
                .map(|s| format!("&q={}", form_encode(s)))
                .unwrap_or_default();
            let mut position = 1;
            let mut key = |x: &mut String, name: &str, url: &str| {
                let _ = writeln!(
                    x,
                    "  <SoftKeyItem>\n    <Name>{}</Name>\n    <URL>{}</URL>\n    <Position>{position}</Position>\n  </SoftKeyItem>",
                    esc(name),
                    esc(url)
                );
                position += 1;
            };
            key(&mut x, "Dial", "SoftKey:Dial");
            if page > 0 {
                key(
                    &mut x,
                    "Prev",
                    &format!("{self_url}?page={}{search}", page - 1),
                );
            }
            if page + 1 < pages {
                key(
                    &mut x,
                    "Next",
                    &format!("{self_url}?page={}{search}", page + 1),
                );
            }
            key(&mut x, "Exit", "SoftKey:Exit");
            let _ = writeln!(x, "</CiscoIPPhoneDirectory>");
        }
        Family::Poly => {
            let _ = writeln!(x, "<directory>\n  <item_list>");
            // Poly keys its contacts by `ct`: a second item with the same
            // one is refused or overwrites the first, so the first wins.
            let mut dialed_before = HashSet::new();
            'items: for e in entries {
                let (first, last) = split_name(&e.name);
                for n in &e.numbers {
                    let dialed = dial_string(&n.number);
                    if dialed_before.contains(&dialed) {
                        continue;
                    }
                    if !room(&x) {
                        break 'items;
                    }
                    let _ = writeln!(
                        x,
                        "    <item>\n      <fn>{}</fn>\n      <ln>{}</ln>\n      <ct>{}</ct>\n    </item>",
                        esc(first),
                        esc(last),
                        esc(&dialed)
                    );
                    dialed_before.insert(dialed);
                }
            }
            let _ = writeln!(x, "  </item_list>\n</directory>");
        }
        Family::Grandstream => {
            let _ = writeln!(x, "<AddressBook>");
            for e in entries {
                // A contact's numbers are at most 16 rows of 64-byte
                // numbers: checked once a contact, it ends within the cap's
                // closing room plus that.
                if !room(&x) {
                    break;
                }
                let (first, last) = split_name(&e.name);
                let _ = writeln!(
                    x,
                    "  <Contact>\n    <LastName>{}</LastName>\n    <FirstName>{}</FirstName>",
                    esc(last),
                    esc(first)
                );
                for n in &e.numbers {
                    let _ = writeln!(
                        x,
                        "    <Phone type=\"{}\">\n      <phonenumber>{}</phonenumber>\n      <accountindex>1</accountindex>\n    </Phone>",
                        esc(&n.kind),
                        esc(&dial_string(&n.number))
                    );
                }
                let _ = writeln!(x, "  </Contact>");
            }
            let _ = writeln!(x, "</AddressBook>");
        }
        Family::Fanvil => return None,
    }
    Some(Document { text: x, truncated })
}

/// A directory `decide` could not answer from the cache; it owns what the
/// build needs, so it can run on the pool.
pub(crate) struct DirectoryJob {
    state: Arc<MirrorState>,
    key: RenderKey,
    template: &'static str,
    pub(crate) file: String,
}

impl DirectoryJob {
    pub(crate) fn tenant(&self) -> Option<dialtone_sync::Id> {
        self.key.directory.as_ref().map(|d| d.tenant)
    }

    /// Whether the build lands in the render cache, known before it runs
    /// so that one that will not is charged first (`directory_budget.rs`).
    /// Searches and pages from [`CACHED_PAGES`] on are not kept: anyone who
    /// knows a phone's MAC could otherwise fill the cache every tenant
    /// shares with a new term or page each request. A page before that is
    /// kept even past the last one (it holds the last page's rows): that
    /// is still at most [`CACHED_PAGES`] entries per phone, and none of
    /// them is built again and again uncharged.
    pub(crate) fn kept(&self) -> bool {
        self.key
            .directory
            .as_ref()
            .is_some_and(|which| which.search.is_none() && which.page < CACHED_PAGES)
    }
}

impl Provisioner {
    /// The phone's tenant directory from the cache, or a build to run.
    /// `state` and `phone` are the ones the request was decided on.
    pub(crate) fn directory_step(
        &self,
        state: &Arc<MirrorState>,
        phone: Option<&Arc<Phone>>,
        identity: &Identity,
        query: Option<&str>,
    ) -> Step {
        let Some(phone) = phone.filter(|p| supported(p.family)) else {
            return Step::Done(Err(ProvisionError::NotFound));
        };
        let query = Query::parse(query);
        let paged = paged(phone.family);
        let key = RenderKey {
            family: phone.family,
            // Only a paged format's bytes name the file (its page links);
            // the others are one entry for every phone of the tenant. The
            // name is the phone's one spelling, not the one asked: case is
            // free, and each spelling would be a page built and cached.
            file: if paged {
                identity
                    .template
                    .replace("{mac}", &phone.mac.to_string())
                    .into()
            } else {
                identity.template.into()
            },
            phone: None,
            model: None,
            directory: Some(DirectoryKey {
                tenant: phone.tenant_id,
                page: if paged { query.page } else { 0 },
                search: query.search.map(Box::from),
            }),
        };
        if let Some(hit) = self.rendered.get(&key, state, 0, None) {
            return Step::Done(Ok(hit));
        }
        metrics::counter!("dialtone_render_cache_total", "result" => "miss").increment(1);
        Step::Directory(Box::new(DirectoryJob {
            state: state.clone(),
            key,
            template: identity.template,
            file: identity.file.clone(),
        }))
    }

    /// Builds what `directory_step` could not answer from the cache, and
    /// caches it if it is still current and [`DirectoryJob::kept`]. A build
    /// that outlasts the caller's wait still lands in the cache for the
    /// next fetch. One that is not kept runs on the render pool under the
    /// tenant's share like any render, and its source paid for it first.
    pub(crate) fn build_directory(&self, job: DirectoryJob) -> Result<Rendered, ProvisionError> {
        let rendered = self.directory_file(&job.state, &job.key, job.template)?;
        if job.kept() {
            self.rendered.fill(
                job.key,
                &rendered,
                &self.mirror.load(),
                0,
                None,
                crate::render_cache::Asker::default(),
            );
        }
        Ok(rendered)
    }

    /// The directory `key` names, built from `state`, uncached.
    pub(crate) fn directory_file(
        &self,
        state: &MirrorState,
        key: &RenderKey,
        template: &'static str,
    ) -> Result<Rendered, ProvisionError> {
        let which = key.directory.as_ref().ok_or(ProvisionError::NotFound)?;
        let query = Query {
            page: which.page,
            search: which.search.as_deref().map(str::to_string),
        };
        let entries = sorted(state.directory_of(which.tenant), query.search.as_deref());
        let tenant = state.tenant(which.tenant);
        let title = tenant.map(|t| &*t.name).unwrap_or("Directory");
        let self_url = format!("{}/{}", self.options.base_url, key.file);
        let document = render(
            key.family,
            title,
            &entries,
            &query,
            &self_url,
            self.options.budget.output_bytes,
        )
        .ok_or(ProvisionError::NotFound)?;
        if document.truncated {
            metrics::counter!("dialtone_phone_directory_truncated_total").increment(1);
        }
        let body = document.text;
        let etag = format!("\"{}\"", hex(&Sha256::digest(body.as_bytes())[..16]));
        Ok(Rendered {
            body: body.into_bytes().into(),
            etag: etag.into(),
            content_type: "text/xml; charset=utf-8",
            kind: FileKind::PhoneDirectory,
            family: Some(key.family),
            file: None,
            inputs: Some(Arc::new(Inputs::directory(
                state,
                key.family,
                template,
                which.tenant,
            ))),
            unproven: None,
        })
    }
}

#[cfg(test)]
#[path = "phonebook_tests.rs"]
mod tests;

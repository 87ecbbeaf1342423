//! The LDAP / Active Directory source. ldap3 multiplexes operations over one
//! connection but neither pools nor reconnects, so each source keeps one
//! connection and builds a new one after any failure or timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, Scope, SearchOptions};
use tokio::sync::Mutex;

use crate::error::DirectoryError;
use crate::filter::{build_filter, number_forms};
use crate::ldap_searches::{Past, SearchBounds};
use crate::ldap_wire::{self, Security};
use crate::name::is_format;
use crate::networks::{resolve, SourceNetworks};
use crate::settings::{tls_config, LdapScope, LdapSettings};
use crate::source_label::SourceLabel;

/// LDAP result codes that still carry a usable answer.
const SUCCESS: u32 = 0;
const SIZE_LIMIT_EXCEEDED: u32 = 4;
/// A referral is an answer of "not here"; referrals are not chased, since
/// following one to another AD domain costs more time than a lookup has.
const REFERRAL: u32 = 10;
/// Attribute bytes read from one search at most.
const MAX_REPLY_BYTES: usize = 256 * 1024;
/// Characters of a server's own text (a diagnostic message) an error keeps.
const MAX_SERVER_TEXT: usize = 200;

/// Text a tenant's server chose (a result's diagnostic message, or an ldap3
/// error quoting one) or a tenant wrote (a URL, a DN), made fit for where
/// errors go: operators' terminals (`dialtone lookup`), logs and the admin
/// API. A terminal obeys escape sequences (ESC, OSC with BEL, CSI in C1),
/// so every control character becomes `?`, as do format characters (the
/// bidirectional overrides that reorder what is shown, and the invisible
/// ones); past `MAX_SERVER_TEXT` characters the text is cut, marked `…`.
pub fn server_text(text: &str) -> String {
    let mut chars = text.chars();
    let mut clean: String = chars
        .by_ref()
        .take(MAX_SERVER_TEXT)
        .map(|c| match c {
            c if c.is_control() || is_format(c) => '?',
            c => c,
        })
        .collect();
    if chars.next().is_some() {
        clean.push('…');
    }
    clean
}

/// `url` without the userinfo of its authority (`user:password@`), which
/// a stored source may still hold (refused when written since): never
/// used for the bind, and never to be shown in a log or an error.
pub fn without_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let authority_at = url.find("://").map_or(0, |at| at + 3);
    let rest = &url[authority_at..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!("{}{}", &url[..authority_at], &rest[at + 1..]).into(),
        None => url.into(),
    }
}

pub struct LdapSource {
    label: SourceLabel,
    settings: LdapSettings,
    password: Option<String>,
    /// Decided once, from the URL's scheme and `starttls`.
    security: Security,
    tls: Option<Arc<rustls::ClientConfig>>,
    attributes: Vec<String>,
    connection: Mutex<Option<Ldap>>,
    networks: Arc<SourceNetworks>,
    searches: AtomicU64,
    connects: AtomicU64,
    abandoned: AtomicU64,
}

impl LdapSource {
    pub fn new(
        label: SourceLabel,
        settings: LdapSettings,
        password: Option<String>,
        networks: Arc<SourceNetworks>,
    ) -> Result<LdapSource, DirectoryError> {
        let security = match (settings.url.starts_with("ldaps://"), settings.starttls) {
            (true, _) => Security::Tls,
            (false, true) => Security::StartTls,
            (false, false) => Security::Plain,
        };
        let tls = (security != Security::Plain)
            .then(|| tls_config(&label.name, settings.ca_pem.as_deref()))
            .transpose()?;
        Ok(LdapSource {
            label,
            attributes: settings.requested_attributes(),
            settings,
            password,
            security,
            tls,
            connection: Mutex::new(None),
            networks,
            searches: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.label.name
    }

    /// Who it is in the log.
    pub fn label(&self) -> &SourceLabel {
        &self.label
    }

    /// Searches sent to the server since this source was built.
    pub fn searches(&self) -> u64 {
        self.searches.load(Ordering::Relaxed)
    }

    /// Connections opened since this source was built.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Searches stopped before the server's last entry (and abandoned).
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Who has `e164`, within `budget`. `Ok(None)` is a definite miss.
    pub async fn lookup(
        &self,
        e164: &str,
        region: &str,
        budget: Duration,
    ) -> Result<Option<String>, DirectoryError> {
        match tokio::time::timeout(budget, self.search(e164, region, budget)).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => {
                self.drop_connection();
                Err(e)
            }
            Err(_) => {
                // A server that stopped answering (frozen, half-open TCP)
                // keeps the connection "open"; start afresh next time.
                self.drop_connection();
                Err(DirectoryError::Timeout)
            }
        }
    }

    fn drop_connection(&self) {
        if let Ok(mut slot) = self.connection.try_lock() {
            *slot = None;
        }
    }

    async fn connect(&self, budget: Duration) -> Result<Ldap, DirectoryError> {
        let mut slot = self.connection.lock().await;
        if let Some(ldap) = slot.as_mut() {
            if !ldap.is_closed() {
                return Ok(ldap.clone());
            }
        }
        *slot = None;
        let ldap = self.open(budget, self.lookup_bounds()).await?;
        *slot = Some(ldap.clone());
        Ok(ldap)
    }

    /// What a lookup's search reads at most (see `search`): the relay
    /// passes no more of it on.
    fn lookup_bounds(&self) -> SearchBounds {
        SearchBounds {
            entries: self.settings.size_limit.max(1) as usize + 1,
            bytes: MAX_REPLY_BYTES + ldap_wire::MAX_MESSAGE,
            past: Past::Drop,
        }
    }

    /// A new connection, bound, with the same TLS, address checks and
    /// secret as lookups use, kept by no one: the mirror's syncs run on
    /// their own, so a long paged read never delays a live search. Each
    /// search on it passes at most `bounds` on to ldap3.
    pub(crate) async fn open(
        &self,
        budget: Duration,
        bounds: SearchBounds,
    ) -> Result<Ldap, DirectoryError> {
        // Never past the whole operation's budget, whatever the tenant set.
        let connect_timeout = self
            .settings
            .connect_timeout_ms
            .map_or(budget, |ms| Duration::from_millis(ms).min(budget));
        let (addrs, host) = self.checked_addresses().await?;
        self.connects.fetch_add(1, Ordering::Relaxed);
        let (tls, security) = (self.tls.clone(), self.security);
        let (conn, mut ldap) = ldap_wire::connect(
            &addrs,
            &host,
            security,
            tls,
            connect_timeout,
            &self.label,
            bounds,
        )
        .await
        .map_err(|e| match e {
            DirectoryError::Ldap(why) => DirectoryError::Ldap(format!(
                "connect {}: {why}",
                server_text(&without_userinfo(&self.settings.url))
            )),
            other => other,
        })?;
        let label = self.label.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(tenant = label.tenant, source_id = label.id, source = ?label.name, error = &*e.to_string(), "LDAP connection ended");
            }
        });
        if let Some(dn) = &self.settings.bind_dn {
            ldap.with_timeout(budget)
                .simple_bind(dn, self.password.as_deref().unwrap_or_default())
                .await
                .and_then(|r| r.success())
                .map_err(|e| {
                    DirectoryError::Auth(format!(
                        "LDAP bind as {}: {}",
                        server_text(dn),
                        server_text(&e.to_string())
                    ))
                })?;
        }
        Ok(ldap)
    }

    pub(crate) fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    pub(crate) fn scope(&self) -> Scope {
        match self.settings.scope {
            LdapScope::Base => Scope::Base,
            LdapScope::One => Scope::OneLevel,
            LdapScope::Sub => Scope::Subtree,
        }
    }

    /// The addresses the URL's host resolves to that the operator lets
    /// sources reach, on the URL's port, and the host, which a TLS
    /// certificate must name.
    async fn checked_addresses(&self) -> Result<(Vec<SocketAddr>, String), DirectoryError> {
        let url = url::Url::parse(&self.settings.url)
            .map_err(|e| DirectoryError::Ldap(format!("url: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| DirectoryError::Ldap("url has no host".into()))?;
        let default_port = if self.security == Security::Tls {
            636
        } else {
            389
        };
        let port = url.port().unwrap_or(default_port);
        let addrs = resolve(&self.networks, host, port).await?;
        Ok((addrs, host.to_string()))
    }

    async fn search(
        &self,
        e164: &str,
        region: &str,
        budget: Duration,
    ) -> Result<Option<String>, DirectoryError> {
        let filter = build_filter(&self.settings, &number_forms(e164, region));
        let mut ldap = self.connect(budget).await?;
        let scope = self.scope();
        // The server-side time limit is in whole seconds; ours is finer.
        let options = SearchOptions::new()
            .sizelimit(self.settings.size_limit)
            .timelimit(budget.as_secs().max(1) as i32);
        self.searches.fetch_add(1, Ordering::Relaxed);
        let search = |e: ldap3::LdapError| {
            DirectoryError::Ldap(format!("search: {}", server_text(&e.to_string())))
        };
        let mut stream = ldap
            .with_timeout(budget)
            .with_search_options(options)
            .streaming_search(&self.settings.base_dn, scope, &filter, &self.attributes)
            .await
            .map_err(search)?;
        // The server is the tenant's: its size limit is a request, not a
        // promise. Read entries one at a time, keep their names, and stop
        // reading past `size_limit` entries or MAX_REPLY_BYTES. Several
        // entries show as `crate::shared_number` says.
        let (mut entries, mut bytes, mut names) = (0, 0, Vec::new());
        let mut stopped_early = false;
        while let Some(entry) = stream.next().await.map_err(search)? {
            if entry.is_ref() || entry.is_intermediate() {
                continue;
            }
            let entry = ldap_wire::search_entry(entry)
                .ok_or_else(|| DirectoryError::Ldap("a malformed search result entry".into()))?;
            entries += 1;
            bytes += entry
                .attrs
                .values()
                .flatten()
                .map(String::len)
                .sum::<usize>();
            names.extend(self.name_of(&entry.attrs));
            if entries > self.settings.size_limit || bytes > MAX_REPLY_BYTES {
                stopped_early = true;
                break;
            }
        }
        // Not `stream.state()`: without adapters ldap3 leaves a stream read
        // to its end `Active`, and abandoning every finished search cost
        // each one 40 ms (Nagle against the server's delayed ACK).
        let outcome = stream.finish().await;
        // A reply cut short held more entries than were read: whether they
        // all agree is not known, so none is shown.
        let whole = !stopped_early && outcome.rc != SIZE_LIMIT_EXCEEDED;
        let found = whole
            .then(|| crate::shared_number::shown(names.iter().map(|n| (n.as_str(), None))))
            .flatten()
            .map(str::to_string);
        if stopped_early {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
            // Stopped early: tell the server, and keep the connection.
            let id = stream.ldap_handle().last_id();
            let _ = stream.ldap_handle().abandon(id).await;
            return Ok(found);
        }
        match outcome.rc {
            SUCCESS | SIZE_LIMIT_EXCEEDED => Ok(found),
            REFERRAL => Ok(None),
            rc => Err(DirectoryError::Ldap(format!(
                "search failed: rc={rc} {}",
                server_text(&outcome.text)
            ))),
        }
    }

    /// The first configured name attribute the entry has, case-insensitively
    /// (servers return attribute names in their schema's spelling).
    pub(crate) fn name_of(&self, attrs: &HashMap<String, Vec<String>>) -> Option<String> {
        // A value longer than a name may be is passed over, so the next
        // attribute (`cn` after a `displayName` of kilobytes) still names
        // the entry (`crate::name::MAX_RAW_NAME_CHARS`).
        let fits = |s: &str| s.chars().nth(crate::name::MAX_RAW_NAME_CHARS).is_none();
        let get = |name: &str| -> Option<&str> {
            attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| {
                    v.iter()
                        .map(|s| s.trim())
                        .find(|s| !s.is_empty() && fits(s))
                })
        };
        self.settings.name_attributes.iter().find_map(|spec| {
            let parts: Vec<&str> = spec.split('+').filter_map(get).collect();
            (parts.len() == spec.split('+').count()).then(|| parts.join(" "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::server_text;

    #[test]
    fn server_text_loses_terminal_controls_and_is_bounded() {
        assert_eq!(server_text("no such object"), "no such object");
        assert_eq!(
            server_text("busy\x1b]0;pwned\x07\x1b[2J\r\n\u{9b}31m\u{7f}"),
            "busy?]0;pwned??[2J???31m?"
        );
        assert_eq!(server_text("a\u{202e}b\u{2066}c"), "a?b?c");
        assert_eq!(
            server_text("a\u{61c}b\u{2060}c\u{ad}d\u{180e}e\u{e0041}f"),
            "a?b?c?d?e?f"
        );
        // Characters, not bytes: never cut inside one.
        let long = "é".repeat(500);
        let cut = server_text(&long);
        assert_eq!(cut.chars().count(), 201, "200 and the mark");
        assert!(cut.ends_with('…'));
        assert_eq!(server_text(&"x".repeat(200)), "x".repeat(200));
    }
}

#[cfg(test)]
#[path = "ldap_url_tests.rs"]
mod url_tests;

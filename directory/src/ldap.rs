//! The LDAP / Active Directory source. ldap3 multiplexes operations over one
//! connection but neither pools nor reconnects, so each source keeps one
//! connection and builds a new one after any failure or timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions, StdStream,
};
use tokio::sync::Mutex;

use crate::error::DirectoryError;
use crate::filter::{build_filter, number_forms};
use crate::networks::{resolve, SourceNetworks};
use crate::settings::{tls_config, LdapScope, LdapSettings};

/// LDAP result codes that still carry a usable answer.
const SUCCESS: u32 = 0;
const SIZE_LIMIT_EXCEEDED: u32 = 4;
/// A referral is an answer of "not here"; referrals are not chased, since
/// following one to another AD domain costs more time than a lookup has.
const REFERRAL: u32 = 10;
/// Attribute bytes read from one search at most.
const MAX_REPLY_BYTES: usize = 256 * 1024;

pub struct LdapSource {
    name: String,
    settings: LdapSettings,
    password: Option<String>,
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
        name: &str,
        settings: LdapSettings,
        password: Option<String>,
        networks: Arc<SourceNetworks>,
    ) -> Result<LdapSource, DirectoryError> {
        let needs_tls = settings.starttls || settings.url.starts_with("ldaps://");
        let tls = needs_tls
            .then(|| tls_config(name, settings.ca_pem.as_deref()))
            .transpose()?;
        Ok(LdapSource {
            name: name.to_string(),
            attributes: settings.requested_attributes(),
            settings,
            password,
            tls,
            connection: Mutex::new(None),
            networks,
            searches: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
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
        budget: Duration,
    ) -> Result<Option<String>, DirectoryError> {
        match tokio::time::timeout(budget, self.search(e164, budget)).await {
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
        let ldap = self.open(budget).await?;
        *slot = Some(ldap.clone());
        Ok(ldap)
    }

    /// A new connection, bound, with the same TLS, address checks and
    /// secret as lookups use, kept by no one: the mirror's syncs run on
    /// their own, so a long paged read never delays a live search.
    pub(crate) async fn open(&self, budget: Duration) -> Result<Ldap, DirectoryError> {
        let connect_timeout = self
            .settings
            .connect_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(budget);
        let addrs = self.checked_addresses().await?;
        let mut conn_settings = LdapConnSettings::new().set_starttls(self.settings.starttls);
        if let Some(tls) = &self.tls {
            conn_settings = conn_settings.set_config(tls.clone());
        }
        self.connects.fetch_add(1, Ordering::Relaxed);
        let (conn, mut ldap) =
            connect_to(&addrs, &self.settings.url, conn_settings, connect_timeout).await?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(source = %name, error = %e, "LDAP connection ended");
            }
        });
        if let Some(dn) = &self.settings.bind_dn {
            ldap.with_timeout(budget)
                .simple_bind(dn, self.password.as_deref().unwrap_or_default())
                .await
                .and_then(|r| r.success())
                .map_err(|e| DirectoryError::Auth(format!("LDAP bind as {dn}: {e}")))?;
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
    /// sources reach, on the URL's port.
    async fn checked_addresses(&self) -> Result<Vec<SocketAddr>, DirectoryError> {
        let url = url::Url::parse(&self.settings.url)
            .map_err(|e| DirectoryError::Ldap(format!("url: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| DirectoryError::Ldap("url has no host".into()))?;
        let port = url
            .port()
            .unwrap_or(if url.scheme() == "ldaps" { 636 } else { 389 });
        resolve(&self.networks, host, port).await
    }

    async fn search(&self, e164: &str, budget: Duration) -> Result<Option<String>, DirectoryError> {
        let filter = build_filter(&self.settings, &number_forms(e164));
        let mut ldap = self.connect(budget).await?;
        let scope = self.scope();
        // The server-side time limit is in whole seconds; ours is finer.
        let options = SearchOptions::new()
            .sizelimit(self.settings.size_limit)
            .timelimit(budget.as_secs().max(1) as i32);
        self.searches.fetch_add(1, Ordering::Relaxed);
        let search = |e: ldap3::LdapError| DirectoryError::Ldap(format!("search: {e}"));
        let mut stream = ldap
            .with_timeout(budget)
            .with_search_options(options)
            .streaming_search(&self.settings.base_dn, scope, &filter, &self.attributes)
            .await
            .map_err(search)?;
        // The server is the tenant's: its size limit is a request, not a
        // promise. Read entries one at a time, keep the first name, and stop
        // reading past `size_limit` entries or MAX_REPLY_BYTES.
        let (mut entries, mut bytes, mut found) = (0, 0, None);
        let mut stopped_early = false;
        while let Some(entry) = stream.next().await.map_err(search)? {
            if entry.is_ref() || entry.is_intermediate() {
                continue;
            }
            let entry = SearchEntry::construct(entry);
            entries += 1;
            bytes += entry
                .attrs
                .values()
                .flatten()
                .map(String::len)
                .sum::<usize>();
            if found.is_none() {
                found = self.name_of(&entry.attrs);
            }
            if entries > self.settings.size_limit || bytes > MAX_REPLY_BYTES {
                stopped_early = true;
                break;
            }
        }
        // Not `stream.state()`: without adapters ldap3 leaves a stream read
        // to its end `Active`, and abandoning every finished search cost
        // each one 40 ms (Nagle against the server's delayed ACK).
        let outcome = stream.finish().await;
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
                outcome.text
            ))),
        }
    }

    /// The first configured name attribute the entry has, case-insensitively
    /// (servers return attribute names in their schema's spelling).
    pub(crate) fn name_of(&self, attrs: &HashMap<String, Vec<String>>) -> Option<String> {
        let get = |name: &str| -> Option<&str> {
            attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.iter().map(|s| s.trim()).find(|s| !s.is_empty()))
        };
        self.settings.name_attributes.iter().find_map(|spec| {
            let parts: Vec<&str> = spec.split('+').filter_map(get).collect();
            (parts.len() == spec.split('+').count()).then(|| parts.join(" "))
        })
    }
}

/// An LDAP connection over TCP to the first of `addrs` that accepts, with
/// `url` deciding only TLS or not and, under TLS, the name the server's
/// certificate must carry. Left to open the socket itself, ldap3 would
/// resolve the URL's host again, and a tenant's DNS can answer that second
/// time with an address the network check never saw.
///
/// `timeout` bounds TCP, StartTLS and the TLS handshake together, as
/// ldap3's own connect timeout would; `settings` should not carry one.
async fn connect_to(
    addrs: &[SocketAddr],
    url: &str,
    settings: LdapConnSettings,
    timeout: Duration,
) -> Result<(LdapConnAsync, Ldap), DirectoryError> {
    let failed = |e: LdapError| DirectoryError::Ldap(format!("connect {url}: {e}"));
    let connect = async {
        let stream = first_to_accept(addrs).await.map_err(|e| failed(e.into()))?;
        LdapConnAsync::with_settings(settings.set_std_stream(StdStream::Tcp(stream)), url)
            .await
            .map_err(failed)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|e| failed(e.into()))?
}

/// Nagle stays on, as on the sockets ldap3 opens itself: handing ldap3 our
/// socket changes where it connects and nothing else.
async fn first_to_accept(addrs: &[SocketAddr]) -> std::io::Result<std::net::TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to");
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => return stream.into_std(),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio::time::timeout;

    /// Listeners on one port at 127.0.0.2 and at 127.0.0.1, the only
    /// address `localhost` resolves to here.
    async fn checked_and_by_name() -> (TcpListener, TcpListener) {
        for _ in 0..20 {
            let checked = TcpListener::bind("127.0.0.2:0").await.unwrap();
            let port = checked.local_addr().unwrap().port();
            if let Ok(by_name) = TcpListener::bind(("127.0.0.1", port)).await {
                return (checked, by_name);
            }
        }
        panic!("no port free on both 127.0.0.1 and 127.0.0.2");
    }

    fn any_tls() -> Arc<rustls::ClientConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        crate::settings::tls_config("t", Some(&ca.pem())).unwrap()
    }

    /// The name in the URL stands for a tenant's host whose DNS answers a
    /// second lookup differently: only the checked address may be dialled.
    #[tokio::test]
    async fn every_scheme_connects_to_the_checked_address_not_the_name() {
        let (checked, by_name) = checked_and_by_name().await;
        let port = checked.local_addr().unwrap().port();
        let addrs = [SocketAddr::from(([127, 0, 0, 2], port))];
        for (url, starttls) in [
            (format!("ldaps://localhost:{port}/"), false),
            (format!("ldap://localhost:{port}/"), true),
            (format!("ldap://localhost:{port}/"), false),
        ] {
            let settings = LdapConnSettings::new()
                .set_starttls(starttls)
                .set_config(any_tls());
            // How the handshake ends (an EOF for TLS, the timeout for
            // StartTLS, success for plain LDAP) is beside the point.
            let accept = async {
                let (stream, _) = timeout(Duration::from_secs(2), checked.accept())
                    .await
                    .unwrap_or_else(|_| panic!("{url}: nothing reached the checked address"))
                    .unwrap();
                drop(stream);
            };
            let connect = connect_to(&addrs, &url, settings, Duration::from_millis(500));
            let (_, ()) = tokio::join!(connect, accept);
            assert!(
                timeout(Duration::from_millis(200), by_name.accept())
                    .await
                    .is_err(),
                "{url} (starttls {starttls}): connected where the name resolves"
            );
        }
    }

    #[tokio::test]
    async fn a_refusing_address_passes_to_the_next_and_none_left_is_a_connect_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refusing = closed.local_addr().unwrap();
        drop(closed);
        let open = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let url = format!("ldap://localhost:{}/", refusing.port());
        let plain = || LdapConnSettings::new();
        let second = [refusing, open.local_addr().unwrap()];
        let (connected, accepted) = tokio::join!(
            connect_to(&second, &url, plain(), Duration::from_secs(2)),
            timeout(Duration::from_secs(2), open.accept()),
        );
        assert!(connected.is_ok() && accepted.is_ok(), "the second address");
        let Err(err) = connect_to(&[refusing], &url, plain(), Duration::from_secs(2)).await else {
            panic!("connected to a closed port");
        };
        assert!(
            matches!(&err, DirectoryError::Ldap(m) if m.starts_with(&format!("connect {url}: "))),
            "{err}"
        );
    }
}

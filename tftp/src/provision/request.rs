//! What a request is and what it gets: the options a provisioner runs
//! with, a request as either transport sees it, a rendered file, and the
//! TFTP source and history line a transfer proves only once acknowledged.

use super::*;

#[derive(Clone, Debug)]
pub struct ProvisionOptions {
    /// How phones reach us over HTTP; templates build URLs from it.
    pub base_url: String,
    /// Names plain-HTTP requests may give in `Host` besides `base_url`'s
    /// (`host_names.rs`); `*` for any.
    pub host_names: Vec<String>,
    /// Bound of the render cache, in bytes of rendered output.
    pub render_cache_bytes: u64,
    /// Bound of the compiled-template cache, in bytes as `Compiled::weight`
    /// reckons them.
    pub compiled_cache_bytes: u64,
    pub guard: GuardOptions,
    /// What each render may spend.
    pub budget: Budget,
    pub pool: PoolOptions,
    /// A phone whose tenant sets no provisioning networks is not served
    /// inside another tenant's site-sized network (`admission.rs`).
    pub sites_exclusive: bool,
}

impl Default for ProvisionOptions {
    fn default() -> Self {
        ProvisionOptions {
            base_url: "http://127.0.0.1:8081".into(),
            host_names: Vec::new(),
            render_cache_bytes: 64 << 20,
            compiled_cache_bytes: 128 << 20,
            guard: GuardOptions::default(),
            budget: Budget::default(),
            pool: PoolOptions::default(),
            sites_exclusive: true,
        }
    }
}

/// A rendered file: identical bytes for identical inputs.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub body: Arc<[u8]>,
    /// Strong ETag: a hash of the bytes.
    pub etag: Arc<str>,
    pub content_type: &'static str,
    pub kind: FileKind,
    /// The family it was rendered for; `None` for static files.
    pub family: Option<Family>,
    /// A static file to stream instead of `body` (which is then empty).
    pub file: Option<Arc<StaticFile>>,
    /// What a rendered (cacheable) file was made from.
    pub(crate) inputs: Option<Arc<Inputs>>,
    /// What a TFTP answer leaves for its transfer ([`Unproven::prove`],
    /// [`Unproven::ended`]); set per answer, never cached.
    pub(crate) unproven: Option<Box<Unproven>>,
}

/// A TFTP request's source, made known for the phone whose own file this
/// is once the client acknowledges a packet (before, the source may be
/// forged), and the fetch's history line, written once the transfer ends
/// and only if the client acknowledged one: it says how the transfer
/// ended and what the client acknowledged, not what we meant to send.
/// The line goes with the served file's ETag (`HistorySink::record_served`).
#[derive(Clone)]
pub(crate) struct Unproven {
    pub(super) known: Option<KnownSource>,
    pub(super) history: Option<(HistorySink, BootRecord, Option<Arc<str>>)>,
}

/// A served fetch's line, told from a repeat by its bytes where they say
/// something (`content`), by the fetch alone where not (a directory page).
pub(crate) fn record_served(history: &HistorySink, record: BootRecord, content: Option<&str>) {
    match content {
        Some(content) => history.record_served(record, content),
        None => history.record(record),
    }
}

impl std::fmt::Debug for Unproven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unproven")
            .field("known", &self.known)
            .field(
                "history",
                &self.history.as_ref().map(|(_, record, _)| record),
            )
            .finish()
    }
}

impl Unproven {
    /// At the client's first acknowledgement.
    pub(crate) fn prove(&mut self, provisioner: &Provisioner) {
        if let Some(known) = self.known.take() {
            known.record(provisioner);
        }
    }

    /// Once the transfer is over, if [`Unproven::prove`] ran.
    pub(crate) fn ended(self, outcome: String, acknowledged: u64) {
        if let Some((history, mut record, content)) = self.history {
            record.outcome = outcome;
            record.bytes = i64::try_from(acknowledged).unwrap_or(i64::MAX);
            record_served(&history, record, content.as_deref());
        }
    }

    /// A transfer its client ended before acknowledging a packet: no line
    /// for the phone (the source may be forged), but a log line naming
    /// it, per tenant at most once a second. A phone behind a firewall or
    /// NAT that drops the server's packets from a new port asks again and
    /// again, and without this no trace of it was anywhere.
    pub(crate) fn unanswered(self, how: &str) {
        static UNANSWERED_LOG: dialtone_sync::TenantLogLimit = dialtone_sync::TenantLogLimit::new();
        let Some((_, record, _)) = &self.history else {
            return;
        };
        let Some(skipped) = UNANSWERED_LOG.allow(record.tenant_id.unwrap_or_default()) else {
            return;
        };
        let (mac, remote) = (&record.mac, &record.remote_ip);
        let file = dialtone_sync::log_text(&record.file);
        // A client's ERROR says it got our packet and said no (the options,
        // the size); silence or a refused port says it never did.
        if how.starts_with("client-error") {
            tracing::info!(%mac, %remote, %file, how, skipped, "a phone refused its file over TFTP before acknowledging any of it (logged at most once a second per tenant)");
        } else {
            tracing::info!(%mac, %remote, %file, how, skipped, "a phone's file was answered over TFTP and the client acknowledged nothing: a firewall or NAT dropping the server's packets from a new port (see tftp_single_port), or a forged source (logged at most once a second per tenant)");
        }
    }

    /// Without a transfer (tools and tests ask as TFTP): as answered.
    pub(super) fn answered(mut self, provisioner: &Provisioner) {
        self.prove(provisioner);
        if let Some((history, record, content)) = self.history {
            record_served(&history, record, content.as_deref());
        }
    }
}

/// A source that fetched a phone's own file, and the phone. Over TFTP the
/// source may be forged until the client's first ACK: made known at once,
/// four forged sources of a phone took its places, and its office's own
/// address, banned by forged misses, could then never pass its ban for
/// the phone's files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KnownSource {
    pub(super) ip: std::net::IpAddr,
    pub(super) phone: Id,
    pub(super) family: Family,
    /// The phone's fingerprint as it was answered (`known::fingerprint`).
    pub(super) learned_under: u64,
}

impl KnownSource {
    pub(crate) fn record(self, provisioner: &Provisioner) {
        let state = provisioner.mirror.load();
        provisioner.guard.known().record(
            self.ip,
            self.phone,
            self.family,
            self.learned_under,
            |id| state.phone(id).is_some(),
        );
    }
}

/// Who asks: decides admission (credentials, TFTP) and labels history and
/// metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Tftp,
    Http,
    Https,
    /// `dialtone render`: the operator's review tool, which sees every
    /// phone's files as the phone would get them.
    Render,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tftp => "tftp",
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Render => "render",
        }
    }

    /// Whether a request's source address could be forged.
    pub(crate) fn via(self) -> crate::guard::Via {
        match self {
            Protocol::Tftp => crate::guard::Via::Datagram,
            Protocol::Http | Protocol::Https | Protocol::Render => crate::guard::Via::Connection,
        }
    }
}

/// A request as either transport sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// TFTP file name or (decoded) HTTP path.
    pub path: &'a str,
    pub user_agent: Option<&'a str>,
    /// The source address: for bans and history. `None` in tools and tests.
    pub remote: Option<std::net::IpAddr>,
    pub protocol: Protocol,
    /// What an HTTP request brings to prove it is the phone.
    pub auth: Option<HttpAuth<'a>>,
    /// The HTTP query string (directory paging and search).
    pub query: Option<&'a str>,
}

impl Request<'_> {
    /// With the source as IPv4 when a dual-stack socket (`[::]`) gave an
    /// IPv4 phone as `::ffff:a.b.c.d`: tenants' networks, bans and history
    /// all speak of IPv4 phones in IPv4, and a mapped address would match
    /// none of their IPv4 networks.
    pub(super) fn canonical(&self) -> Self {
        Request {
            remote: self.remote.map(|ip| ip.to_canonical()),
            ..*self
        }
    }
}

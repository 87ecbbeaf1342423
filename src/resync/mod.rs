//! Re-provisioning running phones (issue 17): a SIP NOTIFY (`check-sync`,
//! `resync`) to the address of record of a phone's first line, sent
//! through the platform's SIP proxy, which knows where the phone is
//! registered and how to reach it through NAT.
//!
//! The admin API queues resyncs ([`ResyncService::enqueue`]); one
//! supervised task ([`ResyncService::run`]) sends them under the global and
//! per-tenant rates (`queue.rs`), runs each as an RFC 3261 client
//! transaction (`transaction.rs`) on one UDP socket, and watches
//! provisioning history for the phone's next fetch of its own file. A
//! request's resyncs are held until its audit row is written
//! (`enqueue.rs`), and each is planned again from the mirror when its
//! turn comes (`recheck.rs`).
//! Everything is bounded: the queue overall and per tenant, transactions
//! in flight, the tracking table (`track.rs`).

mod book;
mod direct;
pub mod domains;
mod enqueue;
pub mod family;
mod proxy;
pub mod queue;
mod recheck;
mod refetch;
pub mod sip;
mod spacing;
pub mod track;
pub mod transaction;
mod worker;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::{Context, Result};
use dialtone_sync::history::HistorySink;
use dialtone_sync::{Family, Id, Mac, Mirror, MirrorState, Phone, Store};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::ResyncConfig;
use book::Book;
pub use book::SameTarget;
pub use domains::SipDomains;
pub use enqueue::Enqueued;
use queue::{Full, Queue};
use refetch::Watch;
pub use spacing::Spaced;
use spacing::{Key, Spacing};
use track::{Entry, Resync, Table};
use transaction::Transport;

/// Resyncs remembered for `GET /v1/resyncs`, at least.
const TRACKED: usize = 50_000;

/// One phone to resync, planned from the mirror when it was asked for,
/// and again when it is sent (`recheck.rs`).
#[derive(Clone, Debug)]
pub struct Job {
    pub tenant_id: Id,
    pub tenant: String,
    pub mac: Mac,
    pub family: Family,
    pub event: &'static str,
    pub target: String,
}

/// The NOTIFY `phone` gets, or why it gets none. `domains` are the
/// phone's tenant's ([`SipDomains::of`]).
pub fn plan(state: &MirrorState, phone: &Phone, domains: &SipDomains) -> Result<Job, String> {
    let event = sip::event(phone.family)?;
    let lines = state.lines_of(phone.id);
    let line = lines
        .iter()
        .find(|l| l.position == 1)
        .or(lines.first())
        .ok_or("the phone has no line")?;
    let target = sip::aor(&line.extension, &line.registrar)?;
    domains.allow(sip::registrar_host(&line.registrar))?;
    let tenant = state
        .tenant(phone.tenant_id)
        .map(|t| t.slug.to_string())
        .unwrap_or_default();
    Ok(Job {
        tenant_id: phone.tenant_id,
        tenant,
        mac: phone.mac,
        family: phone.family,
        event,
        target,
    })
}

fn refused(full: Full, n: usize) {
    let reason = match full {
        Full::Global => "queue",
        Full::Tenant => "tenant_queue",
    };
    metrics::counter!("dialtone_resync_refused_total", "reason" => reason).increment(n as u64);
}

#[derive(Clone)]
pub struct ResyncService {
    inner: Arc<Inner>,
}

struct Inner {
    config: ResyncConfig,
    sender_host: String,
    store: Arc<dyn Store>,
    history: Option<HistorySink>,
    transport: Arc<Transport>,
    proxy: Option<proxy::ProxyAddress>,
    /// Where `direct` may send (`resync.direct_networks`).
    direct_networks: Vec<ipnet::IpNet>,
    book: Mutex<Book>,
    /// The mirror requests are planned from, given by the first
    /// [`ResyncService::enqueue`]: what waits is planned again from it
    /// when its turn comes.
    mirror: OnceLock<Arc<Mirror>>,
    /// Wakes the sender when something is queued.
    wake: Notify,
    /// Tells this process's ids from an earlier one's.
    prefix: String,
    next: AtomicU64,
}

impl ResyncService {
    /// Binds the UDP socket (so a bad `listen` stops `serve` at start).
    /// Needs a tokio runtime.
    pub fn new(
        config: &ResyncConfig,
        store: Arc<dyn Store>,
        history: Option<HistorySink>,
    ) -> Result<ResyncService> {
        let socket = dialtone_tftp::dual_stack::bind_udp(config.listen)
            .with_context(|| format!("binding resync.listen {}", config.listen))?;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let table = TRACKED.max(config.queue + config.max_inflight + 1);
        Ok(ResyncService {
            inner: Arc::new(Inner {
                sender_host: config.sender_host(),
                config: config.clone(),
                store,
                history,
                transport: Arc::new(Transport::new(socket)),
                proxy: config.proxy.as_deref().map(proxy::ProxyAddress::new),
                direct_networks: dialtone_tftp::tftp::parse_networks(&config.direct_networks)
                    .map_err(|e| anyhow::anyhow!("resync.direct_networks: {e}"))?,
                book: Mutex::new(Book::new(
                    Queue::new(
                        config.queue,
                        config.tenant_queue,
                        config.rate_per_s,
                        config.tenant_rate_per_s,
                    )
                    .limit_inflight(config.max_inflight),
                    Spacing::new(
                        Duration::from_secs(config.phone_spacing_s),
                        // Timer F, the longest a transaction waits.
                        Duration::from_millis(config.t1_ms.saturating_mul(64)),
                    ),
                    Table::new(table),
                    Watch::new(table),
                )),
                mirror: OnceLock::new(),
                wake: Notify::new(),
                prefix: sip::random_hex(3),
                next: AtomicU64::new(1),
            }),
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.inner.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where NOTIFYs leave from.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.transport.local_addr()
    }

    /// Seconds a refused request should wait: a full queue's worth at the
    /// global rate, from the configuration alone (the queue's length says
    /// how busy other tenants are).
    pub fn retry_after(&self) -> u64 {
        let config = &self.inner.config;
        (config.queue as u64 / u64::from(config.rate_per_s.max(1))).clamp(1, 3600)
    }

    /// `phone_spacing_s`: how long a phone or an address waits after a
    /// resync before another.
    pub fn spacing_s(&self) -> u64 {
        self.inner.config.phone_spacing_s
    }

    /// Whether `job`'s phone, or its target, was sent a resync too
    /// recently for another.
    pub fn spaced(&self, job: &Job) -> Option<Spaced> {
        let keys = [
            Key::phone(job.tenant_id, job.mac),
            Key::target(job.tenant_id, &job.target),
        ];
        self.book().spaced(&keys, Instant::now())
    }

    /// Answered resyncs still watched for their phone's refetch.
    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.book().watch.len()
    }

    /// Tracked resyncs, newest first: at most `limit` of `tenant`'s (or
    /// everyone's) that `keep` says yes to.
    pub fn list(
        &self,
        tenant: Option<Id>,
        limit: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Vec<Resync> {
        self.book().table.newest(tenant, limit, keep)
    }
}

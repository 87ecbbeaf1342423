//! Re-provisioning running phones (issue 17): a SIP NOTIFY (`check-sync`,
//! `resync`) to the address of record of a phone's first line, sent
//! through the platform's SIP proxy, which knows where the phone is
//! registered and how to reach it through NAT.
//!
//! The admin API queues resyncs ([`ResyncService::enqueue`]); one
//! supervised task ([`ResyncService::run`]) sends them under the global and
//! per-tenant rates (`queue.rs`), runs each as an RFC 3261 client
//! transaction (`transaction.rs`) on one UDP socket, and watches
//! provisioning history for the phone's next fetch of its own file.
//! Everything is bounded: the queue overall and per tenant, transactions
//! in flight, the tracking table (`track.rs`).

pub mod domains;
mod proxy;
pub mod queue;
pub mod sip;
pub mod track;
pub mod transaction;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use dialtone_sync::history::HistorySink;
use dialtone_sync::{now_millis, Family, Id, Mac, MirrorState, Phone, Store};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::ResyncConfig;
pub use domains::SipDomains;
use queue::{Full, Queue};
use track::{Entry, Resync, State, Table, Via};
use transaction::Transport;

/// Resyncs remembered for `GET /v1/resyncs`, at least.
const TRACKED: usize = 50_000;

/// One phone to resync, planned from the mirror when it was asked for.
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
    /// Wakes the sender when something is queued.
    wake: Notify,
    /// Tells this process's ids from an earlier one's.
    prefix: String,
    next: AtomicU64,
}

/// What [`ResyncService::enqueue`] did with a request's jobs.
#[derive(Default)]
pub struct Enqueued {
    /// Queued now, or already waiting from an earlier request.
    pub resyncs: Vec<Resync>,
    /// Past the tenant's room in the queue: not queued.
    pub deferred: Vec<Job>,
    /// Sent a resync too recently (`phone_spacing_s`): not queued.
    pub spaced: Vec<(Job, Spaced)>,
}

/// A phone sent a resync less than `phone_spacing_s` ago.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spaced {
    /// Seconds since the last one left the queue.
    pub ago_s: u64,
    /// Seconds until another may be queued (at least 1).
    pub left_s: u64,
    pub spacing_s: u64,
}

impl std::fmt::Display for Spaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not queued: sent a resync {} s ago, and a phone is sent at most one every {} s; ask again in {} s",
            self.ago_s, self.spacing_s, self.left_s
        )
    }
}

/// The queue, the table and the refetch watch list, under one lock: a
/// resync moves between them in one step.
struct Book {
    queue: Queue,
    /// Each phone waiting in `queue`, by tenant: a second request for it
    /// gets the resync already waiting, so a tenant cannot fill the queue
    /// with one phone.
    waiting: HashMap<(Id, Mac), u64>,
    /// Each phone's last resync to leave the queue, for `phone_spacing_s`
    /// after it left, and the same phones in the order they left: a phone
    /// that reboots on `check-sync` would otherwise reboot in a loop for as
    /// long as someone (a script, a double click) keeps asking, since it
    /// waits in the queue only until its tenant's next token.
    sent: HashMap<(Id, Mac), (Instant, u64)>,
    sent_order: VecDeque<(Instant, (Id, Mac))>,
    /// A monotonic clock's: a wall clock stepped back left the order
    /// unsorted and the wait to tell negative.
    spacing: Duration,
    table: Table,
    /// Sent resyncs whose refetch is not seen yet, oldest first.
    watch: VecDeque<u64>,
}

impl Book {
    /// `seq` was taken from the queue to be sent: its phone may be queued
    /// again once `phone_spacing_s` have passed.
    fn leaves_queue(&mut self, seq: u64, now: Instant) {
        if let Some(entry) = self.table.get(seq) {
            let key = (entry.tenant_id, entry.mac);
            if self.waiting.get(&key) == Some(&seq) {
                self.waiting.remove(&key);
            }
            if !self.spacing.is_zero() {
                self.forget_sent(now);
                self.sent.insert(key, (now, seq));
                self.sent_order.push_back((now, key));
            }
        }
    }

    /// Forgets sends older than the spacing: the two hold at most what
    /// the global rate sends in `phone_spacing_s`.
    fn forget_sent(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.sent_order.front() {
            if now.saturating_duration_since(at) < self.spacing {
                break;
            }
            self.sent_order.pop_front();
            if self.sent.get(&key).is_some_and(|&(last, _)| last == at) {
                self.sent.remove(&key);
            }
        }
    }

    /// Whether `key`'s phone was sent a resync too recently for another.
    /// One that failed (no answer, an error status, no address) does not
    /// count: the phone did not act on it, and asking again is how an
    /// admin retries.
    fn spaced(&mut self, key: (Id, Mac), now: Instant) -> Option<Spaced> {
        self.forget_sent(now);
        let &(at, seq) = self.sent.get(&key)?;
        let entry = self.table.get(seq)?;
        if entry.view.state == State::Failed {
            return None;
        }
        let ago = now.saturating_duration_since(at);
        let left = self.spacing.saturating_sub(ago);
        Some(Spaced {
            ago_s: ago.as_secs(),
            left_s: left.as_millis().div_ceil(1000).max(1) as u64,
            spacing_s: self.spacing.as_secs(),
        })
    }
}

impl ResyncService {
    /// Binds the UDP socket (so a bad `listen` stops `serve` at start).
    /// Needs a tokio runtime.
    pub fn new(
        config: &ResyncConfig,
        store: Arc<dyn Store>,
        history: Option<HistorySink>,
    ) -> Result<ResyncService> {
        let socket = std::net::UdpSocket::bind(config.listen)
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
                book: Mutex::new(Book {
                    queue: Queue::new(
                        config.queue,
                        config.tenant_queue,
                        config.rate_per_s,
                        config.tenant_rate_per_s,
                    )
                    .limit_inflight(config.max_inflight),
                    table: Table::new(table),
                    waiting: HashMap::new(),
                    sent: HashMap::new(),
                    sent_order: VecDeque::new(),
                    spacing: Duration::from_secs(config.phone_spacing_s),
                    watch: VecDeque::new(),
                }),
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

    /// Whether a request for `jobs` of `tenant` would queue anything, or be
    /// refused as a whole (before its audit row is written).
    pub fn check(&self, tenant: Id, jobs: &[Job]) -> Result<(), Full> {
        let now = Instant::now();
        let mut book = self.book();
        let new = jobs
            .iter()
            .filter(|job| {
                let key = (tenant, job.mac);
                !book.waiting.contains_key(&key) && book.spaced(key, now).is_none()
            })
            .count();
        if new == 0 {
            return Ok(());
        }
        book.queue
            .room(tenant)
            .map(drop)
            .inspect_err(|&full| refused(full, new))
    }

    /// Seconds a refused request should wait: a full queue's worth at the
    /// global rate, from the configuration alone (the queue's length says
    /// how busy other tenants are).
    pub fn retry_after(&self) -> u64 {
        let config = &self.inner.config;
        (config.queue as u64 / u64::from(config.rate_per_s.max(1))).clamp(1, 3600)
    }

    /// Whether `mac` of `tenant` was sent a resync too recently for another.
    pub fn spaced(&self, tenant: Id, mac: Mac) -> Option<Spaced> {
        self.book().spaced((tenant, mac), Instant::now())
    }

    /// Queues one tenant's jobs. A phone already waiting keeps its place
    /// and its resync is answered again; one sent too recently is left
    /// out; past the tenant's room the rest are deferred, not queued.
    /// Refused only when nothing new fits.
    pub fn enqueue(&self, tenant: Id, jobs: Vec<Job>) -> Result<Enqueued, Full> {
        let via = if self.inner.config.direct {
            Via::Direct
        } else {
            Via::Proxy
        };
        let now = now_millis();
        let mut book = self.book();
        let mut done = Enqueued::default();
        let mut new = Vec::with_capacity(jobs.len());
        for job in jobs {
            let key = (tenant, job.mac);
            let waiting = book.waiting.get(&key).copied();
            if let Some(entry) = waiting.and_then(|seq| book.table.get(seq)) {
                done.resyncs.push(entry.view.clone());
            } else if let Some(spaced) = book.spaced(key, Instant::now()) {
                done.spaced.push((job, spaced));
            } else {
                new.push(job);
            }
        }
        if new.is_empty() {
            return Ok(done);
        }
        let room = match book.queue.room(tenant) {
            Ok(room) => room,
            Err(full) => {
                refused(full, new.len());
                return Err(full);
            }
        };
        if new.len() > room {
            done.deferred = new.split_off(room);
            refused(Full::Tenant, done.deferred.len());
        }
        let mut seqs = Vec::with_capacity(new.len());
        for job in new {
            let seq = self.inner.next.fetch_add(1, Ordering::Relaxed);
            let view = Resync {
                id: format!("{}-{seq}", self.inner.prefix),
                tenant: job.tenant,
                mac: job.mac.to_string(),
                family: job.family.to_string(),
                event: job.event.to_string(),
                target: job.target,
                via,
                state: State::Queued,
                status: None,
                reason: None,
                queued_at: now,
                sent_at: None,
                answered_at: None,
                refetched_at: None,
            };
            done.resyncs.push(view.clone());
            book.waiting.insert((tenant, job.mac), seq);
            book.table.insert(
                seq,
                Entry {
                    tenant_id: job.tenant_id,
                    mac: job.mac,
                    view,
                },
            );
            seqs.push(seq);
        }
        book.queue.push(tenant, &seqs)?;
        metrics::counter!("dialtone_resync_queued_total").increment(seqs.len() as u64);
        metrics::gauge!("dialtone_resync_waiting").set(book.queue.len() as f64);
        drop(book);
        self.inner.wake.notify_one();
        Ok(done)
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

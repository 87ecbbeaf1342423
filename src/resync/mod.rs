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
pub mod queue;
pub mod sip;
pub mod track;
pub mod transaction;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use dialtone_sync::history::HistorySink;
use dialtone_sync::{now_millis, Family, Id, Mac, MirrorState, Phone, Store};
use tokio::sync::Notify;

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
    book: Mutex<Book>,
    /// Wakes the sender when something is queued.
    wake: Notify,
    /// Tells this process's ids from an earlier one's.
    prefix: String,
    next: AtomicU64,
}

/// The queue, the table and the refetch watch list, under one lock: a
/// resync moves between them in one step.
struct Book {
    queue: Queue,
    table: Table,
    /// Sent resyncs whose refetch is not seen yet, oldest first.
    watch: VecDeque<u64>,
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
                book: Mutex::new(Book {
                    queue: Queue::new(
                        config.queue,
                        config.tenant_queue,
                        config.rate_per_s,
                        config.tenant_rate_per_s,
                    ),
                    table: Table::new(table),
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

    /// Whether `n` resyncs of `tenant` would be queued now.
    pub fn check(&self, tenant: Id, n: usize) -> Result<(), Full> {
        let checked = self.book().queue.check(tenant, n);
        if let Err(full) = checked {
            refused(full, n);
        }
        checked
    }

    /// Seconds until a full queue has room again, at the global rate.
    pub fn retry_after(&self) -> u64 {
        let len = self.book().queue.len() as u64;
        (len / u64::from(self.inner.config.rate_per_s.max(1))).max(1)
    }

    /// Queues one tenant's jobs, all or none.
    pub fn enqueue(&self, tenant: Id, jobs: Vec<Job>) -> Result<Vec<Resync>, Full> {
        let via = if self.inner.config.direct {
            Via::Direct
        } else {
            Via::Proxy
        };
        let now = now_millis();
        let mut book = self.book();
        if let Err(full) = book.queue.check(tenant, jobs.len()) {
            refused(full, jobs.len());
            return Err(full);
        }
        let mut seqs = Vec::with_capacity(jobs.len());
        let mut views = Vec::with_capacity(jobs.len());
        for job in jobs {
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
            views.push(view.clone());
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
        Ok(views)
    }

    /// Tracked resyncs, newest first: at most `limit` of those `keep`
    /// says yes to.
    pub fn list(&self, limit: usize, keep: impl Fn(&Entry) -> bool) -> Vec<Resync> {
        self.book().table.newest(limit, keep)
    }
}

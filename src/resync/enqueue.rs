//! Queuing a request's resyncs in two steps. [`ResyncService::enqueue`]
//! decides what is new and holds its places; nothing can be sent until
//! [`Pending::release`], which the admin API calls once the request's
//! audit row is written. The row can then say what was queued (not what
//! was asked for), and no NOTIFY leaves for a request whose row was
//! refused (a token revoked meanwhile, the database down).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use dialtone_sync::{now_millis, Id, Mirror};
use tokio::time::Instant;

use super::queue::Full;
use super::track::{Entry, Resync, State, Via};
use super::{refused, Job, ResyncService, Spaced};

/// What [`ResyncService::enqueue`] did with a request's jobs.
#[derive(Default)]
pub struct Enqueued {
    /// Queued by this request (sendable once released).
    pub queued: Vec<Resync>,
    /// Already waiting from an earlier request: answered with that one.
    pub waiting: Vec<Resync>,
    /// Past the tenant's room in the queue: not queued.
    pub deferred: Vec<Job>,
    /// Sent a resync too recently (`phone_spacing_s`): not queued.
    pub spaced: Vec<(Job, Spaced)>,
}

/// A request's new resyncs, their places held but not sendable. Dropped
/// unreleased (the audit row failed, or the request went away while it
/// was written), they are withdrawn: held for good, they would keep the
/// tenant's room and answer later requests for the same phones with a
/// resync that never goes.
pub struct Pending {
    service: ResyncService,
    tenant: Id,
    seqs: Vec<u64>,
    done: Enqueued,
}

impl Pending {
    pub fn enqueued(&self) -> &Enqueued {
        &self.done
    }

    /// Lets the held resyncs be sent.
    pub fn release(mut self) -> Enqueued {
        let seqs = std::mem::take(&mut self.seqs);
        if !seqs.is_empty() {
            let mut book = self.service.book();
            book.queue.push_reserved(self.tenant, &seqs);
            metrics::gauge!("dialtone_resync_waiting").set(book.queue.len() as f64);
            drop(book);
            metrics::counter!("dialtone_resync_queued_total").increment(seqs.len() as u64);
            self.service.inner.wake.notify_one();
        }
        std::mem::take(&mut self.done)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.seqs.is_empty() {
            return;
        }
        let mut book = self.service.book();
        book.queue.unreserve(self.tenant, self.seqs.len());
        for &seq in &self.seqs {
            if let Some(mac) = book.table.get(seq).map(|e| e.mac) {
                let key = (self.tenant, mac);
                if book.waiting.get(&key) == Some(&seq) {
                    book.waiting.remove(&key);
                }
            }
            book.table.forget(seq);
        }
        metrics::gauge!("dialtone_resync_waiting").set(book.queue.len() as f64);
    }
}

impl ResyncService {
    /// Sorts one tenant's jobs and holds places for the new ones. A phone
    /// already waiting keeps its place and its resync is answered again;
    /// one sent too recently is left out; past the tenant's room the rest
    /// are deferred. Refused only when nothing new fits. `mirror` is the
    /// one the jobs were planned from: each is planned again from it when
    /// its turn comes.
    pub fn enqueue(
        &self,
        mirror: &Arc<Mirror>,
        tenant: Id,
        jobs: Vec<Job>,
    ) -> Result<Pending, Full> {
        self.inner.mirror.get_or_init(|| mirror.clone());
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
                done.waiting.push(entry.view.clone());
            } else if let Some(spaced) = book.spaced(key, Instant::now()) {
                done.spaced.push((job, spaced));
            } else {
                new.push(job);
            }
        }
        let mut pending = Pending {
            service: self.clone(),
            tenant,
            seqs: Vec::new(),
            done: Enqueued::default(),
        };
        if new.is_empty() {
            pending.done = done;
            return Ok(pending);
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
        book.queue.reserve(tenant, new.len())?;
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
            done.queued.push(view.clone());
            book.waiting.insert((tenant, job.mac), seq);
            book.table.insert(
                seq,
                Entry {
                    tenant_id: job.tenant_id,
                    mac: job.mac,
                    view,
                },
            );
            pending.seqs.push(seq);
        }
        pending.done = done;
        Ok(pending)
    }
}

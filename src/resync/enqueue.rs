//! Queuing a request's resyncs in two steps. [`ResyncService::enqueue`]
//! decides what is new and holds its places; nothing can be sent until
//! [`Pending::release`], which the admin API calls once the request's
//! audit row is written. The row can then say what was queued (not what
//! was asked for), and no NOTIFY leaves for a request whose row was
//! refused (a token revoked meanwhile, the database down).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dialtone_sync::{now_millis, Id, Mirror};
use tokio::time::Instant;

use super::book::{SameTarget, DROPPED};
use super::queue::Full;
use super::spacing::Key;
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
    /// The phone, or its target, was sent a resync too recently
    /// (`phone_spacing_s`, longer after failures): not queued.
    pub spaced: Vec<(Job, Spaced)>,
    /// Another phone's resync to the same target waits (from an earlier
    /// request, or queued by this one): not queued, as that one NOTIFY
    /// is what the address gets.
    pub same_target: Vec<(Job, SameTarget)>,
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

    /// Lets the held resyncs be sent; once the sender has stopped for
    /// good (shutdown), drops them instead, as [`ResyncService::drop_queued`]
    /// does what was queued before.
    pub fn release(mut self) -> Enqueued {
        let seqs = std::mem::take(&mut self.seqs);
        let mut done = std::mem::take(&mut self.done);
        if seqs.is_empty() {
            return done;
        }
        let mut book = self.service.book();
        if book.stopped {
            book.queue.unreserve(self.tenant, seqs.len());
            book.drop_unsent(&seqs);
            drop(book);
            for view in &mut done.queued {
                view.state = State::Failed;
                view.reason = Some(DROPPED.into());
            }
            metrics::counter!("dialtone_resync_failed_total", "reason" => "dropped")
                .increment(seqs.len() as u64);
            tracing::warn!(
                dropped = seqs.len(),
                "resync: resyncs released after shutdown dropped"
            );
            return done;
        }
        book.queue.push_reserved(self.tenant, &seqs);
        metrics::gauge!("dialtone_resync_waiting").set(book.queue.len() as f64);
        drop(book);
        metrics::counter!("dialtone_resync_queued_total").increment(seqs.len() as u64);
        self.service.inner.wake.notify_one();
        done
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
            book.unwait(seq);
            book.table.forget(seq);
        }
        metrics::gauge!("dialtone_resync_waiting").set(book.queue.len() as f64);
    }
}

impl ResyncService {
    /// Sorts one tenant's jobs and holds places for the new ones. A phone
    /// already waiting keeps its place and its resync is answered again;
    /// one whose target another phone's waiting resync (or an earlier job
    /// of this request) has is left out, as is one whose phone or target
    /// was sent one too recently; past the tenant's room the rest are
    /// deferred. Refused only when nothing new fits. `mirror` is the one
    /// the jobs were planned from: each is planned again from it when its
    /// turn comes.
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
        // Each new job's target, and its place in `new`.
        let mut claimed: HashMap<Key, usize> = HashMap::new();
        // Jobs whose target a new job has, with that job's place.
        let mut behind = Vec::new();
        for job in jobs {
            let phone = Key::phone(tenant, job.mac);
            let target = Key::target(tenant, &job.target);
            if let Some(entry) = book.waiting(&phone) {
                done.waiting.push(entry.view.clone());
            } else if let Some(entry) = book.waiting(&target) {
                let other = SameTarget {
                    mac: entry.mac,
                    target: entry.view.target.clone(),
                };
                done.same_target.push((job, other));
            } else if let Some(&first) = claimed.get(&target) {
                behind.push((job, first));
            } else if let Some(spaced) = book.spaced(&[phone, target.clone()], Instant::now()) {
                done.spaced.push((job, spaced));
            } else {
                claimed.insert(target, new.len());
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
        }
        for (job, first) in behind {
            match new.get(first) {
                Some(carrier) => {
                    let other = SameTarget {
                        mac: carrier.mac,
                        target: carrier.target.clone(),
                    };
                    done.same_target.push((job, other));
                }
                // Its target's first job did not fit either.
                None => done.deferred.push(job),
            }
        }
        if !done.deferred.is_empty() {
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
            book.wait_as(
                seq,
                [
                    Key::phone(tenant, job.mac),
                    Key::target(tenant, &view.target),
                ],
            );
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

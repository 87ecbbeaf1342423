//! Unclaimed devices, off the hot path, like the provisioning history:
//! front ends hand sightings to a bounded queue without waiting; a
//! background task folds them by (tenant, MAC) and upserts them in batches.
//!
//! Sightings come from anyone who can reach a tenant's network, forged MACs
//! included, so every stage is bounded: the queue (beyond it sightings are
//! dropped and counted), a batch, and each tenant's list in the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{Id, Mac, Millis};
use crate::store::{Store, UnclaimedDevice};

/// Devices kept per tenant (and on the unassigned list); the least recently
/// seen go first.
pub const PER_TENANT: i64 = 1_000;
/// Longest text kept from what a phone says about itself.
const MAX_TEXT: usize = 64;

/// One fetch by a phone nobody has.
#[derive(Clone, Debug)]
pub struct Sighting {
    pub tenant_id: Id,
    pub mac: Mac,
    pub family: Option<&'static str>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub source: std::net::IpAddr,
    pub at: Millis,
}

#[derive(Clone)]
pub struct UnclaimedSink {
    tx: mpsc::Sender<Sighting>,
}

impl UnclaimedSink {
    /// Never blocks.
    pub fn record(&self, sighting: Sighting) {
        if self.tx.try_send(sighting).is_err() {
            metrics::counter!("dialtone_unclaimed_dropped_total").increment(1);
        }
    }
}

pub struct UnclaimedWriter {
    rx: mpsc::Receiver<Sighting>,
    store: Arc<dyn Store>,
    batch: usize,
    /// Gathers a boot storm's sightings into one write.
    linger: Duration,
}

pub fn channel(store: Arc<dyn Store>, capacity: usize) -> (UnclaimedSink, UnclaimedWriter) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        UnclaimedSink { tx },
        UnclaimedWriter {
            rx,
            store,
            batch: 2_000,
            linger: Duration::from_millis(200),
        },
    )
}

/// Folds a batch by (tenant, MAC), sorted so that two nodes writing the
/// same devices take their row locks in the same order.
pub fn fold(sightings: &[Sighting]) -> Vec<UnclaimedDevice> {
    let mut folded: HashMap<(Id, Mac), UnclaimedDevice> = HashMap::new();
    for s in sightings {
        let d = folded
            .entry((s.tenant_id, s.mac))
            .or_insert_with(|| UnclaimedDevice {
                tenant_id: s.tenant_id,
                mac: s.mac.to_string(),
                family: None,
                model: None,
                firmware: None,
                source: String::new(),
                first_seen: s.at,
                last_seen: s.at,
                count: 0,
            });
        d.count += 1;
        d.first_seen = d.first_seen.min(s.at);
        if s.at >= d.last_seen || d.source.is_empty() {
            d.last_seen = d.last_seen.max(s.at);
            d.source = s.source.to_string();
        }
        let said = |v: &Option<String>| v.as_deref().map(clip);
        d.family = s.family.map(str::to_string).or(d.family.take());
        d.model = said(&s.model).or(d.model.take());
        d.firmware = said(&s.firmware).or(d.firmware.take());
    }
    let mut devices: Vec<UnclaimedDevice> = folded.into_values().collect();
    devices.sort_by(|a, b| (a.tenant_id, &a.mac).cmp(&(b.tenant_id, &b.mac)));
    devices
}

fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl UnclaimedWriter {
    /// Runs until cancelled, then writes what is queued.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut pending = Vec::with_capacity(self.batch);
        loop {
            let stop = crate::batch::next_batch(
                &mut self.rx,
                &mut pending,
                self.batch,
                self.linger,
                &cancel,
            )
            .await;
            if !pending.is_empty() {
                let devices = fold(&pending);
                if let Err(e) = self.store.record_unclaimed(&devices, PER_TENANT).await {
                    metrics::counter!("dialtone_unclaimed_dropped_total")
                        .increment(pending.len() as u64);
                    tracing::warn!(error = %e, devices = devices.len(), "dropping unclaimed devices batch");
                }
                pending.clear();
            }
            if stop {
                break;
            }
        }
    }
}

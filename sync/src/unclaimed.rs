//! Unclaimed devices, off the hot path, like the provisioning history:
//! front ends hand sightings to a bounded queue without waiting; a
//! background task folds them by (tenant, MAC) and upserts them in batches.
//!
//! Sightings come from anyone who can reach a tenant's network, forged MACs
//! included, so every stage is bounded: the queue, with a share per tenant
//! (`crate::queue`; beyond it sightings are dropped and counted), a batch,
//! and each tenant's list in the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::batch::{Write, Writer};
use crate::model::{clip, Id, Mac, Millis};
use crate::queue;
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
    tx: queue::Sender<Sighting>,
}

impl UnclaimedSink {
    /// Never blocks.
    pub fn record(&self, sighting: Sighting) {
        // Counted by the queue when refused.
        let _ = self.tx.send(sighting);
    }
}

/// Writes the queued sightings in batches. Clones share the queue, one run
/// at a time: a restarted run resumes where the last one stopped.
#[derive(Clone)]
pub struct UnclaimedWriter(Writer<Sighting>);

/// Sightings dropped, by reason (`crate::queue::DROP_REASONS`).
const DROPPED: &str = "dialtone_unclaimed_dropped_total";
const BATCH: usize = 2_000;
/// Gathers a boot storm's sightings into one write.
const LINGER: Duration = Duration::from_millis(200);

pub fn channel(store: Arc<dyn Store>, capacity: usize) -> (UnclaimedSink, UnclaimedWriter) {
    // The operator's list (`UNASSIGNED`) is a tenant id of its own here.
    let (tx, rx) = queue::bounded(capacity, DROPPED, |s: &Sighting| Some(s.tenant_id));
    let write: Write<Sighting> = Box::new(move |sightings| {
        let store = store.clone();
        Box::pin(async move { store.record_unclaimed(&fold(sightings), PER_TENANT).await })
    });
    (
        UnclaimedSink { tx },
        UnclaimedWriter(Writer::new(rx, write, BATCH, LINGER, "unclaimed devices")),
    )
}

impl UnclaimedWriter {
    /// Runs until `stop`, then writes what is queued within `final_limit`,
    /// like [`crate::history::HistoryWriter::run`].
    pub async fn run(self, stop: CancellationToken, final_limit: Duration) {
        self.0.run(stop, final_limit).await
    }
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
        let said = |v: &Option<String>| v.as_deref().map(|t| clip(t, MAX_TEXT).to_string());
        d.family = s.family.map(str::to_string).or(d.family.take());
        d.model = said(&s.model).or(d.model.take());
        d.firmware = said(&s.firmware).or(d.firmware.take());
    }
    let mut devices: Vec<UnclaimedDevice> = folded.into_values().collect();
    devices.sort_by(|a, b| (a.tenant_id, &a.mac).cmp(&(b.tenant_id, &b.mac)));
    devices
}

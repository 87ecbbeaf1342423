//! How many error packets a source may be sent for its requests. A refusal
//! answers a request no one has proven to come from its source address,
//! so each is a packet reflected at whoever owns that address: a flood of
//! forged requests would turn into a flood of errors at a bystander. A
//! real phone needs one error now and then to learn why; past a short
//! burst its refusals go unanswered, and its next retry asks again.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use ipnet::IpNet;

use super::limits::{canonical, source_of};
use crate::debts::Debts;

/// Errors a source may get at once.
const BURST: u64 = 10;
/// Then one every half second (two a second), in microseconds.
const INTERVAL: u64 = 500_000;
/// Sources tracked at once; the table's own admission decides which of
/// the rest (`Debts`): a flood of one-shot forged sources cannot push out
/// the address being flooded.
const TRACKED: usize = 16_384;

pub(super) struct ErrorReplies {
    debts: Mutex<Debts>,
    epoch: Instant,
    /// Networks without per-source caps (loopback: this host's own tools)
    /// get every error too.
    exempt: Vec<IpNet>,
}

impl ErrorReplies {
    pub fn new(exempt: Vec<IpNet>) -> ErrorReplies {
        ErrorReplies {
            debts: Mutex::new(Debts::new(TRACKED)),
            epoch: Instant::now(),
            exempt,
        }
    }

    /// Whether an error may go to `peer` now; one that may not is counted
    /// as a refusal with reason "error_limited".
    pub fn allow(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        let now = self.epoch.elapsed().as_micros() as u64;
        let owed = self.debts.lock().unwrap_or_else(|e| e.into_inner()).charge(
            source_of(ip),
            now,
            INTERVAL,
        );
        let allowed = owed <= BURST * INTERVAL;
        if !allowed {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "error_limited")
                .increment(1);
        }
        allowed
    }
}

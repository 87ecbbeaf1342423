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

use super::limits::source_of;
use crate::debts::Debts;
use crate::guard::listed_in;

/// Errors a source may get at once: an office behind one NAT booting its
/// phones asks for many missing files at once, and each phone that gets
/// no "not found" waits out its own timeouts. An error is no larger than
/// the request it answers (2.4x at most on the wire), so the bound is on
/// how long a bystander is sent them, not on amplification.
const BURST: u64 = 64;
/// Then twenty a second, in microseconds.
const INTERVAL: u64 = 50_000;
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
        let ip = peer.ip();
        if listed_in(&self.exempt, ip) {
            return true;
        }
        let now = self.epoch.elapsed().as_micros() as u64;
        let source = source_of(ip);
        let mut debts = self.debts.lock().unwrap_or_else(|e| e.into_inner());
        // Only an error sent is charged: charging refused ones too kept a
        // source asking faster than the rate silenced for good, and a
        // forger sending a few packets a second with an office's address
        // could keep that office from every error.
        let allowed = debts.owed(source, now) + INTERVAL <= BURST * INTERVAL;
        if allowed {
            debts.charge(source, now, INTERVAL);
        }
        drop(debts);
        if !allowed {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "error_limited")
                .increment(1);
        }
        allowed
    }
}

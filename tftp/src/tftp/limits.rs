//! Who may hold a transfer slot: the per-source share, the global cap, and
//! the retransmitted-request check, decided together under one lock so a
//! refusal never leaves anything behind. Also the rate limit on the log
//! lines refusals would otherwise write one per packet.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::guard::{listed_in, source_key};

/// The transfer table. Every entry belongs to a running transfer, so the
/// table is bounded by `max_transfers`.
pub(super) struct Slots {
    max_transfers: usize,
    max_per_source: usize,
    max_unacked_per_source: usize,
    exempt: Vec<IpNet>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    active: usize,
    /// Each client address and port's latest transfer. Only a repeat of
    /// the request that started it, before the client has acknowledged
    /// anything, is a retransmitted request and ignored: the client may
    /// not have heard our first answer yet. Anything else from there is
    /// served even if the previous transfer is still being wound down:
    /// the phone's next file (phones often keep one source port), the
    /// same file with other options (a PXE client asks for tsize, aborts
    /// the OACK, asks for blksize), or the same request once a packet was
    /// acknowledged (the client restarted, or its transfer ended and the
    /// next one asks for the file again before our side has caught up).
    by_peer: HashMap<SocketAddr, PeerTransfer>,
    /// Running transfers per source (see `source_key`), evicted ones
    /// still ending included.
    by_source: HashMap<IpAddr, Vec<Arc<TransferState>>>,
    /// Each source's share (its running transfers less those still
    /// ending), ordered, the most last: who gives way to a newcomer from a
    /// lighter source when the server is full (see `heavier_than_fair`).
    ranked: BTreeSet<(usize, IpAddr)>,
    /// Of those, the ones whose client has not acknowledged anything yet,
    /// by id (oldest first).
    unacked_by_source: HashMap<IpAddr, VecDeque<u64>>,
    /// Of a source's transfers, those told to end that still hold slots:
    /// they no longer count toward its share.
    evicting_by_source: HashMap<IpAddr, usize>,
    /// Every transfer no ACK has answered yet (exempt networks' too) by
    /// id, so oldest first: who makes room when the server is full (see
    /// `admit`).
    unacked: BTreeMap<u64, Arc<TransferState>>,
    /// Transfers told to end that still hold their slots.
    evicting: usize,
    next_id: u64,
}

struct PeerTransfer {
    id: u64,
    /// The request packet as received.
    request: Box<[u8]>,
    state: Arc<TransferState>,
}

impl PeerTransfer {
    /// Whether `request` is its client asking again for what it has not
    /// heard yet. Once the client has acknowledged a packet it has heard
    /// us, and a transfer told to give way answers nothing more: either
    /// way the request is a new one.
    fn is_retransmitted(&self, request: &[u8]) -> bool {
        *self.request == *request
            && !self.state.acknowledged.load(Ordering::Acquire)
            && !self.state.evicted.load(Ordering::Acquire)
    }
}

/// What `admit` knows of a running transfer, and how it tells one to end
/// early.
struct TransferState {
    id: u64,
    /// The client has acknowledged a packet (exempt networks' too).
    acknowledged: AtomicBool,
    /// Its request came again since its last resend.
    asked_again: AtomicBool,
    evicted: AtomicBool,
    wake: tokio::sync::Notify,
    /// When its first packet went out: a transfer still being provisioned
    /// (a render waiting for the pool in a boot storm) has not been waiting
    /// for an ACK, and its source's next request does not evict it.
    sent: std::sync::OnceLock<Instant>,
    /// DATA bytes the client has acknowledged, and the rate it is measured
    /// against when its source must give way (see `slowest_of`).
    delivered: AtomicU64,
    pace: AtomicU64,
    source: Option<IpAddr>,
}

impl TransferState {
    /// Bytes short of `pace` since its first packet (negative: ahead).
    fn behind(&self, now: Instant) -> i128 {
        let Some(sent) = self.sent.get() else {
            return 0;
        };
        let due = i128::from(self.pace.load(Ordering::Relaxed))
            * now.saturating_duration_since(*sent).as_millis() as i128
            / 1000;
        due - i128::from(self.delivered.load(Ordering::Relaxed))
    }
}

/// How long a transfer may wait for its client's first ACK (from its first
/// packet) before a new request from the same source may take its place.
/// A real client answers within a round trip; without this, forged
/// requests from an office's address (a few a second, each waiting out the
/// stall bound) would hold its whole share and lock its phones out. Only
/// the source's oldest such transfer is looked at: one still provisioned
/// ahead of it means a refusal, as before.
const FIRST_ACK_WAIT: Duration = Duration::from_secs(1);

pub(super) enum Admission {
    Granted(Slot),
    Retransmission,
    /// The source has `max_unacked_per_source` transfers that no ACK has
    /// answered yet: dropped without a reply (see `admit`).
    Unacked,
    PerSource,
    Busy,
}

impl Slots {
    pub fn new(
        max_transfers: usize,
        max_per_source: usize,
        max_unacked_per_source: usize,
        exempt: Vec<IpNet>,
    ) -> Slots {
        Slots {
            max_transfers: max_transfers.max(1),
            max_per_source: max_per_source.max(1),
            max_unacked_per_source: max_unacked_per_source.max(1),
            exempt,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn active(&self) -> usize {
        self.lock().active
    }

    /// The per-source share is checked before the global cap: one source
    /// past its share must hear so even while the server has room, and it
    /// can never be what fills the server.
    ///
    /// A source address can be forged, and a forged source never ACKs
    /// (our packets go to the real owner of the address, or nowhere), so
    /// its transfers would each hold a slot until the stall bound. An ACK
    /// on the transfer's own port proves the client receives what we send:
    /// until then a transfer is unacknowledged, and a source may have only
    /// a few of those. Past that its requests are dropped without a reply:
    /// a real phone retransmits its request after its timeout, and a
    /// forged one gets no error packet reflected at someone else. The
    /// limit applies only once a quarter of the slots are taken: an office
    /// of phones behind one address that boots at once costs nothing while
    /// there is room, and a flood from one source meets the limit long
    /// before the cap. A flood from many forged sources, a transfer each,
    /// meets the cap instead: there the oldest unacknowledged transfer
    /// gives its slot to the new request.
    ///
    /// A source at either limit gets room from its own oldest transfer
    /// still waiting for a first ACK past `FIRST_ACK_WAIT`: forged requests
    /// from an office's address then only push out each other, unless
    /// they come faster than its share a second.
    ///
    /// `request` is the request packet: only a repeat of the one that
    /// started the running transfer of `peer`, none of whose packets the
    /// client has acknowledged, is a retransmission (see `Inner::by_peer`).
    /// A forged request from a phone's address and port gains nothing by
    /// this that another file name did not already give it: a new slot
    /// beside the phone's transfer, or in single-port mode that transfer's
    /// end.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr, request: &[u8]) -> Admission {
        self.admit_at(peer, request, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, peer: SocketAddr, request: &[u8], now: Instant) -> Admission {
        let ip = peer.ip();
        let source = (!listed_in(&self.exempt, ip)).then(|| source_key(ip));
        let mut inner = self.lock();
        if let Some(running) = inner
            .by_peer
            .get(&peer)
            .filter(|running| running.is_retransmitted(request))
        {
            // Its client has not heard our first packet: the transfer owes
            // it a resend at its next timer (see `Transfer::on_timer`).
            running.state.asked_again.store(true, Ordering::Release);
            return Admission::Retransmission;
        }
        if let Some(key) = source {
            let unacked = inner.unacked_by_source.get(&key).map_or(0, VecDeque::len);
            let running = share(&inner, key);
            let over_unacked =
                inner.active >= self.max_transfers / 4 && unacked >= self.max_unacked_per_source;
            let over_share = running >= self.max_per_source;
            if (over_unacked || over_share) && !self.evict_waiting_of(&mut inner, key, now) {
                return if over_unacked {
                    Admission::Unacked
                } else {
                    Admission::PerSource
                };
            }
        }
        if inner.active - inner.evicting >= self.max_transfers {
            // Full. Forged sources spread over many addresses pass every
            // per-source check and would keep every slot for the stall
            // bound at a few hundred packets a second. A transfer no ACK
            // has answered yet makes room instead, the oldest first: a
            // real client's first ACK comes within a round trip, a forged
            // one's never. An evicted transfer keeps its slot until it has
            // ended (in single-port mode, at its next timer), so at most
            // `max_transfers` of them: past that a flood would grow the
            // transfer table by one entry a request.
            //
            // Slow but real clients pass all of that: ACKing at the minimum
            // rate, a few sources held every slot for hours. So a newcomer
            // from a source holding fewer transfers than the heaviest takes
            // a slot of that source (see `heavier_than_fair`): its oldest
            // transfer still waiting for a first ACK, else any source's,
            // else its slowest, which ends with "busy" (its client has
            // ACKed, so it is no forger). A flood then costs its own
            // sources their slots, and a source within its fair share
            // keeps its own.
            if inner.evicting >= self.max_transfers {
                return Admission::Busy;
            }
            let heavier = source.and_then(|key| self.heavier_than_fair(&inner, key));
            let unanswered = heavier
                .and_then(|heavy| inner.unacked_by_source.get(&heavy)?.front().copied())
                .or_else(|| inner.unacked.keys().next().copied())
                .and_then(|id| inner.unacked.get(&id).cloned());
            let Some(victim) =
                unanswered.or_else(|| heavier.and_then(|heavy| slowest_of(&inner, heavy, now)))
            else {
                return Admission::Busy;
            };
            evict(&mut inner, &victim);
        }
        inner.active += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let state = Arc::new(TransferState {
            id,
            acknowledged: AtomicBool::new(false),
            asked_again: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            sent: std::sync::OnceLock::new(),
            delivered: AtomicU64::new(0),
            pace: AtomicU64::new(0),
            source,
        });
        if let Some(key) = source {
            reshare(&mut inner, key, |inner| {
                inner.by_source.entry(key).or_default().push(state.clone())
            });
            inner
                .unacked_by_source
                .entry(key)
                .or_default()
                .push_back(id);
        }
        // An exempt network's too: exempt from the per-source limits, not
        // from proving itself. An office NAT's public address can be
        // forged from anywhere, and its forged requests must give way to
        // real ones and get no more resends or end packets than any.
        inner.unacked.insert(id, state.clone());
        inner.by_peer.insert(
            peer,
            PeerTransfer {
                id,
                request: request.into(),
                state: state.clone(),
            },
        );
        Admission::Granted(Slot {
            slots: self.clone(),
            peer,
            source,
            id,
            unacked: AtomicBool::new(true),
            state,
        })
    }

    /// Evicts `key`'s oldest transfer still waiting for its first ACK, if
    /// it has waited `FIRST_ACK_WAIT` and the source's evicted transfers
    /// still ending are fewer than its share (they hold slots until then).
    fn evict_waiting_of(&self, inner: &mut Inner, key: IpAddr, now: Instant) -> bool {
        let ending = inner.evicting_by_source.get(&key).copied().unwrap_or(0);
        let oldest = inner
            .unacked_by_source
            .get(&key)
            .and_then(|ids| ids.front().copied())
            .filter(|id| {
                inner.unacked.get(id).is_some_and(|e| {
                    e.sent
                        .get()
                        .is_some_and(|sent| now.saturating_duration_since(*sent) >= FIRST_ACK_WAIT)
                })
            });
        let victim = oldest.and_then(|id| inner.unacked.get(&id).cloned());
        match victim {
            Some(victim) if ending < self.max_per_source && inner.evicting < self.max_transfers => {
                evict(inner, &victim);
                true
            }
            _ => false,
        }
    }

    /// The heaviest source, if a newcomer from `key` (counted) would still
    /// hold fewer transfers than it, and it holds more than a fair share:
    /// the slots over the sources holding any, the newcomer's included.
    /// At or under that share a source is never made to give way.
    fn heavier_than_fair(&self, inner: &Inner, key: IpAddr) -> Option<IpAddr> {
        let &(most, heaviest) = inner.ranked.last()?;
        let own = share(inner, key);
        let sources = inner.ranked.len() + usize::from(own == 0);
        let fair = (self.max_transfers / sources).max(1);
        (own + 1 < most && most > fair).then_some(heaviest)
    }
}

/// Of `key`'s transfers not yet told to end, the one furthest behind its
/// pace (see `Slot::expecting`).
fn slowest_of(inner: &Inner, key: IpAddr, now: Instant) -> Option<Arc<TransferState>> {
    inner
        .by_source
        .get(&key)?
        .iter()
        .filter(|state| !state.evicted.load(Ordering::Acquire))
        .max_by_key(|state| state.behind(now))
        .cloned()
}

/// Tells a transfer to end; it keeps its slot until it has.
fn evict(inner: &mut Inner, state: &Arc<TransferState>) {
    if state.evicted.swap(true, Ordering::AcqRel) {
        return;
    }
    inner.unacked.remove(&state.id);
    state.wake.notify_one();
    inner.evicting += 1;
    if let Some(key) = state.source {
        forget_unacked(&mut inner.unacked_by_source, key, state.id);
        reshare(inner, key, |inner| {
            *inner.evicting_by_source.entry(key).or_default() += 1
        });
    }
    metrics::counter!("dialtone_tftp_evicted_total").increment(1);
}

/// A source's running transfers less those told to end.
fn share(inner: &Inner, key: IpAddr) -> usize {
    inner.by_source.get(&key).map_or(0, Vec::len)
        - inner.evicting_by_source.get(&key).copied().unwrap_or(0)
}

/// Applies `change` to `key`'s counts and keeps `ranked` in step with them.
fn reshare(inner: &mut Inner, key: IpAddr, change: impl FnOnce(&mut Inner)) {
    let from = share(inner, key);
    change(inner);
    let to = share(inner, key);
    if from != to {
        inner.ranked.remove(&(from, key));
        if to > 0 {
            inner.ranked.insert((to, key));
        }
    }
}

fn forget_unacked(map: &mut HashMap<IpAddr, VecDeque<u64>>, key: IpAddr, id: u64) {
    if let Some(ids) = map.get_mut(&key) {
        ids.retain(|i| *i != id);
        if ids.is_empty() {
            map.remove(&key);
        }
    }
}

fn decrement(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(count) = map.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            map.remove(&key);
        }
    }
}

/// A transfer's slot, released however the transfer ends (a panic included).
pub(super) struct Slot {
    slots: Arc<Slots>,
    peer: SocketAddr,
    source: Option<IpAddr>,
    id: u64,
    /// Counted in `unacked` (and its source's `unacked_by_source`) until
    /// the client's first ACK.
    unacked: AtomicBool,
    state: Arc<TransferState>,
}

impl Slot {
    /// Unique per transfer: tells one transfer of a client address and port
    /// from the next.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client's address and port.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The transfer's first packet goes out at `now`: from here it waits
    /// for an ACK.
    pub fn sending(&self, now: Instant) {
        let _ = self.state.sent.set(now);
    }

    /// When its source must give way, its transfers are measured against
    /// `bytes_per_second` from their first packet: the slowest goes.
    pub fn expecting(&self, bytes_per_second: u64) {
        self.state.pace.store(bytes_per_second, Ordering::Relaxed);
    }

    /// The client has acknowledged `bytes` of DATA in all.
    pub fn delivered(&self, bytes: u64) {
        self.state.delivered.store(bytes, Ordering::Relaxed);
    }

    /// The client acknowledged a packet on the transfer's port: it is not
    /// a forged source, and stops counting against its source's few; and
    /// it has heard us, so its request again is a new one.
    pub fn acknowledged(&self) {
        self.state.acknowledged.store(true, Ordering::Release);
        if self.unacked.swap(false, Ordering::AcqRel) {
            let mut inner = self.slots.lock();
            if let Some(key) = self.source {
                forget_unacked(&mut inner.unacked_by_source, key, self.id);
            }
            inner.unacked.remove(&self.id);
        }
    }

    /// Whether the client repeated its request since this was last asked.
    pub fn take_asked_again(&self) -> bool {
        self.state.asked_again.swap(false, Ordering::AcqRel)
    }

    /// The client has acknowledged something: it receives what we send.
    pub fn is_proven(&self) -> bool {
        !self.unacked.load(Ordering::Acquire)
    }

    /// Told to end: the server was full and this transfer was the oldest
    /// no ACK had answered, or its source held more than its share.
    pub fn is_evicted(&self) -> bool {
        self.state.evicted.load(Ordering::Acquire)
    }

    /// Resolves once the transfer is evicted (at once if it already is).
    pub async fn evicted(&self) {
        if !self.is_evicted() {
            self.state.wake.notified().await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        inner.active -= 1;
        let evicted = self.state.evicted.load(Ordering::Acquire);
        if let Some(key) = self.source {
            let id = self.id;
            reshare(&mut inner, key, |inner| {
                if let Some(running) = inner.by_source.get_mut(&key) {
                    running.retain(|state| state.id != id);
                    if running.is_empty() {
                        inner.by_source.remove(&key);
                    }
                }
                if evicted {
                    decrement(&mut inner.evicting_by_source, key);
                }
            });
            if *self.unacked.get_mut() {
                forget_unacked(&mut inner.unacked_by_source, key, self.id);
            }
        }
        if *self.unacked.get_mut() {
            inner.unacked.remove(&self.id);
        }
        if evicted {
            inner.evicting -= 1;
        }
        if inner
            .by_peer
            .get(&self.peer)
            .is_some_and(|running| running.id == self.id)
        {
            inner.by_peer.remove(&self.peer);
        }
    }
}

/// The source `ip` counts as for per-source limits: an IPv4 address (also
/// behind a dual-stack socket or NAT64), or an IPv6 /64. Shared with the
/// HTTP front end's per-source cap, and the same unit bans are kept by.
pub fn source_of(ip: IpAddr) -> IpAddr {
    source_key(ip)
}

pub use dialtone_sync::LogLimit;

/// Counts a running transfer in `dialtone_tftp_active_transfers` until
/// dropped, however the transfer ends (a panic included).
pub(super) struct ActiveTransfer;

impl ActiveTransfer {
    pub fn start() -> ActiveTransfer {
        metrics::gauge!("dialtone_tftp_active_transfers").increment(1.0);
        ActiveTransfer
    }
}

impl Drop for ActiveTransfer {
    fn drop(&mut self) {
        metrics::gauge!("dialtone_tftp_active_transfers").decrement(1.0);
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;

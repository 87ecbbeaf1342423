//! Who may hold a transfer slot: the per-source share, the global cap, and
//! the retransmitted-request check, decided together under one lock so a
//! refusal never leaves anything behind. Also the rate limit on the log
//! lines refusals would otherwise write one per packet.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;

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
    /// Transfers by client address, with the file each is for. A second
    /// request from the same address and port for the same file is a
    /// retransmitted request and is ignored; for another file it is the
    /// phone's next file (phones often keep one source port), and it is
    /// served even if the previous transfer is still being wound down.
    by_peer: HashMap<SocketAddr, (u64, String)>,
    /// Running transfers per source (see `source_key`).
    by_source: HashMap<IpAddr, usize>,
    /// Of those, the ones whose client has not acknowledged anything yet,
    /// by id (oldest first).
    unacked_by_source: HashMap<IpAddr, VecDeque<u64>>,
    /// Of a source's transfers, those told to end that still hold slots:
    /// they no longer count toward its share.
    evicting_by_source: HashMap<IpAddr, usize>,
    /// The same transfers (exempt networks' aside) by id, so oldest first:
    /// who makes room when the server is full (see `admit`).
    unacked: BTreeMap<u64, Arc<Eviction>>,
    /// Transfers told to end that still hold their slots.
    evicting: usize,
    next_id: u64,
}

/// How `admit` tells a transfer to end early.
struct Eviction {
    evicted: AtomicBool,
    wake: tokio::sync::Notify,
    /// When its first packet went out: a transfer still being provisioned
    /// (a render waiting for the pool in a boot storm) has not been waiting
    /// for an ACK, and its source's next request does not evict it.
    sent: std::sync::OnceLock<Instant>,
    source: Option<IpAddr>,
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
    pub fn admit(self: &Arc<Self>, peer: SocketAddr, file: &str) -> Admission {
        self.admit_at(peer, file, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, peer: SocketAddr, file: &str, now: Instant) -> Admission {
        let ip = canonical(peer.ip());
        let source = (!self.exempt.iter().any(|net| net.contains(&ip))).then(|| source_key(ip));
        let mut inner = self.lock();
        if inner.by_peer.get(&peer).is_some_and(|(_, f)| f == file) {
            return Admission::Retransmission;
        }
        if let Some(key) = source {
            let unacked = inner.unacked_by_source.get(&key).map_or(0, VecDeque::len);
            let running = inner.by_source.get(&key).copied().unwrap_or(0)
                - inner.evicting_by_source.get(&key).copied().unwrap_or(0);
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
            if inner.evicting >= self.max_transfers {
                return Admission::Busy;
            }
            let Some(oldest) = inner.unacked.keys().next().copied() else {
                return Admission::Busy;
            };
            evict(&mut inner, oldest);
        }
        inner.active += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let eviction = Arc::new(Eviction {
            evicted: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            sent: std::sync::OnceLock::new(),
            source,
        });
        if let Some(key) = source {
            *inner.by_source.entry(key).or_default() += 1;
            inner
                .unacked_by_source
                .entry(key)
                .or_default()
                .push_back(id);
            inner.unacked.insert(id, eviction.clone());
        }
        inner.by_peer.insert(peer, (id, file.to_string()));
        Admission::Granted(Slot {
            slots: self.clone(),
            peer,
            source,
            id,
            unacked: AtomicBool::new(source.is_some()),
            eviction,
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
        match oldest {
            Some(id) if ending < self.max_per_source && inner.evicting < self.max_transfers => {
                evict(inner, id);
                true
            }
            _ => false,
        }
    }
}

/// Tells transfer `id` (waiting for its first ACK) to end; it keeps its
/// slot until it has.
fn evict(inner: &mut Inner, id: u64) {
    let Some(eviction) = inner.unacked.remove(&id) else {
        return;
    };
    eviction.evicted.store(true, Ordering::Release);
    eviction.wake.notify_one();
    inner.evicting += 1;
    if let Some(key) = eviction.source {
        forget_unacked(&mut inner.unacked_by_source, key, id);
        *inner.evicting_by_source.entry(key).or_default() += 1;
    }
    metrics::counter!("dialtone_tftp_evicted_total").increment(1);
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
    /// Counted in `unacked_by_source` until the client's first ACK.
    unacked: AtomicBool,
    eviction: Arc<Eviction>,
}

impl Slot {
    /// Unique per transfer: tells one transfer of a client address and port
    /// from the next.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The transfer's first packet goes out at `now`: from here it waits
    /// for an ACK.
    pub fn sending(&self, now: Instant) {
        let _ = self.eviction.sent.set(now);
    }

    /// The client acknowledged a packet on the transfer's port: it is not
    /// a forged source, and stops counting against its source's few.
    pub fn acknowledged(&self) {
        if let (Some(key), true) = (self.source, self.unacked.swap(false, Ordering::AcqRel)) {
            let mut inner = self.slots.lock();
            forget_unacked(&mut inner.unacked_by_source, key, self.id);
            inner.unacked.remove(&self.id);
        }
    }

    /// The client has acknowledged something (or its network is exempt):
    /// it receives what we send.
    pub fn is_proven(&self) -> bool {
        !self.unacked.load(Ordering::Acquire)
    }

    /// Told to end: the server was full and this transfer was the oldest
    /// no ACK had answered.
    pub fn is_evicted(&self) -> bool {
        self.eviction.evicted.load(Ordering::Acquire)
    }

    /// Resolves once the transfer is evicted (at once if it already is).
    pub async fn evicted(&self) {
        if !self.is_evicted() {
            self.eviction.wake.notified().await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        inner.active -= 1;
        let evicted = self.eviction.evicted.load(Ordering::Acquire);
        if let Some(key) = self.source {
            decrement(&mut inner.by_source, key);
            if *self.unacked.get_mut() {
                forget_unacked(&mut inner.unacked_by_source, key, self.id);
                inner.unacked.remove(&self.id);
            }
            if evicted {
                decrement(&mut inner.evicting_by_source, key);
            }
        }
        if evicted {
            inner.evicting -= 1;
        }
        if inner
            .by_peer
            .get(&self.peer)
            .is_some_and(|(id, _)| *id == self.id)
        {
            inner.by_peer.remove(&self.peer);
        }
    }
}

/// The source `ip` counts as for per-source limits: an IPv4 address (also
/// behind a dual-stack socket), or an IPv6 /64. Shared with the HTTP
/// front end's per-source cap.
pub fn source_of(ip: IpAddr) -> IpAddr {
    source_key(canonical(ip))
}

/// An IPv4 client seen through a dual-stack socket is still an IPv4
/// client: keyed and matched as one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What one source is: an IPv4 address, or an IPv6 /64, since one host
/// usually has a whole /64 to pick addresses from.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !0u128 << 64)),
        v4 => v4,
    }
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
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_ipv4_is_ipv4() {
        let a = source_key(canonical("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = source_key(canonical("2001:db8:1:2:bbbb::9".parse().unwrap()));
        let c = source_key(canonical("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Behind a dual-stack listener every IPv4 client is ::ffff:a.b.c.d;
        // a /64 of those would put all of IPv4 in one source.
        let d = source_key(canonical("::ffff:192.0.2.1".parse().unwrap()));
        let e = source_key(canonical("::ffff:192.0.2.2".parse().unwrap()));
        assert_eq!(d, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_ne!(d, e);
    }

    #[test]
    fn a_source_past_its_share_is_refused_and_its_slots_come_back() {
        let slots = Arc::new(Slots::new(10, 2, 8, vec!["10.9.0.0/16".parse().unwrap()]));
        let one = slots.admit(addr("[2001:db8::1]:1000"), "a");
        let two = slots.admit(addr("[2001:db8::2]:1000"), "a");
        assert!(matches!(
            slots.admit(addr("[2001:db8::3]:1000"), "a"),
            Admission::PerSource
        ));
        assert!(matches!(
            slots.admit(addr("[2001:db8::1]:1000"), "a"),
            Admission::Retransmission
        ));
        // Another /64 and an exempt network are not held back.
        assert!(matches!(
            slots.admit(addr("[2001:db8:0:1::1]:1000"), "a"),
            Admission::Granted(_)
        ));
        let exempt: Vec<_> = (0..5)
            .map(|n| slots.admit(addr(&format!("10.9.0.1:{}", 1000 + n)), "a"))
            .collect();
        assert!(exempt.iter().all(|a| matches!(a, Admission::Granted(_))));
        drop((one, two));
        assert!(matches!(
            slots.admit(addr("[2001:db8::3]:1000"), "a"),
            Admission::Granted(_)
        ));
        drop(exempt);
        assert_eq!(slots.active(), 0);
        assert!(slots.lock().by_source.is_empty() && slots.lock().by_peer.is_empty());
    }

    fn granted(admission: Admission) -> Slot {
        match admission {
            Admission::Granted(slot) => slot,
            _ => panic!("not granted"),
        }
    }

    #[test]
    fn the_global_cap_still_holds() {
        let slots = Arc::new(Slots::new(2, 64, 8, vec!["10.9.0.0/16".parse().unwrap()]));
        let held: Vec<_> = ["192.0.2.1:1", "192.0.2.2:1"]
            .iter()
            .map(|a| granted(slots.admit(addr(a), "a")))
            .collect();
        held.iter().for_each(Slot::acknowledged);
        assert!(matches!(
            slots.admit(addr("192.0.2.3:1"), "a"),
            Admission::Busy
        ));
        drop(held);
        // Exempt networks' transfers are never made to give way.
        let exempt: Vec<_> = (0..2)
            .map(|n| granted(slots.admit(addr(&format!("10.9.0.1:{n}")), "a")))
            .collect();
        assert!(matches!(
            slots.admit(addr("192.0.2.3:1"), "a"),
            Admission::Busy
        ));
        drop(exempt);
    }

    /// Forged sources (one each) fill the server; the next request takes
    /// the slot of the oldest transfer no ACK answered, which is told to
    /// end, and every count comes back as the evicted ones end.
    #[tokio::test]
    async fn a_full_server_evicts_the_oldest_unacknowledged_transfer() {
        let slots = Arc::new(Slots::new(4, 64, 8, vec![]));
        let forged: Vec<Slot> = (1..=3)
            .map(|n| granted(slots.admit(addr(&format!("198.51.100.{n}:1")), "a")))
            .collect();
        let phone = granted(slots.admit(addr("192.0.2.1:1"), "a"));
        phone.acknowledged();
        let late = granted(slots.admit(addr("192.0.2.9:1"), "a"));
        assert!(forged[0].is_evicted());
        forged[0].evicted().await;
        assert!(!forged[1].is_evicted() && !phone.is_evicted() && !late.is_evicted());
        // The evicted one still holds its slot until it ends; the rest are
        // full again, so the next request takes the next oldest.
        let later = granted(slots.admit(addr("192.0.2.10:1"), "a"));
        assert!(forged[1].is_evicted());
        drop(forged);
        assert_eq!(slots.active(), 3);
        // With room, nothing is evicted.
        later.acknowledged();
        let fourth = granted(slots.admit(addr("192.0.2.11:1"), "a"));
        assert!(!late.is_evicted());
        fourth.acknowledged();
        // Full again, all acknowledged but one: that one gives way, and
        // acknowledged transfers never do.
        let last = granted(slots.admit(addr("192.0.2.12:1"), "a"));
        assert!(late.is_evicted());
        assert!(!phone.is_evicted() && !later.is_evicted() && !fourth.is_evicted());
        last.acknowledged();
        assert!(matches!(
            slots.admit(addr("192.0.2.13:1"), "a"),
            Admission::Busy
        ));
        drop((phone, late, later, fourth, last));
        let inner = slots.lock();
        assert_eq!((inner.active, inner.evicting), (0, 0));
        assert!(inner.unacked.is_empty() && inner.unacked_by_source.is_empty());
    }

    /// Evicted transfers end at their own pace (a single-port listener's at
    /// their next timer), so a flood faster than that finds the server
    /// busy once as many are ending as may run, instead of each request
    /// evicting one more.
    #[test]
    fn evictions_still_ending_are_bounded() {
        let slots = Arc::new(Slots::new(4, 64, 8, vec![]));
        let mut held: Vec<Slot> = Vec::new();
        let mut busy = 0;
        for n in 0..100u32 {
            let from = addr(&format!("198.51.{}.{}:1", n / 250, n % 250 + 1));
            match slots.admit(from, "a") {
                Admission::Granted(slot) => held.push(slot),
                Admission::Busy => busy += 1,
                _ => panic!("one request a source"),
            }
        }
        // 4 running, 4 told to end and not yet gone; the rest were refused.
        assert_eq!(held.len(), 8);
        assert_eq!(busy, 92);
        assert_eq!(held.iter().filter(|s| s.is_evicted()).count(), 4);
        assert_eq!(slots.lock().evicting, 4);
        // As the evicted ones end, the next requests evict again.
        held.retain(|s| !s.is_evicted());
        assert!(matches!(
            slots.admit(addr("203.0.113.1:1"), "a"),
            Admission::Granted(_)
        ));
    }

    #[test]
    fn a_source_may_have_few_unacknowledged_transfers() {
        // Room for 8: the limit applies from 2 running transfers on.
        let slots = Arc::new(Slots::new(8, 64, 2, vec!["10.9.0.0/16".parse().unwrap()]));
        let first = slots.admit(addr("192.0.2.1:1"), "a");
        let second = slots.admit(addr("192.0.2.1:2"), "a");
        assert!(matches!(
            slots.admit(addr("192.0.2.1:3"), "a"),
            Admission::Unacked
        ));
        // Others, and exempt networks, are not held back by this source.
        assert!(matches!(
            slots.admit(addr("192.0.2.2:1"), "a"),
            Admission::Granted(_)
        ));
        let exempt: Vec<_> = (0..2)
            .map(|n| slots.admit(addr(&format!("10.9.0.1:{n}")), "a"))
            .collect();
        assert!(exempt.iter().all(|a| matches!(a, Admission::Granted(_))));
        // An acknowledged transfer keeps its slot but no longer counts.
        let Admission::Granted(first) = first else {
            panic!("granted")
        };
        first.acknowledged();
        first.acknowledged();
        let third = slots.admit(addr("192.0.2.1:3"), "a");
        assert!(matches!(third, Admission::Granted(_)));
        assert!(matches!(
            slots.admit(addr("192.0.2.1:4"), "a"),
            Admission::Unacked
        ));
        drop((first, second, third, exempt));
        assert!(slots.lock().unacked_by_source.is_empty() && slots.lock().by_source.is_empty());
    }

    /// Forged requests from an office's address fill its share; its
    /// phones' requests take the place of the oldest that no ACK answered
    /// for a second, and are refused only while all are younger.
    #[test]
    fn a_source_at_its_share_makes_room_from_its_own_unanswered_transfers() {
        let slots = Arc::new(Slots::new(100, 4, 2, vec![]));
        let start = Instant::now();
        let forged: Vec<Slot> = (0..4)
            .map(|n| granted(slots.admit_at(addr(&format!("192.0.2.1:{n}")), "a", start)))
            .collect();
        let later = start + FIRST_ACK_WAIT;
        // Still being provisioned (nothing sent yet): nothing gives way.
        assert!(matches!(
            slots.admit_at(addr("192.0.2.1:49"), "a", later),
            Admission::PerSource
        ));
        forged.iter().for_each(|s| s.sending(start));
        assert!(matches!(
            slots.admit_at(addr("192.0.2.1:50"), "a", start),
            Admission::PerSource
        ));
        let phone = granted(slots.admit_at(addr("192.0.2.1:51"), "a", later));
        assert!(forged[0].is_evicted() && !forged[1].is_evicted());
        phone.acknowledged();
        // Another source's share is its own: nothing of this one moves.
        let other = granted(slots.admit_at(addr("192.0.2.2:1"), "a", later));
        assert!(!forged[1].is_evicted());
        // The evicted one no longer counts; the next takes the next oldest,
        // and acknowledged transfers never give way.
        let more: Vec<Slot> = (60..63)
            .map(|n| granted(slots.admit_at(addr(&format!("192.0.2.1:{n}")), "a", later)))
            .collect();
        more.iter().for_each(|s| s.sending(later));
        assert!(forged.iter().all(Slot::is_evicted) && !phone.is_evicted());
        // All of the share young again: refused.
        assert!(matches!(
            slots.admit_at(addr("192.0.2.1:70"), "a", later),
            Admission::PerSource
        ));
        drop((forged, phone, other, more));
        let inner = slots.lock();
        assert_eq!((inner.active, inner.evicting), (0, 0));
        assert!(inner.unacked.is_empty() && inner.unacked_by_source.is_empty());
        assert!(inner.by_source.is_empty() && inner.evicting_by_source.is_empty());
    }

    #[test]
    fn while_there_is_room_unacknowledged_transfers_are_not_limited() {
        let slots = Arc::new(Slots::new(100, 64, 2, vec![]));
        let office: Vec<_> = (0..20)
            .map(|n| slots.admit(addr(&format!("192.0.2.1:{n}")), "a"))
            .collect();
        assert!(office.iter().all(|a| matches!(a, Admission::Granted(_))));
        let more: Vec<_> = (0..5)
            .map(|n| slots.admit(addr(&format!("192.0.2.2:{n}")), "a"))
            .collect();
        assert!(more.iter().all(|a| matches!(a, Admission::Granted(_))));
        // 25 of 100 taken: from now on the limit holds.
        assert!(matches!(
            slots.admit(addr("192.0.2.1:99"), "a"),
            Admission::Unacked
        ));
    }
}

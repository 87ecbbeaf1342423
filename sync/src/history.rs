//! Provisioning history, off the hot path. Front ends hand records to a
//! bounded queue without waiting; a background task writes them in batches.
//! When the queue is full (database slow or down), or a tenant holds its
//! share of it (`crate::queue`), records are dropped and counted: history
//! is worth less than answering the next phone.
//!
//! History says when each phone last booted and what it fetched; it is not
//! a request log. The same fetch (phone, file, outcome, protocol, source;
//! an IPv6 source by its /64; for a served one, the bytes served) repeated
//! within [`REPEAT_WINDOW_MS`] is recorded once, so a phone in a reboot
//! loop, or a storm of retries, cannot flood the table. And a phone adds at most
//! [`PER_PHONE_PER_MINUTE`] rows a minute of refused fetches, and as many
//! of fetches that failed past admission: a refused TFTP request's source
//! can be forged, so requests naming a known phone's files from ever new
//! sources (each a new repeat) wrote a row each, as fast as the writer
//! went, into a table pruned only by age. The two are counted apart
//! because a refusal takes nothing but the MAC, which is no secret: with
//! one budget, a forger spent it and the phone's own failures (a template
//! error, a transfer it broke off) went unrecorded.
//! Served fetches are not capped: over TFTP their row is written when the
//! transfer ends, and only once the client acknowledged a packet (so an
//! ended transfer's other outcomes, a client's error or a stall, share the
//! refusals' cap), over HTTP the source answered on TCP, and a capped
//! budget shared with refusals let forged refusals crowd out the phone's
//! own fetches (its history, fleet view and resyncs' refetch).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::model::Millis;

use tokio_util::sync::CancellationToken;

use crate::batch::{Write, Writer};
use crate::queue;
use crate::store::{BootRecord, Store};

/// Repeats of one fetch within this window are recorded once.
pub const REPEAT_WINDOW_MS: Millis = 60_000;
/// Fetches remembered for de-duplication; past it, old ones are forgotten.
const REMEMBERED: usize = 100_000;
/// Phones whose fetches are recorded in full at once (resyncs in flight).
pub const FRESH: usize = 20_000;
/// Rows of refused fetches one phone may add a minute: a misconfigured
/// phone asks for a few missing files a boot, and boots a few times a
/// minute at most.
pub const PER_PHONE_PER_MINUTE: u32 = 30;
/// Rows of fetches that failed past admission one phone may add a minute,
/// counted apart from refusals ([`Unserved`]).
pub const FAILED_PER_PHONE_PER_MINUTE: u32 = 30;
/// Phones whose minute is counted at once; past it, the counts start over
/// (a flood of as many phones' MACs only loosens the bound for a minute).
const RATED: usize = 100_000;

#[derive(Clone)]
pub struct HistorySink {
    tx: queue::Sender<BootRecord>,
    dropped: Arc<AtomicU64>,
    repeats: Arc<AtomicU64>,
    /// Hash of a fetch → when it was last recorded.
    recent: Arc<Mutex<HashMap<u64, Millis>>>,
    /// Keys the hash of `recent`, drawn at random for each sink. With a
    /// seed anyone could read, a tenant could search offline for a file
    /// name whose fetch hashed as another tenant's phone's, and pass that
    /// phone's next fetch off as a repeat: no row, so no `refetched_at`
    /// for its resync. Under a secret key there is nothing to search for,
    /// and `recent` still holds 8 bytes a fetch, not its texts.
    repeat_keys: RandomState,
    /// MAC → until when its fetches are never repeats (a resync asked for
    /// a fetch, and its row is how the fetch is seen). Counted apart so
    /// the hot path takes no extra lock while it is empty.
    fresh: Arc<Mutex<HashMap<String, Millis>>>,
    fresh_len: Arc<AtomicU64>,
    /// MAC → its budgets.
    rated: Arc<Mutex<HashMap<String, Budgets>>>,
}

/// Per [`Unserved`] kind, the minute a phone's rows are counted in and how
/// many so far.
type Budgets = [(Millis, u32); 2];

/// Why a fetch was not served whole, as its budget goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unserved {
    /// Refused before anything of the phone's was used: unknown file, not
    /// admitted from that source, banned, no credentials. Anyone who knows
    /// the MAC can cause these.
    Refused = 0,
    /// Failed after admission: a render error, a transfer the client broke
    /// off or let stall. The phone's own trouble, which its admins look for.
    Failed = 1,
}

/// Outcome texts of refusals (`dialtone_tftp`'s `outcome.rs`: "not-found",
/// or "error: " and the refusal's message). Anything else not "ok" failed
/// past admission; a refusal text missing here would let a forger spend
/// the failures' budget again, as every refusal did when they shared one.
const REFUSALS: [&str; 5] = [
    "not-found",
    "error: source banned",
    // Written by no release since failed logins were: kept for rows an
    // older node may still write.
    "error: device authentication required",
    "error: device authentication failed",
    "error: refused path",
];

impl Unserved {
    fn of(outcome: &str) -> Unserved {
        if REFUSALS.iter().any(|refusal| outcome.starts_with(refusal)) {
            Unserved::Refused
        } else {
            Unserved::Failed
        }
    }

    fn cap(self) -> u32 {
        match self {
            Unserved::Refused => PER_PHONE_PER_MINUTE,
            Unserved::Failed => FAILED_PER_PHONE_PER_MINUTE,
        }
    }
}

/// U+0000 replaced in every text of `record`. PostgreSQL refuses such
/// text, and a refused row cost its batch's neighbours, any tenant's, their
/// rows; a tenant's template can put it in an outcome (`throw("\0")`).
fn scrub_nul(record: &mut BootRecord) {
    let scrub = |text: &mut String| {
        if text.contains('\0') {
            *text = text.replace('\0', "\u{FFFD}");
        }
    };
    for text in [
        &mut record.mac,
        &mut record.remote_ip,
        &mut record.protocol,
        &mut record.file,
        &mut record.outcome,
    ] {
        scrub(text);
    }
    for text in [
        &mut record.user_agent,
        &mut record.model,
        &mut record.firmware,
    ]
    .into_iter()
    .flatten()
    {
        scrub(text);
    }
}

impl HistorySink {
    /// Never blocks.
    pub fn record(&self, record: BootRecord) {
        self.record_keyed(record, None);
    }

    /// [`HistorySink::record`] of a fetch that was served `content` (what
    /// tells its bytes from others, an ETag): one that got other bytes is
    /// never a repeat. Only the node that sent a NOTIFY records the phone
    /// in full ([`HistorySink::record_next`]), so a node that had served it
    /// moments before dropped its refetch as a repeat, and the resync never
    /// read as refetched. A NOTIFY mostly follows a change, whose refetch
    /// gets new bytes; an unchanged file refetched there is still dropped.
    pub fn record_served(&self, record: BootRecord, content: &str) {
        self.record_keyed(record, Some(content));
    }

    fn record_keyed(&self, mut record: BootRecord, content: Option<&str>) {
        scrub_nul(&mut record);
        let key = match content {
            Some(content) => self.served_key(&record, content),
            None => self.repeat_key(&record),
        };
        if self.is_repeat(&record, key) {
            self.repeats.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if record.outcome != "ok" && !self.within_rate(&record) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(DROPPED, "reason" => "phone_rate").increment(1);
            return;
        }
        if self.tx.send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records every fetch of `mac` until `until`, repeats included.
    /// At most [`FRESH`] phones at once; past it, expired ones go, and if
    /// none has, the request is ignored (the fetch may then go unseen).
    pub fn record_next(&self, mac: &str, until: Millis) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        if fresh.len() >= FRESH && !fresh.contains_key(mac) {
            let now = crate::model::now_millis();
            fresh.retain(|_, u| *u > now);
            if fresh.len() >= FRESH {
                return;
            }
        }
        fresh.insert(mac.to_string(), until);
        self.fresh_len.store(fresh.len() as u64, Ordering::Relaxed);
    }

    fn is_fresh(&self, r: &BootRecord) -> bool {
        if self.fresh_len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        match fresh.get(&r.mac) {
            Some(until) if r.at <= *until => true,
            Some(_) => {
                fresh.remove(&r.mac);
                self.fresh_len.store(fresh.len() as u64, Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// Counts `r` in its phone's minute for its kind; false past that
    /// kind's cap.
    fn within_rate(&self, r: &BootRecord) -> bool {
        let kind = Unserved::of(&r.outcome);
        let mut rated = self.rated.lock().unwrap_or_else(|e| e.into_inner());
        if rated.len() >= RATED && !rated.contains_key(&r.mac) {
            rated.retain(|_, budgets| {
                budgets
                    .iter()
                    .any(|(minute, _)| r.at.saturating_sub(*minute) < 60_000)
            });
            if rated.len() >= RATED {
                rated.clear();
            }
        }
        let budgets = rated.entry(r.mac.clone()).or_insert([(r.at, 0); 2]);
        let (minute, rows) = &mut budgets[kind as usize];
        if r.at.saturating_sub(*minute) >= 60_000 || r.at < *minute {
            (*minute, *rows) = (r.at, 0);
        }
        *rows += 1;
        *rows <= kind.cap()
    }

    /// What tells a fetch's repeats apart from other fetches.
    fn repeat_key(&self, r: &BootRecord) -> u64 {
        // File names match whatever their case, and a leading slash is
        // TFTP's habit: each spelling of one file is one fetch here, or
        // anyone knowing a MAC could write a row for each.
        let file = r.file.trim_start_matches('/').to_ascii_lowercase();
        self.repeat_keys.hash_one((
            &r.mac,
            file,
            &r.outcome,
            &r.protocol,
            source_of(&r.remote_ip),
            // A new owner's first fetch is never a repeat of the last owner's.
            r.tenant_id,
        ))
    }

    /// [`HistorySink::repeat_key`] of a fetch served `content`, under the
    /// same secret key.
    fn served_key(&self, r: &BootRecord, content: &str) -> u64 {
        self.repeat_keys.hash_one((self.repeat_key(r), content))
    }

    fn is_repeat(&self, r: &BootRecord, key: u64) -> bool {
        let fresh = self.is_fresh(r);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = recent.get(&key).filter(|_| !fresh) {
            if r.at >= *at && r.at - *at < REPEAT_WINDOW_MS {
                return true;
            }
        }
        if recent.len() >= REMEMBERED {
            recent.retain(|_, at| r.at - *at < REPEAT_WINDOW_MS);
            if recent.len() >= REMEMBERED {
                recent.clear();
            }
        }
        recent.insert(key, r.at);
        false
    }

    /// Fetches not recorded because the same one was recorded moments ago.
    pub fn repeats(&self) -> u64 {
        self.repeats.load(Ordering::Relaxed)
    }

    /// Records the queue refused: full, over their tenant's share, or the
    /// writer stopped. Batches the writer drops (a database error, a
    /// panic) are counted on `dialtone_history_dropped_total` only.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A source as repeats are told apart: an IPv4 address, or an IPv6
/// address's /64 (one host has all of it).
fn source_of(remote_ip: &str) -> std::borrow::Cow<'_, str> {
    match remote_ip
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_canonical())
    {
        Ok(std::net::IpAddr::V6(v6)) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::Ipv6Addr::from(prefix).to_string().into()
        }
        _ => remote_ip.into(),
    }
}

/// Writes the queued records in batches. Clones share the queue, one run
/// at a time: a restarted run resumes where the last one stopped.
#[derive(Clone)]
pub struct HistoryWriter(Writer<BootRecord>);

/// Records dropped, by reason (`crate::queue::DROP_REASONS`).
const DROPPED: &str = "dialtone_history_dropped_total";
const BATCH: usize = 500;
/// After the first record of a batch, how long to gather more. In a boot
/// storm this turns thousands of one-row transactions (and as many
/// wake-ups) into a few large ones; it was half the server's CPU.
const LINGER: Duration = Duration::from_millis(200);

pub fn channel(store: Arc<dyn Store>, capacity: usize) -> (HistorySink, HistoryWriter) {
    channel_with(
        capacity,
        LINGER,
        Box::new(move |records| {
            let store = store.clone();
            Box::pin(async move { store.record_boots(records).await })
        }),
    )
}

/// [`channel`] with the batch write given: tests stall it or make it panic.
fn channel_with(
    capacity: usize,
    linger: Duration,
    write: Write<BootRecord>,
) -> (HistorySink, HistoryWriter) {
    let (tx, rx) = queue::bounded(capacity, DROPPED, |r: &BootRecord| r.tenant_id);
    (
        HistorySink::new(tx),
        HistoryWriter(Writer::new(
            rx,
            write,
            BATCH,
            linger,
            "provisioning history",
        )),
    )
}

impl HistorySink {
    fn new(tx: queue::Sender<BootRecord>) -> Self {
        HistorySink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            repeats: Arc::new(AtomicU64::new(0)),
            recent: Arc::default(),
            repeat_keys: RandomState::new(),
            fresh: Arc::default(),
            fresh_len: Arc::default(),
            rated: Arc::default(),
        }
    }
}

impl HistoryWriter {
    /// Runs until `stop`, then writes what is queued within `final_limit`
    /// (past it, the rest is dropped and counted as `shutdown`). Cancel
    /// `stop` once nothing records any more, or the last fetches are lost.
    /// A batch whose write panics is dropped and counted; the run goes on.
    pub async fn run(self, stop: CancellationToken, final_limit: Duration) {
        self.0.run(stop, final_limit).await
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "history_repeat_tests.rs"]
mod repeat_tests;

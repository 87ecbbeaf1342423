//! Spacing: each phone's and each address's last resync sent, for as
//! long as it holds another back.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use dialtone_sync::{Id, Mac};
use tokio::time::Instant;

/// Longest a phone or an address whose resyncs keep failing waits for
/// another: spacing doubles with each failure in a row up to this.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// Phones and addresses remembered for spacing, at most; past it the one
/// closest to being forgotten anyway goes first.
const MARKS_KEPT: usize = 100_000;

/// What a resync waits and is spaced as.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Key {
    Phone(Id, Mac),
    /// A Request-URI as [`comparable_target`] writes it.
    Target(Id, String),
}

impl Key {
    pub(super) fn phone(tenant: Id, mac: Mac) -> Key {
        Key::Phone(tenant, mac)
    }

    pub(super) fn target(tenant: Id, uri: &str) -> Key {
        Key::Target(tenant, comparable_target(uri))
    }
}

/// The part of a Request-URI a proxy finds a registration by, one way:
/// a proxy drops the port and, as Kamailio does by default, folds case, so
/// `sip:101@Host:5060` reaches whoever `sip:101@host` does. What follows a
/// `;` or `?` in the user part is dropped too: a proxy may read it as
/// parameters, and two numbers that differ only there are no real case.
fn comparable_target(uri: &str) -> String {
    let rest = match uri.get(..4) {
        Some(scheme) if scheme.eq_ignore_ascii_case("sip:") => &uri[4..],
        _ => uri,
    };
    let (user, host) = rest.rsplit_once('@').unwrap_or(("", rest));
    let user = user.split([';', '?']).next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    let host = host.trim_end_matches('.');
    let host = match host.parse::<IpAddr>() {
        Ok(address) => address.to_string(),
        Err(_) => host.to_string(),
    };
    format!("{user}@{host}").to_ascii_lowercase()
}

/// A phone or an address sent a resync too recently for another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spaced {
    /// Seconds since the last one was sent.
    pub ago_s: u64,
    /// Seconds until another may be queued (at least 1).
    pub left_s: u64,
    /// The wait that applies: `phone_spacing_s`, doubled for each failure
    /// in a row after the first, at most an hour.
    pub spacing_s: u64,
    /// Resyncs in a row that failed, the last one included (0: the last
    /// was answered, or has no answer yet).
    pub failures: u32,
    /// The Request-URI, when it is the address that was sent one (through
    /// another phone of the tenant with the same line 1), not the phone.
    pub target: Option<String>,
}

impl std::fmt::Display for Spaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            None => write!(f, "not queued: sent a resync {} s ago", self.ago_s)?,
            Some(target) => write!(
                f,
                "not queued: a resync went to its line-1 address {target} {} s ago (phones of a tenant that share an address are sent one resync between them)",
                self.ago_s
            )?,
        }
        let who = if self.target.is_some() {
            "an address"
        } else {
            "a phone"
        };
        if self.failures > 0 {
            write!(
                f,
                " and failed ({} in a row), and {who} whose resyncs fail is sent at most one every {} s",
                self.failures, self.spacing_s
            )?;
        } else {
            write!(
                f,
                ", and {who} is sent at most one every {} s",
                self.spacing_s
            )?;
        }
        write!(f, "; ask again in {} s", self.left_s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Open,
    Answered,
    Failed,
}

/// A key's last resync sent.
#[derive(Clone, Copy, Debug)]
struct Mark {
    at: Instant,
    seq: u64,
    /// Resyncs of the key that failed in a row before this one.
    failed_before: u32,
    outcome: Outcome,
    /// When it may be forgotten: its place in `Spacing::expiry`.
    until: Instant,
}

/// Each phone's and address's last resync sent, for as long as it holds
/// another back: a phone that reboots on `check-sync` would
/// otherwise reboot in a loop for as long as someone (a script, a double
/// click) keeps asking, since it waits in the queue only until its
/// tenant's next token; and a contact that never answers would be sent
/// five packets a NOTIFY, as often as asked. One that failed counts too,
/// and longer with each failure in a row, until a 2xx.
pub(super) struct Spacing {
    /// `phone_spacing_s`; zero: no spacing at all, the operator's choice.
    base: Duration,
    /// How long an answer may take (timer F): an open mark outlives it, so
    /// its failure is still counted when it comes.
    answer_within: Duration,
    marks: HashMap<Key, Mark>,
    /// The marks by when they go: a monotonic clock's, so a wall clock
    /// stepped back cannot unsort them.
    expiry: BTreeSet<(Instant, Key)>,
}

impl Spacing {
    pub(super) fn new(base: Duration, answer_within: Duration) -> Spacing {
        Spacing {
            base,
            answer_within,
            marks: HashMap::new(),
            expiry: BTreeSet::new(),
        }
    }

    /// The wait after a resync that failed with `failed_before` failures
    /// in a row before it.
    fn backoff(&self, failed_before: u32) -> Duration {
        let doubled = self
            .base
            .saturating_mul(1u32.checked_shl(failed_before).unwrap_or(u32::MAX));
        doubled.min(LONGEST_WAIT.max(self.base))
    }

    fn wait(&self, mark: &Mark) -> Duration {
        match mark.outcome {
            Outcome::Failed => self.backoff(mark.failed_before),
            Outcome::Open | Outcome::Answered => self.base,
        }
    }

    /// How long `mark` is kept: its wait, or while it may still fail, long
    /// enough to carry its failures in a row to the next resync.
    fn keep(&self, mark: &Mark) -> Duration {
        match mark.outcome {
            Outcome::Answered => self.base,
            Outcome::Failed => self.backoff(mark.failed_before).saturating_mul(2),
            Outcome::Open => self
                .backoff(mark.failed_before)
                .saturating_mul(2)
                .saturating_add(self.answer_within),
        }
    }

    fn set(&mut self, key: Key, mut mark: Mark) {
        if let Some(old) = self.marks.get(&key) {
            self.expiry.remove(&(old.until, key.clone()));
        }
        mark.until = mark.at + self.keep(&mark);
        self.expiry.insert((mark.until, key.clone()));
        self.marks.insert(key, mark);
        while self.marks.len() > MARKS_KEPT {
            let Some((_, key)) = self.expiry.pop_first() else {
                break;
            };
            self.marks.remove(&key);
        }
    }

    fn forget(&mut self, now: Instant) {
        while let Some((until, _)) = self.expiry.first() {
            if *until > now {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_first() {
                self.marks.remove(&key);
            }
        }
    }

    /// Resync `seq` of `keys` was sent at `now`.
    pub(super) fn sent(&mut self, keys: &[Key], seq: u64, now: Instant) {
        if self.base.is_zero() {
            return;
        }
        self.forget(now);
        for key in keys {
            let failed_before = match self.marks.get(key) {
                Some(last) if last.outcome == Outcome::Failed => {
                    last.failed_before.saturating_add(1)
                }
                _ => 0,
            };
            let mark = Mark {
                at: now,
                seq,
                failed_before,
                outcome: Outcome::Open,
                until: now,
            };
            self.set(key.clone(), mark);
        }
    }

    /// Resync `seq` ended: answered with a 2xx (`ok`) or not. Keys sent
    /// another since keep that one's.
    pub(super) fn ended(&mut self, keys: &[Key], seq: u64, ok: bool) {
        for key in keys {
            let Some(mut mark) = self.marks.get(key).copied() else {
                continue;
            };
            if mark.seq != seq {
                continue;
            }
            if ok {
                mark.failed_before = 0;
                mark.outcome = Outcome::Answered;
            } else {
                mark.outcome = Outcome::Failed;
            }
            self.set(key.clone(), mark);
        }
    }

    /// Whether `key` was sent a resync too recently for another.
    pub(super) fn check(&mut self, key: &Key, now: Instant) -> Option<Spaced> {
        self.forget(now);
        let mark = self.marks.get(key)?;
        let wait = self.wait(mark);
        let ago = now.saturating_duration_since(mark.at);
        if ago >= wait {
            return None;
        }
        let left = wait - ago;
        let failures = match mark.outcome {
            Outcome::Failed => mark.failed_before.saturating_add(1),
            Outcome::Open | Outcome::Answered => 0,
        };
        Some(Spaced {
            ago_s: ago.as_secs(),
            left_s: left.as_millis().div_ceil(1000).max(1) as u64,
            spacing_s: wait.as_secs(),
            failures,
            target: None,
        })
    }

    /// The resync that marked `key` last.
    pub(super) fn seq_of(&self, key: &Key) -> Option<u64> {
        self.marks.get(key).map(|mark| mark.seq)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.marks.len()
    }
}

#[cfg(test)]
#[path = "spacing_tests.rs"]
mod tests;

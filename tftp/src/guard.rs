//! Anti-enumeration. A MAC is not a secret (one vendor prefix is 16.7M
//! addresses) and scanners walk them against provisioning servers, so every
//! miss (unknown file or phone, refused path, failed auth, a common file
//! asked for with a MAC it is not answered for) costs the source, shared by
//! TFTP and HTTP. A source that misses faster than its allowance is banned
//! for a while. Bans are per source: a known phone elsewhere is never slowed
//! by someone else's scan.
//!
//! TFTP sources can be forged, so a ban must not lock out an office's own
//! phones: a banned source still gets the files of the phones that fetched
//! them from it before (`known.rs`), or of its tenant's phones when it is
//! that tenant's site (`provisioning_networks`), and nothing else. There,
//! new phones' misses cost a part of one (`Provisioner::new_phone_at_site`).
//!
//! A "source" is an IPv4 address or an IPv6 /64: one host picks addresses
//! in its /64 at will, so anything finer would let it reset its own count.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dialtone_sync::{addresses, Family, Phone};
use ipnet::{IpNet, Ipv4Net};
use moka::sync::Cache;

use crate::admission::Decision;
use crate::debts::Debts;
use crate::error::ProvisionError;
use crate::identify::{IdentifyError, Identity};
use crate::known::Known;
use crate::provision::Request;

#[derive(Clone, Debug)]
pub struct GuardOptions {
    /// Misses a source may make in a burst.
    pub burst: u32,
    /// Misses a source may make per minute, sustained (0: one an hour).
    pub per_minute: u32,
    /// How long a source stays banned.
    pub ban: Duration,
    /// Sources tracked at once, and banned at once (bounded memory under a
    /// spoofed-address flood).
    pub max_sources: usize,
    /// How long a (source, phone) pair is remembered after the phone last
    /// fetched one of its own files from that source.
    pub known_ttl: Duration,
    /// Phones whose sources are remembered at once.
    pub known_phones: usize,
    /// Wrong credential answers one phone may get, within `ban` of the
    /// first, from sources it has not fetched its files from; past it,
    /// only its known sources may try its credentials until then.
    pub phone_failures: u32,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            burst: 30,
            per_minute: 10,
            ban: Duration::from_secs(600),
            max_sources: 100_000,
            known_ttl: Duration::from_secs(30 * 86_400),
            known_phones: 200_000,
            // Above what one source makes in a ban's length unbanned
            // (30 at once, then 10 a minute for 10 minutes): closing a
            // phone takes guesses from several sources.
            phone_failures: 200,
        }
    }
}

/// The unit a budget, a ban and a known pair belong to, for TFTP and HTTP
/// alike: the IPv4 host an address stands for, else its IPv6 /64. An IPv4
/// client behind a dual-stack socket or NAT64 is its own source: left as
/// /64s, all of IPv4 would be one, and one scanner's ban, or one
/// per-source cap, would fall on every IPv4 phone. Only a global IPv4
/// address counts from NAT64's well-known prefix
/// ([`dialtone_sync::addresses::embedded_ipv4`]): a forged TFTP source
/// `64:ff9b::7f00:1` must not run up 127.0.0.1's misses.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match addresses::canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}

/// Whether one of `networks` holds `ip`: the host it stands for, as
/// [`source_key`] reads it, not the /64 it would be counted under, which
/// `::1/128` (the default exempt list) would never hold. A NAT64 address
/// of a private IPv4 address is not that address here either. Exempt
/// lists and tenants' `provisioning_networks` both match through this,
/// so a NAT64 phone passes its own tenant's networks as it is counted.
pub fn listed_in(networks: &[IpNet], ip: IpAddr) -> bool {
    addresses::listed_as(ip).any(|ip| networks.iter().any(|net| net.contains(&ip)))
}

/// A network (`10.1.0.0/16`) or a bare address, as the operator's config
/// and tenants' settings list sources. Addresses are matched as IPv4 once
/// unmapped, so an IPv4-mapped network (`::ffff:10.1.0.0/112`) is read as
/// the IPv4 network it covers; kept as written it would never match.
pub fn source_network(text: &str) -> Result<IpNet, String> {
    let network = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a network (10.1.0.0/16) or an address"))?;
    let IpNet::V6(v6) = network else {
        return Ok(network);
    };
    let Some(v4) = v6.addr().to_ipv4_mapped() else {
        return Ok(network);
    };
    match v6.prefix_len().checked_sub(96) {
        Some(prefix) => Ok(IpNet::V4(
            Ipv4Net::new(v4, prefix).expect("a prefix of at most 32").trunc(),
        )),
        None => Err(format!(
            "{text:?} reaches past the IPv4-mapped range ::ffff:0:0/96; write the IPv4 network (10.1.0.0/16)"
        )),
    }
}

/// [`source_network`] for each entry; the error names the first one that
/// is not.
pub fn source_networks(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter().map(|text| source_network(text)).collect()
}

fn pack(burst: u32, per_minute: u32) -> u64 {
    (u64::from(burst) << 32) | u64::from(per_minute)
}

/// How a miss reached the node: over a connection, whose source address
/// the handshake proved, or in a datagram (TFTP), whose source anyone
/// could have written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Connection,
    Datagram,
}

/// A source ([`source_key`]) as bans name it: an IPv4 address, or an IPv6
/// /64 (`2001:db8:1:2::/64`).
pub fn source_text(source: IpAddr) -> String {
    match source {
        IpAddr::V6(v6) => format!("{v6}/64"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// A ban's log line, the one fail2ban reads
/// (`packaging/fail2ban/filter.d/dialtone.conf` matches it whole). An IPv6
/// source is its /64, as banned. A ban whose misses include one over TFTP
/// says so after the words the filter ends on: forged datagrams can run up
/// any address's misses, and a firewall that blocked on those would lock
/// out whoever the forger named.
pub fn ban_line(source: IpAddr, ban: Duration, forgeable: bool) -> String {
    let source = source_text(source_key(source));
    let forgeable = if forgeable {
        ", some over TFTP (their source may be forged)"
    } else {
        ""
    };
    format!(
        "provisioning: ban {source} for {}s after repeated misses{forgeable}",
        ban.as_secs()
    )
}

pub struct Guard {
    options: GuardOptions,
    /// `burst` and `per_minute`, changeable while running (SIGHUP).
    limits: AtomicU64,
    epoch: Instant,
    debts: Mutex<Debts>,
    /// When each ban began: what is left of it is a 429's `Retry-After`.
    bans: Cache<IpAddr, Instant>,
    /// Phones a banned source answered a credential challenge for wrongly:
    /// it gets no more tries at them until the ban ends. A known phone's
    /// source passes its ban for that phone's files, so without this a
    /// banned source could go on guessing the phone's password for ever.
    failed_while_banned: Cache<(IpAddr, dialtone_sync::Id), ()>,
    /// Wrong credential answers each phone got from sources it does not
    /// know, counted from the first for `ban`. Bans are per source, so a
    /// guesser spread over many addresses (an IPv6 /48 is 65,536 sources)
    /// would otherwise get a ban's allowance of guesses from each.
    phone_failures: Cache<dialtone_sync::Id, Arc<AtomicU32>>,
    phone_failure_limit: AtomicU32,
    known: Known,
}

impl Guard {
    pub fn new(options: GuardOptions) -> Guard {
        Guard {
            bans: Cache::builder()
                .max_capacity(options.max_sources as u64)
                .time_to_live(options.ban)
                .build(),
            failed_while_banned: Cache::builder()
                .max_capacity(options.max_sources as u64)
                .time_to_live(options.ban)
                .support_invalidation_closures()
                .build(),
            phone_failures: Cache::builder()
                .max_capacity(options.known_phones as u64)
                .time_to_live(options.ban)
                .build(),
            phone_failure_limit: AtomicU32::new(options.phone_failures.max(1)),
            limits: AtomicU64::new(pack(options.burst, options.per_minute)),
            epoch: Instant::now(),
            debts: Mutex::new(Debts::new(options.max_sources)),
            known: Known::new(options.known_ttl, options.known_phones),
            options,
        }
    }

    /// New miss limits for every source from now on (SIGHUP). The ban
    /// length and the table sizes are fixed at start.
    pub fn set_limits(&self, burst: u32, per_minute: u32) {
        self.limits
            .store(pack(burst, per_minute), Ordering::Relaxed);
    }

    /// How many wrong answers from unknown sources close a phone's
    /// credentials to them, from now on (SIGHUP).
    /// Returns how many phones a lower limit closed at once.
    pub fn set_phone_failures(&self, limit: u32) -> usize {
        let limit = limit.max(1);
        let before = self.phone_failure_limit.swap(limit, Ordering::Relaxed);
        if limit >= before {
            return 0;
        }
        // Phones between the two limits are closed from now on, without
        // reaching the new one: said and counted here, as one that reaches
        // it is.
        let closed = (self.phone_failures.iter())
            .filter(|(_, failures)| (limit..before).contains(&failures.load(Ordering::Relaxed)))
            .count();
        if closed > 0 {
            metrics::counter!("dialtone_provisioning_credentials_closed_total")
                .increment(closed as u64);
            tracing::warn!(
                phones = closed,
                ban_phone_failures = limit,
                "provisioning: a lower ban_phone_failures closed these phones' credentials to sources they have not fetched from"
            );
        }
        closed
    }

    /// How long known pairs are remembered, from now on (SIGHUP).
    pub fn set_known_ttl(&self, ttl: Duration) {
        self.known.set_ttl(ttl);
    }

    fn limits(&self) -> (u32, u32) {
        let packed = self.limits.load(Ordering::Relaxed);
        ((packed >> 32) as u32, packed as u32)
    }

    pub fn known(&self) -> &Known {
        &self.known
    }

    pub fn is_banned(&self, source: IpAddr) -> bool {
        self.bans.contains_key(&source_key(source))
    }

    /// Counts a miss over a connection (HTTP); returns true when it got
    /// the source banned.
    pub fn miss(&self, source: IpAddr) -> bool {
        self.charge(source, 1, Via::Connection)
    }

    /// Counts a miss made `via`; returns true when it got the source
    /// banned.
    pub(crate) fn miss_via(&self, source: IpAddr, via: Via) -> bool {
        self.charge(source, 1, via)
    }

    /// Counts one `parts`-th of a miss, for work a phone asks for often but
    /// an outsider must not get for free (`directory_budget.rs`); returns
    /// true when it got the source banned.
    pub(crate) fn part_of_a_miss(&self, source: IpAddr, parts: u32, via: Via) -> bool {
        self.charge(source, parts, via)
    }

    fn charge(&self, source: IpAddr, parts: u32, via: Via) -> bool {
        let source = source_key(source);
        let (burst, per_minute) = self.limits();
        let interval: u64 = match per_minute {
            0 => 3_600_000_000,
            n => 60_000_000 / u64::from(n),
        };
        let cost = interval / u64::from(parts.max(1));
        let tolerance = u64::from(burst.max(1)) * interval;
        let now = self.epoch.elapsed().as_micros() as u64;
        let (exhausted, forgeable) = {
            let mut debts = self.debts.lock().unwrap_or_else(|e| e.into_inner());
            let exhausted = debts.charge(source, now, cost) > tolerance;
            if via == Via::Datagram {
                debts.mark_forgeable(source);
            }
            let forgeable = debts.is_forgeable(source);
            if exhausted {
                // The ban takes over; its table holds the source now.
                debts.forget(source);
            }
            (exhausted, forgeable)
        };
        if exhausted && !self.bans.contains_key(&source) {
            self.bans.insert(source, Instant::now());
            metrics::counter!("dialtone_provisioning_bans_total").increment(1);
            tracing::warn!(
                target: "dialtone::ban",
                "{}",
                ban_line(source, self.options.ban, forgeable)
            );
            return true;
        }
        false
    }

    /// Sources owing misses right now (tests, diagnostics).
    pub fn tracked_sources(&self) -> usize {
        let now = self.epoch.elapsed().as_micros() as u64;
        self.debts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len(now)
    }

    pub fn banned_sources(&self) -> u64 {
        self.bans.run_pending_tasks();
        self.bans.entry_count()
    }

    /// `source` answered `phone`'s credential challenge wrongly. A banned
    /// source gets no more tries at it for the ban's length; a source the
    /// phone has not fetched from counts toward closing the phone's
    /// credentials to every such source ([`Guard::may_try_credentials`]).
    pub(crate) fn credentials_failed(&self, source: IpAddr, phone: &Phone) {
        if self.is_banned(source) {
            self.failed_while_banned
                .insert((source_key(source), phone.id), ());
        }
        if self.known.knows_phone(source, phone) {
            return;
        }
        let failures = self
            .phone_failures
            .get_with(phone.id, || Arc::new(AtomicU32::new(0)));
        let count = failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if count == self.phone_failure_limit.load(Ordering::Relaxed) {
            metrics::counter!("dialtone_provisioning_credentials_closed_total").increment(1);
            tracing::warn!(
                mac = %phone.mac,
                failures = count,
                "provisioning: phone's credentials closed to sources it has not fetched from, for at most {}s, after wrong answers from them",
                self.options.ban.as_secs()
            );
        }
    }

    /// Whether `source` may answer `phone`'s credential challenge: any
    /// source while the phone's wrong answers from unknown sources are
    /// under the limit, and after that only a source it fetched from
    /// under its present tenant and login.
    pub(crate) fn may_try_credentials(&self, source: IpAddr, phone: &Phone) -> bool {
        let closed = self.phone_failures.get(&phone.id).is_some_and(|failures| {
            failures.load(Ordering::Relaxed) >= self.phone_failure_limit.load(Ordering::Relaxed)
        });
        !closed || self.known.knows_phone(source, phone)
    }

    /// Whether a banned source may still have this file: only a file of a
    /// phone that fetched its own files from that source before, or that
    /// `at_site` admits there (its tenant's site, `provision.rs`), and
    /// whose credentials the source has not failed since the ban; or a
    /// file naming no MAC that such a phone's family asks for, or asked
    /// from a tenant's site (`at_site(None)`), whose phones ask for their
    /// family's before their own.
    pub(crate) fn lets_through(
        &self,
        source: IpAddr,
        identity: &Result<Identity, IdentifyError>,
        named: Option<&Phone>,
        at_site: impl FnOnce(Option<&Phone>) -> bool,
    ) -> bool {
        let Ok(id) = identity else { return false };
        let through = match (id.mac, named) {
            (Some(_), Some(phone)) => {
                (self.known.knows_phone(source, phone) || at_site(Some(phone)))
                    && !self
                        .failed_while_banned
                        .contains_key(&(source_key(source), phone.id))
            }
            (Some(_), None) => false,
            (None, _) => {
                let known = match id.family {
                    Some(family) => self.known.knows_family(source, &[family]),
                    None => self.known.knows_family(source, id.candidates),
                };
                known || at_site(None)
            }
        };
        if through {
            metrics::counter!("dialtone_provisioning_ban_passes_total").increment(1);
        }
        through
    }

    /// What is left of `source`'s ban, if it is banned.
    pub(crate) fn ban_left(&self, source: IpAddr) -> Option<Duration> {
        let began = self.bans.get(&source_key(source))?;
        Some(self.options.ban.saturating_sub(began.elapsed()))
    }
}

/// What a request's answer costs its source, if anything: the `kind` of
/// miss. Free: hits, the first (credential-less) step of Digest, and the
/// misses every real phone makes ([`Identity::is_probe`]) when they name no
/// MAC or one answered for here. A probe for a MAC not answered for here
/// costs like any unknown name, so a free miss tells nothing about a MAC.
/// A common file rendered for a model this deployment lacks is a miss
/// too, though served (`models.rs`): its names are endless, each a render.
pub(crate) fn miss_kind(
    request: &Request<'_>,
    decision: &Decision,
    result: &Result<impl Sized, ProvisionError>,
) -> Option<&'static str> {
    if let Some(kind) = decided_miss(decision) {
        return Some(kind);
    }
    match result {
        Err(ProvisionError::BadPath(_)) => Some("refused"),
        Err(ProvisionError::NotFound) => {
            let expected = decision
                .identity
                .as_ref()
                .is_ok_and(|id| id.is_probe() && (!id.mac_in_path() || decision.served.is_some()));
            (!expected).then_some("not_found")
        }
        Err(ProvisionError::Unauthorized { .. }) if wrong_login(request, result) => Some("login"),
        _ => None,
    }
}

/// A 401 for credentials that did not check out: a request without any
/// is Digest's first step, and a stale nonce its next, not failures; nor
/// is an answer refused unchecked (`device_auth.rs`).
pub(crate) fn wrong_login(
    request: &Request<'_>,
    result: &Result<impl Sized, ProvisionError>,
) -> bool {
    matches!(
        result,
        Err(ProvisionError::Unauthorized {
            stale: false,
            unchecked: false
        })
    ) && request.auth.is_some_and(|a| a.authorization.is_some())
}

/// The miss a request costs whatever its answer, known once it is decided
/// and before its render: what a request dropped mid-render still pays.
pub(crate) fn decided_miss(decision: &Decision) -> Option<&'static str> {
    if decision.blind {
        Some("blind")
    } else if decision.unmodeled {
        Some("unknown_model")
    } else if decision.respelled {
        Some("respelled")
    } else {
        None
    }
}

/// The bit of `family` in a set of families.
pub(crate) fn family_bit(family: Family) -> u8 {
    let index = Family::ALL.iter().position(|f| *f == family).unwrap_or(0);
    1u8.checked_shl(index as u32).unwrap_or(0)
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;

#[path = "guard_bans.rs"]
mod bans;
pub use bans::Ban;

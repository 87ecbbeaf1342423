//! Where a NOTIFY goes: the proxy, or in `direct` mode the address the
//! phone last fetched its files from, port 5060.
//!
//! That address comes from provisioning history, and history is partly
//! written by strangers: a MAC is no secret, a refused fetch can name any
//! phone from any source, and a TFTP request's UDP source can be forged.
//! So only served fetches count, picked in SQL before the limit (twenty
//! refused ones used to hide every real one); an address must be inside
//! the operator's `direct_networks` and, when the tenant has them, its
//! `provisioning_networks`; and the newest such fetch wins, over HTTP(S)
//! or TFTP alike, if it is less than a day old: history keeps fetches
//! for weeks, and a DHCP lease moved since would hand the tenant's NOTIFY
//! to whoever holds the address now. A served TFTP fetch is in history
//! only once the client acknowledged its first packet, which a forged
//! source never hears; in single-port TFTP mode the server answers from
//! port 69, so a forger who knows a MAC can acknowledge blindly, and can
//! then divert that phone's next NOTIFY to an address inside those
//! networks (README says so).
//! Preferring HTTP fetches instead sent NOTIFYs to where a phone fetched
//! its directory a month ago, now perhaps another tenant's phone.

use std::net::{IpAddr, SocketAddr};

use dialtone_sync::store::BootRecord;
use dialtone_sync::{now_millis, Mac, Millis, Tenant};
use ipnet::IpNet;

use super::refetch::trusted_until;
use super::track::Via;
use super::ResyncService;

/// The port phones listen for SIP on, when sent to directly.
const PHONE_SIP_PORT: u16 = 5060;
/// Served fetches read per direct resync (`Store::served_boots`).
const SERVED_ROWS: i64 = 100;
/// Oldest fetch whose address a NOTIFY is sent to: DHCP leases commonly
/// last a day or less, so an older address may be another device's now.
/// Such a phone gets no NOTIFY; it picks up changes when it next fetches.
const FETCH_TRUSTED_MS: Millis = 24 * 3600 * 1000;

/// The metrics label and the reason a resync fails with.
type Refusal = (&'static str, &'static str);

/// Direct mode's own label: a tenant's phone that never fetched, or not
/// lately, is no fault of the platform's and must not page its operator
/// as `no_address` (the proxy's) does.
const NO_FETCH: &str = "no_fetch";
const PROXY_UNRESOLVED: Refusal = ("no_address", "the proxy's address could not be resolved");

impl ResyncService {
    /// Where the NOTIFY goes: the proxy, or the phone's last known address.
    pub(super) async fn destination(
        &self,
        via: Via,
        mac: &Mac,
        tenant: &Tenant,
    ) -> Result<SocketAddr, Refusal> {
        let ours = self.local_addr().map(|a| a.ip()).ok();
        if via == Via::Direct {
            // Bounded as the refetch watch's reads are: on a connection
            // gone silent the read would wait until TCP gave up, holding
            // one of the worker's places. The platform's fault, not the
            // phone's: it pages the operator as the proxy's failures do.
            let now = now_millis();
            let stamped_by = trusted_until(now);
            let read = self
                .inner
                .store
                .served_boots(mac, tenant.id, stamped_by, SERVED_ROWS);
            let rows = tokio::time::timeout(super::refetch::HISTORY_READ_WITHIN, read)
                .await
                .map_err(|_| ("no_address", "provisioning history did not answer in time"))?
                .map_err(|_| ("no_address", "provisioning history is unavailable"))?;
            let networks = provisioning_networks(tenant);
            return choose(
                &rows,
                now,
                ours,
                &self.inner.direct_networks,
                networks.as_deref(),
            )
            .map(|ip| SocketAddr::new(ip, PHONE_SIP_PORT));
        }
        let Some(proxy) = &self.inner.proxy else {
            return Err(PROXY_UNRESOLVED);
        };
        let resolved = proxy.addresses().await;
        let usable: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|a| same_family(ours, a.ip()))
            .collect();
        let transport = &self.inner.transport;
        transport.watch(&usable);
        proxy
            .pick(&usable, |a| transport.unanswered(a))
            .ok_or_else(|| {
                super::family::proxy_refusal(ours, &resolved).unwrap_or(PROXY_UNRESOLVED)
            })
    }
}

/// The address to send to among a phone's fetches: served, of our
/// family, inside `direct` and `tenant`'s networks (when it has any), at
/// most `FETCH_TRUSTED_MS` before `now` and not after
/// [`trusted_until`]`(now)`; the newest. A row stamped a year ahead won
/// for that year, over the phone's real fetches from wherever it is now.
/// `served_boots` leaves such rows out already, so a phone with no others
/// reaches here with none: the empty-history reason says they are not
/// counted.
pub(super) fn choose(
    rows: &[BootRecord],
    now: Millis,
    ours: Option<IpAddr>,
    direct: &[IpNet],
    tenant: Option<&[IpNet]>,
) -> Result<IpAddr, Refusal> {
    // Both lists as admission read the tenant's when it served the fetch:
    // a NAT64 phone of a global IPv4 host is inside the networks that hold
    // that host, and inside a listed NAT64 prefix as written. The NOTIFY
    // goes to the address as written: over NAT64 only that one reaches it.
    let inside = |nets: &[IpNet], ip: IpAddr| dialtone_tftp::guard::listed_in(nets, ip);
    let served: Vec<(i64, IpAddr)> = rows
        .iter()
        .filter(|r| r.outcome == "ok" && matches!(r.protocol.as_str(), "http" | "https" | "tftp"))
        .filter_map(|r| Some((r.at, r.remote_ip.parse::<IpAddr>().ok()?.to_canonical())))
        .collect();
    if served.is_empty() {
        return Err((
            NO_FETCH,
            "no known address: the phone has not fetched its configuration (fetches stamped over 30 s ahead of this node's clock are not counted)",
        ));
    }
    let served: Vec<(i64, IpAddr)> = served
        .into_iter()
        .filter(|&(_, ip)| same_family(ours, ip))
        .collect();
    if served.is_empty() {
        return Err((NO_FETCH, super::family::fetched_elsewhere(ours)));
    }
    let allowed: Vec<(i64, IpAddr)> = served
        .into_iter()
        .filter(|&(_, ip)| inside(direct, ip) && tenant.is_none_or(|nets| inside(nets, ip)))
        .collect();
    if allowed.is_empty() {
        return Err((
            NO_FETCH,
            "no known address: the phone fetched only from outside resync.direct_networks or the tenant's provisioning networks",
        ));
    }
    allowed
        .into_iter()
        .filter(|&(at, _)| at <= trusted_until(now) && now.saturating_sub(at) <= FETCH_TRUSTED_MS)
        .max_by_key(|&(at, _)| at)
        .map(|(_, ip)| ip)
        .ok_or((
            NO_FETCH,
            "no known address: the phone's last fetch is more than a day old, and its address may have passed to another device since",
        ))
}

/// The tenant's `provisioning_networks` as the provisioning server reads
/// them: `None` when it sets none; entries that are not networks skipped,
/// so a list of none matches nothing.
fn provisioning_networks(tenant: &Tenant) -> Option<Vec<IpNet>> {
    if !tenant.settings.contains("provisioning_networks") {
        return None;
    }
    let settings: serde_json::Value = serde_json::from_str(&tenant.settings).ok()?;
    let list = settings.get("provisioning_networks")?.as_array()?;
    Some(
        list.iter()
            .filter_map(serde_json::Value::as_str)
            .filter_map(dialtone_tftp::tftp::parse_network)
            .collect(),
    )
}

pub(super) fn same_family(ours: Option<IpAddr>, theirs: IpAddr) -> bool {
    ours.is_none_or(|ours| super::family::reaches(ours, theirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(ip: &str, protocol: &str, outcome: &str, at: i64) -> BootRecord {
        BootRecord {
            mac: "001565000001".into(),
            at,
            remote_ip: ip.into(),
            user_agent: None,
            protocol: protocol.into(),
            file: "001565000001.cfg".into(),
            outcome: outcome.into(),
            bytes: 1,
            model: None,
            firmware: None,
            tenant_id: Some(1),
        }
    }

    /// Within a day of every fetch the tests make, unless they say so.
    const NOW: Millis = 1_000;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// The newest served fetch inside the networks wins, over HTTP(S) or
    /// TFTP alike; refused ones, and other protocols, never do.
    #[test]
    fn the_newest_served_fetch_wins() {
        let ours = Some("10.0.0.1".parse().unwrap());
        let direct = nets(&["10.0.0.0/8"]);
        let rows = [
            fetch("10.1.1.66", "tftp", "ok", 30),
            fetch("10.1.1.9", "tftp", "not-found", 40),
            fetch("10.1.1.7", "http", "ok", 10),
            fetch("10.1.1.8", "https", "ok", 20),
            fetch("10.1.1.5", "render", "ok", 50),
        ];
        assert_eq!(
            choose(&rows, NOW, ours, &direct, None),
            Ok("10.1.1.66".parse().unwrap())
        );
        assert_eq!(
            choose(&rows[1..], NOW, ours, &direct, None),
            Ok("10.1.1.8".parse().unwrap())
        );
    }

    /// The tenant's own networks bound the address too, when it has them.
    #[test]
    fn an_address_outside_the_tenants_networks_is_not_sent_to() {
        let ours = Some("10.0.0.1".parse().unwrap());
        let direct = nets(&["10.0.0.0/8"]);
        let rows = [
            fetch("10.9.0.1", "http", "ok", 20),
            fetch("10.1.0.1", "http", "ok", 10),
        ];
        let site = nets(&["10.1.0.0/16"]);
        assert_eq!(
            choose(&rows, NOW, ours, &direct, Some(&site)),
            Ok("10.1.0.1".parse().unwrap())
        );
        let reason = choose(&rows, NOW, ours, &direct, Some(&[])).unwrap_err().1;
        assert!(reason.contains("provisioning networks"), "{reason}");
        assert_eq!(
            choose(&rows, NOW, ours, &direct, None),
            Ok("10.9.0.1".parse().unwrap())
        );
    }

    /// A fetch more than a day old is no address: a lease may have moved.
    /// A tenant's phone without one fails as its own (`no_fetch`), not as
    /// the proxy's `no_address`, which pages the operator.
    #[test]
    fn a_fetch_older_than_a_day_is_not_sent_to() {
        let ours = Some("10.0.0.1".parse().unwrap());
        let direct = nets(&["10.0.0.0/8"]);
        let now = 40 * 24 * 3600 * 1000;
        let rows = [
            fetch("10.1.1.1", "http", "ok", now - FETCH_TRUSTED_MS - 1),
            fetch("10.1.1.2", "tftp", "ok", now - FETCH_TRUSTED_MS + 1),
        ];
        assert_eq!(
            choose(&rows, now, ours, &direct, None),
            Ok("10.1.1.2".parse().unwrap())
        );
        let (label, reason) = choose(&rows[..1], now, ours, &direct, None).unwrap_err();
        assert_eq!(label, "no_fetch");
        assert!(reason.contains("more than a day old"), "{reason}");
        for rows in [&[][..], &rows[..]] {
            let nowhere = choose(rows, now, ours, &nets(&["192.168.0.0/16"]), None);
            assert_eq!(nowhere.unwrap_err().0, "no_fetch");
        }
    }

    const YEAR: Millis = 365 * 24 * 3600 * 1000;

    /// A fetch stamped ahead of this node's clock (a clock stepped ahead,
    /// put right later) is no address: it outranked the phone's real,
    /// newer fetches from elsewhere for as long as the step was.
    #[test]
    fn a_fetch_stamped_ahead_of_the_clock_is_not_sent_to() {
        let ours = Some("10.0.0.1".parse().unwrap());
        let direct = nets(&["10.0.0.0/8"]);
        let now = 40 * 24 * 3600 * 1000;
        let skew = dialtone_tftp::digest::MAX_CLOCK_SKEW.as_millis() as Millis;
        let rows = [
            fetch("10.1.1.1", "http", "ok", now + YEAR),
            fetch("10.1.1.2", "tftp", "ok", now - 60_000),
        ];
        assert_eq!(
            choose(&rows, now, ours, &direct, None),
            Ok("10.1.1.2".parse().unwrap())
        );
        // Within the skew nodes' clocks may differ by, it is the newest.
        let close = [
            fetch("10.1.1.1", "http", "ok", now + skew),
            fetch("10.1.1.2", "tftp", "ok", now - 60_000),
        ];
        assert_eq!(
            choose(&close, now, ours, &direct, None),
            Ok("10.1.1.1".parse().unwrap())
        );
        let past = [
            fetch("10.1.1.1", "http", "ok", now + skew + 1),
            fetch("10.1.1.2", "tftp", "ok", now - 60_000),
        ];
        assert_eq!(
            choose(&past, now, ours, &direct, None),
            Ok("10.1.1.2".parse().unwrap())
        );
    }

    /// A phone whose only fetches are stamped ahead has none left once
    /// `served_boots` drops them: it is said not to have fetched, and the
    /// reason says why fetches it may remember making are not counted.
    #[test]
    fn fetches_only_stamped_ahead_are_said_not_to_count() {
        let ours = Some("10.0.0.1".parse().unwrap());
        let direct = nets(&["10.0.0.0/8"]);
        let (label, reason) = choose(&[], NOW, ours, &direct, None).unwrap_err();
        assert_eq!(label, "no_fetch");
        assert!(reason.contains("has not fetched"), "{reason}");
        // The reason names the allowance `trusted_until` gives, which is
        // the one the Digest nonce check makes.
        assert_eq!(dialtone_tftp::digest::MAX_CLOCK_SKEW.as_secs(), 30);
        assert!(
            reason.contains("stamped over 30 s ahead of this node's clock are not counted"),
            "{reason}"
        );
    }

    /// A phone behind NAT64 fetched from `64:ff9b::a.b.c.d`, admitted as
    /// `a.b.c.d` inside its tenant's networks: it is sent to there, as it
    /// was served. A private host's NAT64 form is not that host.
    #[test]
    fn a_nat64_fetch_is_inside_the_tenants_networks_as_admission_read_it() {
        let ours = Some("2001:db8::1".parse().unwrap());
        let direct = nets(&["64:ff9b::/96"]);
        let rows = [fetch("64:ff9b::81.2.69.5", "http", "ok", 10)];
        let site = nets(&["81.2.69.0/24"]);
        assert_eq!(
            choose(&rows, NOW, ours, &direct, Some(&site)),
            Ok("64:ff9b::81.2.69.5".parse().unwrap())
        );
        let rows = [fetch("64:ff9b::10.1.0.5", "http", "ok", 10)];
        let reason = choose(&rows, NOW, ours, &direct, Some(&nets(&["10.1.0.0/16"])))
            .unwrap_err()
            .1;
        assert!(reason.contains("provisioning networks"), "{reason}");
    }

    /// `direct_networks` are read as the tenant's are: a NAT64 phone of a
    /// global IPv4 host listed there by its IPv4 network is sent to, at
    /// the address it fetched from. A private host's NAT64 form is not
    /// that host.
    #[test]
    fn a_nat64_fetch_is_inside_direct_networks_listing_its_ipv4_host() {
        let ours = Some("2001:db8::1".parse().unwrap());
        let direct = nets(&["81.2.69.0/24", "10.0.0.0/8"]);
        let rows = [fetch("64:ff9b::81.2.69.5", "http", "ok", 10)];
        assert_eq!(
            choose(&rows, NOW, ours, &direct, None),
            Ok("64:ff9b::81.2.69.5".parse().unwrap())
        );
        let rows = [fetch("64:ff9b::10.1.0.5", "http", "ok", 10)];
        let reason = choose(&rows, NOW, ours, &direct, None).unwrap_err().1;
        assert!(reason.contains("resync.direct_networks"), "{reason}");
    }

    #[test]
    fn provisioning_networks_are_read_as_the_server_reads_them() {
        let tenant = |settings: &str| dialtone_sync::testing::build::tenant_row(settings);
        assert_eq!(provisioning_networks(&tenant("{}")), None);
        assert_eq!(
            provisioning_networks(&tenant(
                r#"{"provisioning_networks": ["10.1.0.0/16", "x", "192.0.2.7"]}"#
            )),
            Some(nets(&["10.1.0.0/16", "192.0.2.7/32"]))
        );
        // A leading-zero octet is refused where a list is written, never
        // where a stored one is read: that would drop the entry silently.
        assert_eq!(
            provisioning_networks(&tenant(r#"{"provisioning_networks": ["010.1.0.0/16"]}"#)),
            Some(nets(&["10.1.0.0/16"]))
        );
    }
}

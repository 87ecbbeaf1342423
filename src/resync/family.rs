//! Which addresses the resync socket can send to. One bound to an IPv4
//! address (the default `0.0.0.0:0`) sends only to IPv4 ones, one bound to
//! an IPv6 address only to IPv6 ones; `[::]` sends to both, as it is made
//! dual-stack whatever the host's `net.ipv6.bindv6only`.
//!
//! A destination of the other family used to be passed over in silence:
//! a phone that fetched only over IPv6 "had not fetched its
//! configuration", and an IPv6 proxy "could not be resolved", with nothing
//! in `check-config` or at start. The configuration's checks and the
//! resync's reasons now say what is true, from this one rule.

use std::net::{IpAddr, SocketAddr};

/// Whether a socket bound to `listen` can send to `target` as written (an
/// IPv4-mapped `target` is IPv6 to an IPv4 socket). A mapped `listen` is
/// an IPv6 socket on an IPv4 address: it sends as IPv4.
pub fn reaches(listen: IpAddr, target: IpAddr) -> bool {
    match listen.to_canonical() {
        IpAddr::V4(_) => target.is_ipv4(),
        IpAddr::V6(v6) if v6.is_unspecified() => true,
        IpAddr::V6(_) => target.to_canonical().is_ipv6(),
    }
}

/// "IPv4" or "IPv6": the family a socket bound to `listen` sends over,
/// once it is not `[::]`.
pub fn name(ip: IpAddr) -> &'static str {
    if ip.to_canonical().is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Why a direct resync has no address when every one of the phone's
/// served fetches came over the family `ours` cannot send to.
pub(super) fn fetched_elsewhere(ours: Option<IpAddr>) -> &'static str {
    match ours.map(name) {
        Some("IPv4") => {
            "no known address: the phone fetched only over IPv6, and resync.listen is IPv4 (\"[::]:0\" sends over both)"
        }
        _ => {
            "no known address: the phone fetched only over IPv4, and resync.listen is IPv6 (\"[::]:0\" sends over both)"
        }
    }
}

/// Why a resync through the proxy has no address when `resolved` (the
/// proxy's addresses) had some, but none `ours` can send to: a name that
/// resolved to the other family only is no failure to resolve. `None`
/// when nothing resolved.
pub(super) fn proxy_refusal(
    ours: Option<IpAddr>,
    resolved: &[SocketAddr],
) -> Option<(&'static str, &'static str)> {
    if resolved.is_empty() {
        return None;
    }
    let reason = match ours.map(name) {
        Some("IPv4") => {
            "the proxy's addresses are all IPv6, and resync.listen is IPv4 (\"[::]:0\" sends over both)"
        }
        _ => {
            "the proxy's addresses are all IPv4, and resync.listen is IPv6 (\"[::]:0\" sends over both)"
        }
    };
    Some(("no_address", reason))
}

#[cfg(test)]
mod tests {
    use super::super::direct::choose;
    use super::*;
    use dialtone_sync::store::BootRecord;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn served(remote_ip: &str) -> BootRecord {
        BootRecord {
            mac: "001565000001".into(),
            at: 900,
            remote_ip: remote_ip.into(),
            user_agent: None,
            protocol: "http".into(),
            file: "001565000001.cfg".into(),
            outcome: "ok".into(),
            bytes: 1,
            model: None,
            firmware: None,
            tenant_id: Some(1),
        }
    }

    #[test]
    fn a_socket_reaches_its_own_family_and_the_wildcard_both() {
        for (listen, target, reached) in [
            ("0.0.0.0", "192.0.2.1", true),
            ("0.0.0.0", "2001:db8::1", false),
            ("0.0.0.0", "::ffff:192.0.2.1", false),
            ("::ffff:192.0.2.9", "192.0.2.1", true),
            ("2001:db8::9", "2001:db8::1", true),
            ("2001:db8::9", "192.0.2.1", false),
            ("2001:db8::9", "::ffff:192.0.2.1", false),
            ("::", "192.0.2.1", true),
            ("::", "2001:db8::1", true),
        ] {
            assert_eq!(
                reaches(ip(listen), ip(target)),
                reached,
                "{listen} {target}"
            );
        }
    }

    /// A phone that fetched over IPv6 only, with `listen` on IPv4: it
    /// "had not fetched its configuration", though history showed it had.
    #[test]
    fn a_phone_that_fetched_over_the_other_family_is_said_to_have() {
        let direct: Vec<ipnet::IpNet> = vec!["2001:db8:1:2::/64".parse().unwrap()];
        let rows = [served("2001:db8:1:2::5")];
        let (label, reason) = choose(&rows, 1_000, Some(ip("0.0.0.0")), &direct, None).unwrap_err();
        assert_eq!(label, "no_fetch");
        assert!(
            reason.contains("fetched only over IPv6") && reason.contains("resync.listen is IPv4"),
            "{reason}"
        );
        let direct: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let rows = [served("10.1.1.1")];
        let reason = choose(&rows, 1_000, Some(ip("2001:db8::9")), &direct, None)
            .unwrap_err()
            .1;
        assert!(
            reason.contains("fetched only over IPv4") && reason.contains("resync.listen is IPv6"),
            "{reason}"
        );
        // On `[::]` it is sent to; with no fetch at all, none is claimed.
        assert_eq!(
            choose(&rows, 1_000, Some(ip("::")), &direct, None),
            Ok(ip("10.1.1.1"))
        );
        let reason = choose(&[], 1_000, Some(ip("0.0.0.0")), &direct, None)
            .unwrap_err()
            .1;
        assert!(reason.contains("has not fetched"), "{reason}");
    }

    #[test]
    fn a_proxy_of_the_other_family_is_no_failure_to_resolve() {
        let v6: Vec<SocketAddr> = vec!["[::1]:5060".parse().unwrap()];
        let (label, reason) = proxy_refusal(Some(ip("0.0.0.0")), &v6).unwrap();
        assert_eq!(label, "no_address", "the operator's to mend");
        assert!(
            reason.contains("all IPv6") && reason.contains("resync.listen is IPv4"),
            "{reason}"
        );
        let v4: Vec<SocketAddr> = vec!["127.0.0.1:5060".parse().unwrap()];
        let reason = proxy_refusal(Some(ip("::1")), &v4).unwrap().1;
        assert!(reason.contains("all IPv4"), "{reason}");
        assert_eq!(proxy_refusal(Some(ip("0.0.0.0")), &[]), None);
    }
}

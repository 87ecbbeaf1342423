//! What an address stands for, decided once for the crates that judge one:
//! provisioning keys, bans and exempts a client by it (`dialtone-tftp`),
//! and caller-name lookup decides where a tenant's source may connect
//! (`dialtone-directory`). Two answers that disagreed would let an address
//! be counted as one host and exempted, or allowed, as another.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RFC 6052's well-known NAT64/SIIT prefix, 64:ff9b::/96.
const NAT64_WELL_KNOWN: u128 = 0x0064_ff9b_u128 << 96;

/// The IPv4 host an IPv6 address stands for: `::ffff:a.b.c.d`, as a
/// dual-stack socket sees an IPv4 client, and `64:ff9b::a.b.c.d`, as an
/// IPv6-only node behind NAT64/SIIT sees one, when `a.b.c.d` is globally
/// routable. RFC 6052 (3.1) keeps the well-known prefix for global IPv4
/// alone, so `64:ff9b::127.0.0.1` translates nothing: it is an IPv6
/// address anyone may write, and read as its IPv4 address it would pass
/// for the node itself or a host inside.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    v6.to_ipv4_mapped()
        .or_else(|| nat64_ipv4(v6).filter(|v4| is_public_v4(*v4)))
}

/// The IPv4 address inside a 64:ff9b::/96 address, whatever it is.
fn nat64_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    (bits >> 32 == NAT64_WELL_KNOWN >> 32).then(|| Ipv4Addr::from(bits as u32))
}

/// `ip` as the host it stands for: IPv4 when [`embedded_ipv4`] finds one
/// inside, else as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses to look `ip` up under in a list of networks: its
/// [`canonical`] form, and a NAT64 address made IPv4 there also as written,
/// so that a list naming 64:ff9b::/96 holds all of it.
pub fn listed_as(ip: IpAddr) -> impl Iterator<Item = IpAddr> {
    let host = canonical(ip);
    let written = match ip {
        IpAddr::V6(v6) if host != ip && v6.to_ipv4_mapped().is_none() => Some(ip),
        _ => None,
    };
    std::iter::once(host).chain(written)
}

/// Refuses an IPv4 address written with an octet of a leading zero
/// (`010.0.0.0/8`, `127.0.0.010`, `::ffff:010.1.2.3`), alone or as a
/// network's address: the network parser reads `010` as ten, while
/// inet_aton and the tools built on it read it as octal eight, so a list
/// checked with one would not be the list enforced. For writes and config checks alone: a list already stored
/// keeps every entry it is read with.
pub fn octets_unambiguous(text: &str) -> Result<(), String> {
    let address = text.trim().split('/').next().unwrap_or_default();
    let dotted = address.rsplit(':').next().unwrap_or_default();
    if !dotted.contains('.') {
        return Ok(());
    }
    match dotted
        .split('.')
        .find(|octet| octet.len() > 1 && octet.starts_with('0'))
    {
        Some(octet) => Err(format!(
            "{text:?} has the IPv4 octet {octet:?} with a leading zero, which some tools read as \
             octal and others as decimal; write it without the leading zero"
        )),
        None => Ok(()),
    }
}

/// Globally routable: none of the special-purpose ranges (loopback,
/// private, link-local and cloud metadata, shared/CGNAT, documentation,
/// benchmarking, multicast, reserved; for IPv6 also unique-local). An
/// address with an IPv4 host inside ([`canonical`]) is judged as that host.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

pub fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

/// Not public either: the forms that carry an IPv4 address inside, since
/// a relay or a host's own stack may deliver them to that address, a
/// private one too. That is 64:ff9b::/32 (NAT64; [`is_public`] judges a
/// global IPv4 in the well-known /96 as itself first), 6to4, Teredo, and
/// all of ::/64: IPv4-compatible `::a.b.c.d`, mapped `::ffff:a.b.c.d` and
/// SIIT's translated `::ffff:0:a.b.c.d`.
pub fn is_public_v6(ip: Ipv6Addr) -> bool {
    let [first, second, ..] = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && second == 0x0db8)
        || (first == 0x0064 && second == 0xff9b)
        || first == 0x2002
        || (first == 0x2001 && second == 0x0000)
        || ip.segments()[..4] == [0; 4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn nat64_holds_a_host_only_for_global_ipv4() {
        assert_eq!(canonical(ip("64:ff9b::808:808")), ip("8.8.8.8"));
        assert_eq!(canonical(ip("::ffff:10.1.0.5")), ip("10.1.0.5"));
        for forged in [
            "64:ff9b::7f00:1",
            "64:ff9b::a01:5",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::c000:201",
            "64:ff9b:1::808:808",
        ] {
            assert_eq!(canonical(ip(forged)), ip(forged), "{forged}");
            assert!(!is_public(ip(forged)), "{forged}");
        }
        assert!(is_public(ip("64:ff9b::8.8.8.8")));
    }

    #[test]
    fn translated_and_compatible_forms_are_not_public() {
        for inside in [
            "::ffff:0:127.0.0.1",
            "::ffff:0:8.8.8.8",
            "::127.0.0.1",
            "::1:0:0:1",
        ] {
            assert!(!is_public(ip(inside)), "{inside}");
        }
        assert!(is_public(ip("2606:4700::1111")));
    }

    #[test]
    fn a_nat64_host_is_listed_as_itself_and_as_written() {
        let seen: Vec<IpAddr> = listed_as(ip("64:ff9b::808:808")).collect();
        assert_eq!(seen, [ip("8.8.8.8"), ip("64:ff9b::808:808")]);
        let seen: Vec<IpAddr> = listed_as(ip("::ffff:10.0.0.1")).collect();
        assert_eq!(seen, [ip("10.0.0.1")]);
        let seen: Vec<IpAddr> = listed_as(ip("64:ff9b::a01:5")).collect();
        assert_eq!(seen, [ip("64:ff9b::a01:5")]);
    }

    #[test]
    fn an_octet_with_a_leading_zero_is_refused_where_written() {
        for refused in [
            "010.0.0.0/8",
            "127.0.0.010/32",
            "10.00.0.1",
            " 010.0.0.1 ",
            "::ffff:010.1.2.3/128",
            "64:ff9b::81.2.069.0/120",
        ] {
            let reason = octets_unambiguous(refused).unwrap_err();
            assert!(reason.contains("leading zero"), "{refused}: {reason}");
        }
        for fine in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "127.0.0.1",
            "100.64.0.0/10",
            "2001:db8::/32",
            "::ffff:10.1.0.0/112",
            "fd00:0::/8",
            "public",
        ] {
            assert_eq!(octets_unambiguous(fine), Ok(()), "{fine}");
        }
    }
}

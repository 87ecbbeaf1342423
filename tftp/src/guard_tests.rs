use super::*;

#[test]
fn a_burst_of_misses_bans_only_that_source() {
    let guard = Guard::new(GuardOptions {
        burst: 5,
        per_minute: 1,
        ..Default::default()
    });
    let scanner: IpAddr = "192.0.2.10".parse().unwrap();
    let phone: IpAddr = "192.0.2.20".parse().unwrap();
    let bans: Vec<bool> = (0..6).map(|_| guard.miss(scanner)).collect();
    assert_eq!(bans, [false, false, false, false, false, true]);
    assert!(guard.is_banned(scanner));
    assert!(!guard.is_banned(phone));
    assert!(!guard.miss(phone));
}

#[test]
fn new_limits_apply_at_once() {
    let guard = Guard::new(GuardOptions {
        burst: 2,
        per_minute: 1,
        ..Default::default()
    });
    let loud: IpAddr = "192.0.2.7".parse().unwrap();
    guard.set_limits(100, 1);
    for _ in 0..50 {
        assert!(!guard.miss(loud), "a raised burst is honoured");
    }
    guard.set_limits(1, 1);
    assert!(guard.miss("192.0.2.8".parse().unwrap()) || guard.miss("192.0.2.8".parse().unwrap()));
}

#[test]
fn bans_expire() {
    let guard = Guard::new(GuardOptions {
        burst: 1,
        per_minute: 1,
        ban: Duration::from_millis(100),
        ..Default::default()
    });
    let scanner: IpAddr = "2001:db8::1".parse().unwrap();
    guard.miss(scanner);
    assert!(guard.miss(scanner));
    std::thread::sleep(Duration::from_millis(250));
    assert!(!guard.is_banned(scanner));
}

#[test]
fn an_ipv6_slash_64_is_one_source() {
    let guard = Guard::new(GuardOptions {
        burst: 3,
        per_minute: 1,
        ..Default::default()
    });
    // Each miss from a new address of the same /64 still counts.
    let banned = (1..=4)
        .map(|n| guard.miss(format!("2001:db8:1:2::{n:x}").parse().unwrap()))
        .collect::<Vec<_>>();
    assert_eq!(banned, [false, false, false, true]);
    assert!(guard.is_banned("2001:db8:1:2:ffff::1".parse().unwrap()));
    assert!(!guard.is_banned("2001:db8:1:3::1".parse().unwrap()));
    // IPv4 as a dual-stack listener reports it is the IPv4 source.
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    assert_eq!(source_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(
        source_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap()),
        "2001:db8:1:2::".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn the_source_table_is_bounded() {
    let guard = Guard::new(GuardOptions {
        burst: 5,
        per_minute: 1,
        max_sources: 100,
        ..Default::default()
    });
    for n in 0..10_000u32 {
        guard.miss(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + n)));
    }
    assert_eq!(guard.tracked_sources(), 100);
}

/// The eviction answer: a flood of forged one-shot sources, many times
/// the table's size, between each of a real scanner's misses, never
/// pushes the scanner out: it is banned within two misses of when it
/// would be without the flood (those it made before the sketch had
/// seen it miss more often than the one-shots tracked).
#[test]
fn a_flood_of_one_shot_sources_never_evicts_a_scanner() {
    let guard = Guard::new(GuardOptions {
        burst: 10,
        per_minute: 1,
        max_sources: 1_000,
        ..Default::default()
    });
    let scanner: IpAddr = "198.51.100.7".parse().unwrap();
    let mut forged = 0x0a00_0000u32;
    let mut banned_at = None;
    for n in 1..=20 {
        for _ in 0..5_000 {
            forged += 1;
            assert!(!guard.miss(IpAddr::from(std::net::Ipv4Addr::from(forged))));
        }
        if guard.miss(scanner) {
            banned_at = Some(n);
            break;
        }
    }
    assert!(
        banned_at.is_some_and(|n| (11..=13).contains(&n)),
        "banned at {banned_at:?}"
    );
    assert!(guard.is_banned(scanner));
    assert!(guard.tracked_sources() <= 1_000);
}

/// A source whose allowance is whole again owes nothing and is dropped.
#[test]
fn settled_sources_are_forgotten() {
    let guard = Guard::new(GuardOptions {
        burst: 2,
        per_minute: 60_000_000,
        ..Default::default()
    });
    guard.miss("192.0.2.1".parse().unwrap());
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(guard.tracked_sources(), 0);
}

/// Behind NAT64/SIIT every IPv4 client is `64:ff9b::a.b.c.d`; as a /64
/// they were all one source.
#[test]
fn nat64_clients_are_their_ipv4_sources() {
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    let one = source_key(ip("64:ff9b::808:808"));
    let two = source_key(ip("64:ff9b::101:101"));
    assert_ne!(one, two);
    assert_eq!(one, ip("8.8.8.8"));
    assert_eq!(two, ip("1.1.1.1"));
    // The HTTP front end's per-source cap keys by the same rule.
    assert_eq!(crate::tftp::source_of(ip("64:ff9b::101:101")), two);
    // Only the well-known /96: the local-use prefix is an ordinary /64.
    assert_eq!(source_key(ip("64:ff9b:1::808:808")), ip("64:ff9b:1::"));
}

/// RFC 6052 keeps the well-known prefix for global IPv4: a TFTP source
/// `64:ff9b::127.0.0.1` is a forged IPv6 address, not the node's loopback,
/// and its misses are its /64's.
#[test]
fn forged_nat64_sources_of_inside_addresses_are_their_64() {
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    let guard = Guard::new(GuardOptions {
        burst: 3,
        per_minute: 1,
        ..Default::default()
    });
    let banned: Vec<bool> = ["64:ff9b::7f00:1", "64:ff9b::a01:5"]
        .iter()
        .cycle()
        .take(4)
        .map(|forged| guard.miss_via(ip(forged), Via::Datagram))
        .collect();
    assert_eq!(banned, [false, false, false, true]);
    assert_eq!(source_key(ip("64:ff9b::7f00:1")), ip("64:ff9b::"));
    assert!(guard.is_banned(ip("64:ff9b::7f00:1")));
    for inside in [
        "127.0.0.1",
        "10.1.0.5",
        "::ffff:127.0.0.1",
        "64:ff9b::808:808",
    ] {
        assert!(!guard.is_banned(ip(inside)), "{inside}");
    }
    assert!(
        ban_line(ip("64:ff9b::7f00:1"), Duration::from_secs(600), true)
            .contains("ban 64:ff9b::/64 for"),
    );
    // Nor is one exempt as the address inside.
    let exempt = source_networks(&["127.0.0.0/8".into(), "10.0.0.0/8".into()]).unwrap();
    assert!(!listed_in(&exempt, ip("64:ff9b::7f00:1")));
    assert!(!listed_in(&exempt, ip("64:ff9b::a01:5")));
    assert!(listed_in(&exempt, ip("::ffff:10.1.0.5")));
}

/// An exempt network holds a NAT64 client of a global address as that
/// address, as its key is; a list naming the prefix holds it as written.
#[test]
fn exempt_networks_match_a_nat64_client_as_it_is_keyed() {
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    let by_ipv4 = source_networks(&["8.8.8.0/24".into()]).unwrap();
    assert!(listed_in(&by_ipv4, ip("64:ff9b::808:808")));
    assert!(!listed_in(&by_ipv4, ip("64:ff9b::101:101")));
    let by_prefix = source_networks(&["64:ff9b::/96".into()]).unwrap();
    assert!(listed_in(&by_prefix, ip("64:ff9b::808:808")));
    assert!(!listed_in(&by_prefix, ip("8.8.8.8")));
}

#[test]
fn a_mapped_network_is_read_as_its_ipv4_network() {
    let network = source_network("::ffff:10.1.0.0/112").unwrap();
    assert_eq!(network, "10.1.0.0/16".parse::<IpNet>().unwrap());
    assert!(network.contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
    assert_eq!(
        source_network("::ffff:192.0.2.7").unwrap(),
        "192.0.2.7/32".parse::<IpNet>().unwrap()
    );
    let too_wide = source_network("::ffff:10.0.0.0/95").unwrap_err();
    assert!(too_wide.contains("::ffff:0:0/96"), "{too_wide}");
    // Networks that merely contain the mapped range stay as written.
    assert_eq!(
        source_network("::/0").unwrap(),
        "::/0".parse::<IpNet>().unwrap()
    );
    assert!(source_network("10.1.0.0/16x").is_err());
}

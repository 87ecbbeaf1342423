//! IPv4 addresses inside IPv6 ones: mapped networks in the operator's and
//! tenants' lists, and NAT64 addresses judged as the IPv4 host inside.

use std::net::IpAddr;

use std::net::SocketAddr;

use super::{tenant_networks, SourceNetworks};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Sources are judged as IPv4 once unmapped: a mapped network listed as
/// written matched nothing.
#[test]
fn a_mapped_tenant_network_is_its_ipv4_network() {
    let networks =
        tenant_networks(r#"{"source_networks": ["::ffff:10.1.0.0/112", "::ffff:10.9.9.9"]}"#)
            .unwrap();
    assert!(networks[0].contains(&ip("10.1.2.3")));
    assert!(!networks[0].contains(&ip("10.2.0.1")));
    assert!(networks[1].contains(&ip("10.9.9.9")));
    let refused = tenant_networks(r#"{"source_networks": ["::ffff:10.0.0.0/95"]}"#).unwrap_err();
    assert!(
        refused.contains("source_networks") && refused.contains("::ffff:0:0/96"),
        "{refused}"
    );
    let unreadable = tenant_networks(r#"{"source_networks": [7]}"#).unwrap_err();
    assert!(unreadable.contains("is not a network"), "{unreadable}");
}

#[test]
fn a_mapped_operator_network_is_its_ipv4_network() {
    let networks = SourceNetworks::parse(&["::ffff:10.1.0.0/112"]).unwrap();
    assert_eq!(
        networks.allowed,
        ["10.1.0.0/16".parse::<ipnet::IpNet>().unwrap()]
    );
    assert!(SourceNetworks::parse(&["::ffff:0.0.0.0/80"]).is_err());
    let unreadable = SourceNetworks::parse(&["nowhere"]).unwrap_err();
    assert!(unreadable.contains("\"public\""), "{unreadable}");
    // Networks that merely contain the mapped range stay as written.
    assert!(SourceNetworks::parse(&["::/0"]).is_ok());
}

fn at(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A NAT64 address is its IPv4 host: public as that host is, and refused
/// when that host is the node's own.
#[test]
fn a_nat64_address_is_judged_as_its_ipv4_host() {
    let n = SourceNetworks::default().with_node_addresses([ip("198.41.0.4")]);
    assert!(n.allows(at("[64:ff9b::1.1.1.1]:389")));
    assert!(!n.allows(at("198.41.0.4:389")));
    assert!(!n.allows(at("[64:ff9b::198.41.0.4]:389")));
    // A private host's network does not hold its NAT64 form.
    let private = SourceNetworks::parse(&["10.0.0.0/8"]).unwrap();
    assert!(private.allows(at("10.1.0.5:389")));
    assert!(!private.allows(at("[64:ff9b::10.1.0.5]:389")));
    assert!(!private.allows(at("[64:ff9b::8.8.8.8]:389")));
}

/// Listed as written, the prefix is all of it, private hosts inside
/// included: the operator's list is trusted (README, `source_networks`).
#[test]
fn a_listed_nat64_prefix_holds_all_of_it() {
    let n = SourceNetworks::parse(&["64:ff9b::/96"]).unwrap();
    assert!(n.allows(at("[64:ff9b::8.8.8.8]:389")));
    assert!(n.allows(at("[64:ff9b::10.1.0.5]:389")));
    assert!(!n.allows(at("8.8.8.8:389")), "public was not listed");
    assert!(!n.allows(at("10.1.0.5:389")));
}

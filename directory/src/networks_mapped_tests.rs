//! IPv4-mapped networks in the operator's and tenants' lists.

use std::net::IpAddr;

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

//! A node whose interface holds a public address: under "public", that
//! address is not a place a tenant's source may connect to, on any port
//! (what listens on every address there sits behind a firewall outside the
//! node, which a connection from the node to itself never crosses).

use std::net::{IpAddr, SocketAddr};

use dialtone_directory::SourceNetworks;

fn at(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn node() -> [IpAddr; 2] {
    [
        "203.0.114.10".parse().unwrap(),
        "2a01:4f8:1:2::10".parse().unwrap(),
    ]
}

#[test]
fn the_nodes_own_public_address_is_not_public() {
    let networks = SourceNetworks::parse(&["public"])
        .unwrap()
        .with_node_addresses(node());
    for refused in [
        "203.0.114.10:9100",
        "203.0.114.10:5432",
        "[::ffff:203.0.114.10]:9100",
        "[2a01:4f8:1:2::10]:443",
    ] {
        assert!(!networks.allows(at(refused)), "{refused}");
    }
    for allowed in ["203.0.114.11:443", "[2a01:4f8:1:2::11]:443"] {
        assert!(networks.allows(at(allowed)), "{allowed}");
    }
}

/// Listed explicitly, by the operator or by a global admin for one tenant,
/// the node's address is reachable: that is a decision, not a default.
#[test]
fn the_nodes_own_address_is_reachable_when_listed_explicitly() {
    let operator = SourceNetworks::parse(&["public", "203.0.114.10"])
        .unwrap()
        .with_node_addresses(node());
    assert!(operator.allows(at("203.0.114.10:9100")));
    assert!(operator.allows(at("[::ffff:203.0.114.10]:9100")));

    let node_wide = SourceNetworks::parse(&["public"])
        .unwrap()
        .with_node_addresses(node());
    let opened = ["2a01:4f8:1:2::/64".parse().unwrap()];
    assert!(node_wide
        .for_tenant(1, &opened)
        .allows(at("[2a01:4f8:1:2::10]:443")));
    assert!(!node_wide
        .for_tenant(2, &[])
        .allows(at("[2a01:4f8:1:2::10]:443")));
}

/// The node's own listeners stay refused even where listed explicitly.
#[test]
fn the_nodes_listeners_stay_refused_when_its_address_is_listed() {
    let networks = SourceNetworks::parse(&["public", "203.0.114.10"])
        .unwrap()
        .with_own_listeners([at("0.0.0.0:8080")])
        .with_node_addresses(node());
    assert!(!networks.allows(at("203.0.114.10:8080")));
    assert!(networks.allows(at("203.0.114.10:9100")));
}

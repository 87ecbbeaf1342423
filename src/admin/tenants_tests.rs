use serde_json::json;

use super::checks::check_networks;

/// Fetches are matched as IPv4 once unmapped: a tenant's site written as
/// an IPv4-mapped network is its IPv4 network, and one wider than the
/// mapped range is refused rather than stored to never match.
#[test]
fn a_mapped_provisioning_network_is_its_ipv4_network() {
    let settings = |network: &str| json!({ "provisioning_networks": [network] });
    check_networks(&settings("::ffff:10.1.0.0/112")).unwrap();
    let network = dialtone_tftp::guard::source_network("::ffff:10.1.0.0/112").unwrap();
    assert!(network.contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
    let refused = check_networks(&settings("::ffff:10.0.0.0/95")).unwrap_err();
    assert_eq!(refused.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.message.contains("provisioning_networks")
            && refused.message.contains("::ffff:0:0/96"),
        "{}",
        refused.message
    );
    let unreadable = check_networks(&json!({ "provisioning_networks": [7] })).unwrap_err();
    assert!(unreadable.message.contains("is not a network"));
}

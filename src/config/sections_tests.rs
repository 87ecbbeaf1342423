use super::*;

fn with_proxy(proxy: &str) -> ResyncConfig {
    ResyncConfig {
        proxy: Some(proxy.to_string()),
        ..ResyncConfig::default()
    }
}

/// Unbracketed, `2001:db8::5:5060` passed with port 5060 and a From host
/// of `2001`; `2001:db8::5` was read as host `2001:db8:` port 5.
#[test]
fn an_unbracketed_ipv6_proxy_is_refused() {
    for proxy in ["2001:db8::5:5060", "2001:db8::5"] {
        let error = with_proxy(proxy).validate().unwrap_err().to_string();
        assert!(error.contains("resync.proxy"), "{proxy}: {error}");
        assert!(error.contains("[addr]:port"), "{proxy}: {error}");
    }
}

#[test]
fn a_bracketed_ipv6_proxy_is_its_own_sender_host() {
    let config = with_proxy("[2001:db8::5]:5060");
    config.validate().unwrap();
    assert_eq!(config.sender_host(), "[2001:db8::5]");
    assert!(with_proxy("[2001:db8::5]").validate().is_err());
    assert!(with_proxy("[2001:db8::5]:0").validate().is_err());
    assert!(with_proxy("[sip.example.net]:5060").validate().is_err());
}

#[test]
fn a_named_or_ipv4_proxy_splits_at_its_port() {
    for (proxy, host) in [
        ("sip.example.net:5060", "sip.example.net"),
        ("192.0.2.5:5070", "192.0.2.5"),
    ] {
        let config = with_proxy(proxy);
        config.validate().unwrap();
        assert_eq!(config.sender_host(), host);
    }
}

/// Addresses are matched as IPv4 once unmapped: a mapped network as
/// written matched nothing.
#[test]
fn a_mapped_direct_network_is_its_ipv4_network() {
    let mapped = ResyncConfig {
        direct_networks: vec!["::ffff:10.1.0.0/112".to_string()],
        ..ResyncConfig::default()
    };
    mapped.validate().unwrap();
    let networks = dialtone_tftp::guard::source_networks(&mapped.direct_networks).unwrap();
    assert!(networks[0].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
    let too_wide = ResyncConfig {
        direct_networks: vec!["::ffff:10.0.0.0/95".to_string()],
        ..ResyncConfig::default()
    };
    let error = too_wide.validate().unwrap_err().to_string();
    assert!(
        error.contains("resync.direct_networks") && error.contains("::ffff:0:0/96"),
        "{error}"
    );
}

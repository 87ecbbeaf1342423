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
    let config = ResyncConfig {
        listen: "[::]:0".parse().unwrap(),
        ..with_proxy("[2001:db8::5]:5060")
    };
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

/// An IPv6 proxy with the default (IPv4) `listen` failed every resync as
/// "could not be resolved", though it was an address; and the other way
/// round. Warned of, naming both settings; not refused: a node that
/// started with it, serving its phones and failing only resyncs, must
/// start after an upgrade.
#[test]
fn a_proxy_the_listen_address_cannot_send_to_is_warned_of_not_refused() {
    for (proxy, listen) in [
        ("[::1]:5060", "0.0.0.0:0"),
        ("[2001:db8::5]:5060", "192.0.2.1:0"),
        ("192.0.2.5:5060", "[2001:db8::1]:0"),
    ] {
        let config = ResyncConfig {
            listen: listen.parse().unwrap(),
            ..with_proxy(proxy)
        };
        config.validate().unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{proxy} from {listen}: {warnings:?}");
        assert!(
            warnings[0].contains("resync.proxy") && warnings[0].contains("resync.listen"),
            "{proxy} from {listen}: {warnings:?}"
        );
    }
    for (proxy, listen) in [
        ("[::1]:5060", "[::]:0"),
        ("192.0.2.5:5060", "[::]:0"),
        ("[2001:db8::5]:5060", "[::1]:0"),
        ("192.0.2.5:5060", "0.0.0.0:0"),
        // A name may resolve to either family: the resync says which.
        ("sip.example.net:5060", "0.0.0.0:0"),
    ] {
        let config = ResyncConfig {
            listen: listen.parse().unwrap(),
            ..with_proxy(proxy)
        };
        config.validate().unwrap();
        assert!(config.warnings().is_empty(), "{proxy} from {listen}");
    }
    // `direct` does not send to the proxy.
    let direct = ResyncConfig {
        direct: true,
        ..with_proxy("[::1]:5060")
    };
    direct.validate().unwrap();
    let warnings = direct.warnings();
    assert!(
        !warnings.iter().any(|w| w.contains("resync.proxy")),
        "{warnings:?}"
    );
    // As `serve` and `check-config` load it: the whole configuration
    // loads, and its warnings name the proxy.
    let env = [("DIALTONE_RESYNC__PROXY", "[2001:db8::1]:5060")]
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let config = crate::config::Config::load_from(None, env.into_iter()).unwrap();
    let warnings = config.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("resync.proxy [2001:db8::1]:5060 is IPv6")
                && w.contains("resync.listen 0.0.0.0:0 is IPv4")),
        "{warnings:?}"
    );
}

/// Networks of the family `listen` cannot reach are named at start and by
/// `check-config`, once `direct` uses them; the shipped list (which holds
/// `fc00::/7`) says nothing while `direct` is off.
#[test]
fn direct_networks_the_listen_address_cannot_reach_are_warned_of() {
    assert!(ResyncConfig::default().warnings().is_empty());
    // The shipped list with `direct` on, among `check-config`'s warnings.
    let mut shipped = crate::config::Config::default();
    shipped.resync.direct = true;
    let warnings = shipped.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("IPv6 networks (fc00::/7)")),
        "{warnings:?}"
    );
    let direct = ResyncConfig {
        direct: true,
        direct_networks: vec!["2001:db8:1:2::/64".into(), "10.0.0.0/8".into()],
        ..ResyncConfig::default()
    };
    let warnings = direct.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    assert!(
        warning.contains("resync.direct_networks")
            && warning.contains("2001:db8:1:2::/64")
            && !warning.contains("10.0.0.0/8")
            && warning.contains("resync.listen 0.0.0.0:0 is IPv4"),
        "{warning}"
    );
    let v6 = ResyncConfig {
        listen: "[2001:db8::1]:0".parse().unwrap(),
        ..direct.clone()
    };
    let warning = v6.warnings().join("\n");
    assert!(
        warning.contains("IPv4 networks (10.0.0.0/8)") && warning.contains("is IPv6"),
        "{warning}"
    );
    // A mapped network is its IPv4 one; `[::]` reaches every network.
    let mapped = ResyncConfig {
        direct_networks: vec!["::ffff:10.1.0.0/112".into()],
        ..direct.clone()
    };
    assert!(mapped.warnings().is_empty(), "{:?}", mapped.warnings());
    let both = ResyncConfig {
        listen: "[::]:0".parse().unwrap(),
        ..direct
    };
    assert!(both.warnings().is_empty());
}

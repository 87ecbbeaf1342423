//! The SIP domains a tenant's resyncs may go to, as a global admin set
//! them in the tenant's `settings.sip_domains`.
//!
//! A NOTIFY's Request-URI is made of tenant data (line 1's extension and
//! registrar), and the proxy routes it to whoever registered that address
//! of record. Without a check, a tenant could give its own phone another
//! tenant's domain and extension and make the proxy send that tenant's
//! phone a resync, again and again, and read from the answers which of its
//! extensions are registered; or name any host on the internet and have
//! the platform's proxy send it NOTIFYs. Which domains are whose is the
//! operator's knowledge, so only a global admin sets them, and a tenant
//! with none set gets no resync at all.

use dialtone_sync::Tenant;
use serde_json::Value;

/// Most domains one tenant may be given.
pub const MAX_DOMAINS: usize = 64;
/// The key in a tenant's settings.
pub const SETTING: &str = "sip_domains";

/// The port a registrar without one is reached on, and the only one an
/// entry without a port allows.
const SIP_PORT: u16 = 5060;

/// A tenant's SIP domains, lowercase, each with the port it allows (none:
/// 5060 only). A registrar's port is the proxy's to follow: one a global
/// admin did not give would have it relay NOTIFYs to any UDP port of the
/// domain's host.
#[derive(Debug, Default)]
pub struct SipDomains(Vec<(String, Option<u16>)>);

impl SipDomains {
    /// The domains in `tenant`'s settings. Entries that are not hostnames
    /// or addresses match nothing (settings stored by an import are not
    /// checked as the admin API checks them).
    pub fn of(tenant: &Tenant) -> SipDomains {
        if !tenant.settings.contains(SETTING) {
            return SipDomains::default();
        }
        let Ok(settings) = serde_json::from_str::<Value>(&tenant.settings) else {
            return SipDomains::default();
        };
        let domains = settings
            .get(SETTING)
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .filter(|d| check_domain(d).is_ok())
                    .take(MAX_DOMAINS)
                    .map(|d| {
                        let (host, port) = split_port(d);
                        (comparable(host), port)
                    })
                    .collect()
            })
            .unwrap_or_default();
        SipDomains(domains)
    }

    /// Whether a NOTIFY may go to `host` (a registrar's host, with or
    /// without a port).
    pub fn allow(&self, host: &str) -> Result<(), String> {
        let (bare, port) = split_port(host);
        let wanted = comparable(bare);
        if self.0.is_empty() {
            return Err(format!(
                "the tenant has no SIP domains (settings.{SETTING}, set by a global admin)"
            ));
        }
        let mut hosts = self.0.iter().filter(|(h, _)| *h == wanted).peekable();
        if hosts.peek().is_none() {
            return Err(format!(
                "line 1's registrar {bare} is not one of the tenant's SIP domains"
            ));
        }
        let port = port.unwrap_or(SIP_PORT);
        if hosts.any(|(_, allowed)| allowed.unwrap_or(SIP_PORT) == port) {
            Ok(())
        } else {
            Err(format!(
                "line 1's registrar port {port} is not one of the tenant's SIP domains' (a global admin lists the domain with its port to allow it)"
            ))
        }
    }
}

/// A domain or host as compared: lowercase, and an address in its one
/// canonical text, brackets off (`[2001:DB8:0::5]` is `2001:db8::5`, as a
/// registrar's host names it).
fn comparable(domain: &str) -> String {
    let bare = domain.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(address) => address.to_string(),
        Err(_) => domain.to_ascii_lowercase(),
    }
}

/// A host and its port, if it names one (and a port that does not parse:
/// port 0, which nothing allows). A bare IPv6 address has no port.
fn split_port(host: &str) -> (&str, Option<u16>) {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return (host, None);
    }
    let (bare, port) = match host.strip_prefix('[') {
        // Past the bracket, only a port: anything else is a port that
        // does not parse.
        Some(rest) => match rest.split_once(']') {
            Some((v6, "")) => (v6, None),
            Some((v6, after)) => (v6, Some(after.strip_prefix(':').unwrap_or(after))),
            None => (host, None),
        },
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let number = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse().ok())
            .flatten()
            .unwrap_or(0)
    };
    (bare, port.map(number))
}

/// A domain as a global admin may set it: a hostname or an IP address,
/// without a scheme, with a port if its registrar has one other than 5060
/// (`pbx.example.net:5080`, `[2001:db8::5]:5080`).
pub fn check_domain(text: &str) -> Result<(), String> {
    let (host, port) = split_port(text);
    let hostname =
        super::sip::is_hostname(host) && !host.ends_with(['-', '.']) && !host.contains("..");
    let address = host.parse::<std::net::Ipv6Addr>().is_ok();
    let host_ok = if text.starts_with('[') {
        address
    } else {
        hostname || address
    };
    if host_ok && port.is_none_or(|p| p > 0) {
        Ok(())
    } else {
        Err(format!(
            "settings.{SETTING}: {text:?} is not a hostname or an IP address, with a port if not 5060 (no scheme)"
        ))
    }
}

/// A `sip_domains` value in tenant settings as a global admin sends it.
pub fn check_setting(settings: &Value) -> Result<(), String> {
    let Some(domains) = settings.get(SETTING) else {
        return Ok(());
    };
    let Some(list) = domains.as_array() else {
        return Err(format!("settings.{SETTING} must be a list of domains"));
    };
    if list.len() > MAX_DOMAINS {
        return Err(format!("settings.{SETTING}: at most {MAX_DOMAINS} domains"));
    }
    for domain in list {
        let Some(text) = domain.as_str() else {
            return Err(format!("settings.{SETTING} must be a list of domains"));
        };
        check_domain(text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use dialtone_sync::testing::build::tenant_row as tenant;

    #[test]
    fn only_the_tenants_own_domains_are_allowed() {
        let acme = SipDomains::of(&tenant(
            r#"{"sip_domains": ["acme.sip.example.net", "192.0.2.7", "2001:db8::5"]}"#,
        ));
        assert_eq!(acme.allow("acme.sip.example.net"), Ok(()));
        assert_eq!(acme.allow("ACME.sip.example.net:5060"), Ok(()));
        assert_eq!(acme.allow("192.0.2.7"), Ok(()));
        assert_eq!(acme.allow("[2001:db8::5]:5060"), Ok(()));
        for other in [
            "globex.sip.example.net",
            "sip.example.net",
            "evil.example",
            "acme.sip.example.net.evil.example",
            "192.0.2.8",
        ] {
            assert!(acme.allow(other).is_err(), "{other}");
        }
    }

    /// A registrar's port other than 5060 must be given with its domain:
    /// the proxy would relay a NOTIFY to whatever port the tenant wrote.
    #[test]
    fn a_registrar_port_is_allowed_only_as_given() {
        let acme = SipDomains::of(&tenant(
            r#"{"sip_domains": ["acme.example", "pbx.example:5080", "[2001:db8::5]:5090"]}"#,
        ));
        assert_eq!(acme.allow("acme.example:5060"), Ok(()));
        assert_eq!(acme.allow("pbx.example:5080"), Ok(()));
        assert_eq!(acme.allow("[2001:db8::5]:5090"), Ok(()));
        for refused in [
            "acme.example:6666",
            "acme.example:x",
            "acme.example:+5060",
            "[2001:db8::5]x",
            "pbx.example",
            "pbx.example:5060",
            "[2001:db8::5]",
        ] {
            let reason = acme.allow(refused).unwrap_err();
            assert!(reason.contains("port"), "{refused}: {reason}");
        }
    }

    /// An address set in brackets, or spelled another way, is the same
    /// address a registrar names.
    #[test]
    fn addresses_match_however_they_are_spelled() {
        let acme = SipDomains::of(&tenant(
            r#"{"sip_domains": ["[2001:db8::5]", "2001:DB8:0:0::7"]}"#,
        ));
        assert_eq!(acme.allow("[2001:db8::5]:5060"), Ok(()));
        assert_eq!(acme.allow("[2001:db8::7]"), Ok(()));
        assert_eq!(acme.allow("2001:db8::5"), Ok(()));
        assert!(acme.allow("[2001:db8::6]:5060").is_err());
    }

    #[test]
    fn a_tenant_without_domains_gets_no_resync() {
        for settings in [
            "{}",
            r#"{"sip_domains": []}"#,
            r#"{"sip_domains": "acme.example"}"#,
            r#"{"sip_domains": [7]}"#,
            "not json sip_domains",
        ] {
            let reason = SipDomains::of(&tenant(settings))
                .allow("acme.example")
                .unwrap_err();
            assert!(reason.contains("no SIP domains"), "{settings}: {reason}");
        }
    }

    #[test]
    fn malformed_entries_match_nothing() {
        let domains = SipDomains::of(&tenant(r#"{"sip_domains": ["", "a b", "acme.example"]}"#));
        assert_eq!(domains.allow("acme.example"), Ok(()));
        assert!(domains.allow("").is_err());
    }

    #[test]
    fn the_setting_is_checked() {
        let check = |v: Value| check_setting(&serde_json::json!({ "sip_domains": v }));
        assert!(check(serde_json::json!(["acme.example", "10.0.0.1", "::1"])).is_ok());
        assert!(check(serde_json::json!("acme.example")).is_err());
        assert!(check(serde_json::json!(["sip:acme.example"])).is_err());
        assert!(check(serde_json::json!(["acme.example:5080", "[::1]:5080"])).is_ok());
        for bad in [
            "acme.example:",
            "acme.example:0",
            "acme.example:99999",
            "[acme.example]",
        ] {
            assert!(check(serde_json::json!([bad])).is_err(), "{bad}");
        }
        assert!(check(serde_json::json!([".acme.example"])).is_err());
        assert!(check(serde_json::json!([1])).is_err());
        let many: Vec<String> = (0..=MAX_DOMAINS).map(|i| format!("d{i}.example")).collect();
        assert!(check(serde_json::json!(many)).is_err());
        assert!(check_setting(&serde_json::json!({})).is_ok());
    }
}

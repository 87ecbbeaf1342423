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

/// A tenant's SIP domains, lowercase, without ports.
#[derive(Debug, Default)]
pub struct SipDomains(Vec<String>);

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
                    .map(comparable)
                    .collect()
            })
            .unwrap_or_default();
        SipDomains(domains)
    }

    /// Whether a NOTIFY may go to `host` (a registrar's host, with or
    /// without a port).
    pub fn allow(&self, host: &str) -> Result<(), String> {
        let bare = without_port(host);
        let wanted = comparable(bare);
        if self.0.is_empty() {
            return Err(format!(
                "the tenant has no SIP domains (settings.{SETTING}, set by a global admin)"
            ));
        }
        if self.0.contains(&wanted) {
            Ok(())
        } else {
            Err(format!(
                "line 1's registrar {bare} is not one of the tenant's SIP domains"
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

fn without_port(host: &str) -> &str {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return host;
    }
    match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(host, |(v6, _)| v6),
        None => host.split(':').next().unwrap_or(host),
    }
}

/// A domain as a global admin may set it: a hostname or an IP address,
/// without a port or scheme.
pub fn check_domain(text: &str) -> Result<(), String> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    let hostname =
        super::sip::is_hostname(text) && !text.ends_with(['-', '.']) && !text.contains("..");
    if hostname || bare.parse::<std::net::Ipv6Addr>().is_ok() {
        Ok(())
    } else {
        Err(format!(
            "settings.{SETTING}: {text:?} is not a hostname or an IP address (no scheme, no port)"
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
        assert_eq!(acme.allow("192.0.2.7:5080"), Ok(()));
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
        assert!(check(serde_json::json!(["acme.example:5060"])).is_err());
        assert!(check(serde_json::json!([".acme.example"])).is_err());
        assert!(check(serde_json::json!([1])).is_err());
        let many: Vec<String> = (0..=MAX_DOMAINS).map(|i| format!("d{i}.example")).collect();
        assert!(check(serde_json::json!(many)).is_err());
        assert!(check_setting(&serde_json::json!({})).is_ok());
    }
}

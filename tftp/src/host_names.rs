//! Which names a plain-HTTP provisioning request may give in `Host`.
//!
//! A web page can have its own name re-pointed at this server (DNS
//! rebinding): the browser then sends the page's requests from the
//! visitor's network, with the page's name in `Host`, and lets the page
//! read the answers as its own. Inside a tenant's `provisioning_networks`
//! that handed a phone's file, SIP passwords and all, to a page anyone in
//! the office opened; a MAC is no secret. Phones ask by an address or by
//! the name they were given, which is `base_url`'s once they have their
//! first file, so other names are refused. Over TLS the page's name does
//! not match the certificate and the browser stops first: HTTPS is not
//! checked.

use std::net::Ipv4Addr;

use axum::http::HeaderValue;

/// Longest DNS name (RFC 1035); a longer `host_names` entry is refused at
/// start by the binary's config check.
pub const MAX_HOST_NAME: usize = 253;

#[derive(Clone, Debug)]
pub struct HostNames {
    /// Lowercase, without a trailing dot.
    names: Vec<String>,
    /// `*` listed: any name, as before this check existed.
    any: bool,
}

impl HostNames {
    /// `base_url`'s host (when it is a name) and the operator's
    /// `host_names`.
    pub fn new(base_url: &str, listed: &[String]) -> HostNames {
        let base = base_url
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(canonical));
        let any = listed.iter().any(|name| name.trim() == "*");
        let names = base
            .into_iter()
            .chain(listed.iter().map(|name| canonical(name)))
            .filter(|name| !name.is_empty() && name != "*")
            .collect();
        HostNames { names, any }
    }

    /// Whether a request with this `Host` is answered: none at all (an
    /// HTTP/1.0 phone), an IP address, `localhost`, or a listed name, with
    /// or without a port.
    pub fn admits(&self, host: Option<&HeaderValue>) -> bool {
        let Some(host) = host else { return true };
        match host.to_str() {
            Ok(host) => self.admits_name(host),
            Err(_) => self.any,
        }
    }

    /// The request's own authority: an absolute-form target's, which
    /// outranks `Host` (RFC 9112, 3.2.2), else its one `Host`. Two `Host`
    /// fields name no one server.
    pub fn admits_request<B>(&self, request: &axum::http::Request<B>) -> bool {
        if let Some(authority) = request.uri().authority() {
            return self.admits_name(authority.as_str().rsplit('@').next().unwrap_or(""));
        }
        let mut hosts = request.headers().get_all(axum::http::header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (host, None) => self.admits(host),
            (_, Some(_)) => self.any,
        }
    }

    /// A `Host` value's text: a name or address, with a port or not.
    fn admits_name(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        if host.starts_with('[') {
            // An IPv6 literal: a page's own name never looks like one.
            return host.contains(']');
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        };
        if name.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        let name = canonical(name);
        name == "localhost"
            || self
                .names
                .iter()
                .any(|listed| match listed.strip_prefix('*') {
                    // `*.prov.example.net`: a name per tenant under the
                    // operator's own domain, which no page's author controls.
                    Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
                    None => *listed == name,
                })
    }
}

fn canonical(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::HostNames;
    use axum::http::HeaderValue;

    fn admits(names: &HostNames, host: &str) -> bool {
        names.admits(Some(&HeaderValue::from_str(host).unwrap()))
    }

    #[test]
    fn phones_names_and_addresses_pass_and_other_names_do_not() {
        let names = HostNames::new(
            "http://Prov.Example.net:8081",
            &["legacy-prov.example.net.".into()],
        );
        assert!(names.admits(None));
        for host in [
            "prov.example.net",
            "PROV.example.NET:8081",
            "prov.example.net.",
            "legacy-prov.example.net",
            "192.0.2.10",
            "192.0.2.10:8081",
            "[2001:db8::1]:8081",
            "[2001:db8::1]",
            "localhost:8081",
        ] {
            assert!(admits(&names, host), "{host}");
        }
        for host in [
            "rebind.attacker.example",
            "rebind.attacker.example:8081",
            "prov.example.net.attacker.example",
            "prov.example.net:http",
            "",
            "2001:db8::1",
        ] {
            assert!(!admits(&names, host), "{host}");
        }
        assert!(!names.admits(Some(&HeaderValue::from_bytes(b"prov\xff").unwrap())));
    }

    #[test]
    fn an_absolute_target_is_judged_by_its_own_authority_and_two_hosts_by_none() {
        let names = HostNames::new("http://prov.example.net", &[]);
        let request = |target: &str, hosts: &[&str]| {
            let mut builder = axum::http::Request::get(target);
            for host in hosts {
                builder = builder.header(axum::http::header::HOST, *host);
            }
            builder.body(()).unwrap()
        };
        assert!(!names.admits_request(&request("http://evil.example/a.cfg", &["127.0.0.1"])));
        assert!(names.admits_request(&request("http://prov.example.net/a.cfg", &["evil.example"])));
        assert!(names.admits_request(&request("http://u@prov.example.net:80/a.cfg", &[])));
        assert!(names.admits_request(&request("/a.cfg", &["prov.example.net"])));
        assert!(!names.admits_request(&request("/a.cfg", &["evil.example", "prov.example.net"])));
        assert!(!names.admits_request(&request("/a.cfg", &["prov.example.net", "evil.example"])));
        assert!(names.admits_request(&request("/a.cfg", &[])));
    }

    #[test]
    fn a_base_url_by_address_admits_only_addresses_and_listed_names() {
        let names = HostNames::new("http://192.0.2.10:8081", &[]);
        assert!(admits(&names, "192.0.2.10:8081"));
        assert!(!admits(&names, "prov.example.net"));
    }

    #[test]
    fn a_wildcard_admits_names_under_its_domain_only() {
        let names = HostNames::new("http://prov.example.net", &["*.prov.example.net".into()]);
        assert!(admits(&names, "acme.prov.example.net"));
        assert!(admits(&names, "a.b.prov.example.net:8081"));
        assert!(!admits(&names, ".prov.example.net"));
        assert!(!admits(&names, "evilprov.example.net"));
        assert!(!admits(&names, "prov.example.net.attacker.example"));
    }

    #[test]
    fn a_star_admits_any_name() {
        let names = HostNames::new("http://prov.example.net", &["*".into()]);
        assert!(admits(&names, "rebind.attacker.example"));
    }
}

//! Where a source's stored secret would be sent. A write that leaves the
//! secret out keeps the stored one; if it also pointed the source at
//! another server, whoever can edit the source would collect a secret
//! someone else set (a bind password, a paid CNAM key a global admin
//! configured) on a server of their choosing. The admin API compares this
//! before and after such a write and asks for the secret again when it
//! differs.

use dialtone_sync::SourceKind;
use sha2::{Digest, Sha256};

use crate::settings::{HttpSettings, LdapSettings};

/// The kind, scheme, host and port a source's secret goes to, how it is
/// sent and which CA vouches for the server; `None` when the settings do
/// not say (unparsable settings, no host).
pub fn secret_destination(kind: SourceKind, name: &str, json: &str) -> Option<String> {
    match kind {
        SourceKind::Ldap => {
            let settings = LdapSettings::parse(name, json).ok()?;
            let url = url::Url::parse(&settings.url).ok()?;
            let default_port = if url.scheme() == "ldaps" { 636 } else { 389 };
            Some(format!(
                "ldap {}://{}:{} starttls={} ca={}",
                url.scheme(),
                url.host_str()?.to_ascii_lowercase(),
                url.port().unwrap_or(default_port),
                settings.starttls,
                ca_digest(settings.ca_pem.as_deref()),
            ))
        }
        SourceKind::Http => {
            let settings = HttpSettings::parse(name, json).ok()?;
            let url = HttpSettings::parse_filled(&settings.url, "1").ok()?;
            // In the url the secret is in the request line, which servers
            // log and may echo back as a name: the whole template is part
            // of where it goes, so moving it there, or within the url,
            // needs it given again.
            let in_url = settings
                .url
                .contains("{secret}")
                .then_some(settings.url.as_str());
            Some(format!(
                "http {}://{}:{} auth={:?} user={:?} ca={} in_url={:?}",
                url.scheme(),
                url.host_str()?.to_ascii_lowercase(),
                url.port_or_known_default()?,
                settings.auth,
                settings.user,
                ca_digest(settings.ca_pem.as_deref()),
                in_url,
            ))
        }
    }
}

fn ca_digest(pem: Option<&str>) -> String {
    pem.map_or_else(
        || "system".to_string(),
        |p| hex::encode(Sha256::digest(p.trim())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(json: &str) -> Option<String> {
        secret_destination(SourceKind::Http, "cnam", json)
    }

    #[test]
    fn the_destination_is_where_and_how_the_secret_goes() {
        let base = http(r#"{"url":"https://cnam.example.net/v1/{e164}","auth":"bearer"}"#);
        assert!(base.is_some());
        // Another path or query is the same server.
        assert_eq!(
            base,
            http(r#"{"url":"https://CNAM.example.net:443/v2/{digits}?x=1","auth":"bearer"}"#)
        );
        for other in [
            r#"{"url":"https://cnam.example.net/v1/{e164}?key={secret}","auth":"bearer"}"#,
            r#"{"url":"http://cnam.example.net/v1/{e164}","auth":"bearer"}"#,
            r#"{"url":"https://attacker.example/v1/{e164}","auth":"bearer"}"#,
            r#"{"url":"https://cnam.example.net:8443/v1/{e164}","auth":"bearer"}"#,
            r#"{"url":"https://cnam.example.net/v1/{e164}","auth":"basic","user":"u"}"#,
        ] {
            assert_ne!(base, http(other), "{other}");
        }
        // Once in the url, any other template is another destination.
        let in_query = http(r#"{"url":"https://cnam.example.net/v1/{e164}?key={secret}"}"#);
        assert_ne!(
            in_query,
            http(r#"{"url":"https://cnam.example.net/v1/{e164}?number={secret}"}"#)
        );
        let ldap = |json: &str| secret_destination(SourceKind::Ldap, "ad", json);
        let ad = ldap(r#"{"url":"ldap://dc1.example.net","base_dn":"dc=example,dc=net"}"#);
        assert!(ad.is_some());
        assert_eq!(
            ad,
            ldap(r#"{"url":"ldap://dc1.example.net:389","base_dn":"ou=people,dc=example,dc=net"}"#)
        );
        assert_ne!(
            ad,
            ldap(r#"{"url":"ldap://evil.example","base_dn":"dc=example,dc=net"}"#)
        );
    }
}

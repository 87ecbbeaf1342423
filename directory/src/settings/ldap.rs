//! An LDAP/AD source's settings: where and how to bind and search, the
//! attributes that hold numbers and names, and a mirror's intervals and
//! sizes, with their defaults and bounds.

use serde::Deserialize;

use super::{check_host_len, invalid};
use crate::error::DirectoryError;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldap://host:port/` (plain or StartTLS) or `ldaps://host:port/`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(default)]
    pub starttls: bool,
    /// CA certificates (PEM text, stored with the source) to trust instead
    /// of the system store. Never a path: a tenant must not make the node
    /// read its files. Certificates are always verified: a name lookup is
    /// not worth a MITM.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Simple bind DN; the password is the source's (sealed) secret.
    /// Without it the search runs anonymously.
    #[serde(default)]
    pub bind_dn: Option<String>,
    pub base_dn: String,
    #[serde(default)]
    pub scope: LdapScope,
    /// ANDed with the number match, e.g. `(objectClass=person)`.
    #[serde(default)]
    pub filter: Option<String>,
    /// Attributes that hold numbers. Each is matched against every form of
    /// the number (E.164, national, digits, common punctuation).
    #[serde(default = "default_number_attributes")]
    pub number_attributes: Vec<String>,
    /// Where the name comes from, first non-empty wins. `a+b` joins two
    /// attributes with a space (`givenName+sn`).
    #[serde(default = "default_name_attributes")]
    pub name_attributes: Vec<String>,
    /// Server-side size limit. A number matches one person; a few more
    /// entries are tolerated (shared lines), thousands are a bad filter.
    #[serde(default = "default_size_limit")]
    pub size_limit: i32,
    /// TCP connect (and TLS handshake) limit; defaults to the source timeout.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// `live` searches per lookup; `mirror` keeps a synced copy in memory
    /// and answers from it alone (see `crate::mirror`).
    #[serde(default)]
    pub mode: LdapMode,
    /// Mirror: seconds between full syncs.
    #[serde(default = "default_sync_interval")]
    pub sync_interval_s: u64,
    /// Mirror: seconds between incremental syncs; 0 = full syncs only.
    #[serde(default = "default_incremental_interval")]
    pub incremental_interval_s: u64,
    /// Mirror: search live (within the deadline) for numbers the mirror lacks.
    #[serde(default)]
    pub live_fallback: bool,
    /// Mirror: entries kept at most (also capped by the tenant's quota).
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Mirror: entries asked for per page (AD serves at most 1000).
    #[serde(default = "default_page_size")]
    pub page_size: i32,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LdapMode {
    #[default]
    Live,
    Mirror,
}

/// A source's own filter's longest text and most parts (parenthesized
/// filters): a real one names a class or two and a few attributes.
pub const MAX_FILTER_BYTES: usize = 1024;
pub const MAX_FILTER_PARTS: usize = 32;
/// Most attributes a source may name for numbers, and for names (each
/// part of a `givenName+sn` counting). Every lookup's filter holds one
/// clause per number attribute per spelling of the number, built and
/// parsed on a shared worker, so the list's length is a tenant's lever.
pub const MAX_ATTRIBUTES: usize = 16;

/// A mirror past this many entries is a bad filter, whatever a setting says.
pub const MAX_MIRROR_ENTRIES: u64 = 2_000_000;

/// Longest interval between a mirror's syncs a tenant may set.
pub const MAX_SYNC_INTERVAL_S: u64 = 30 * 86_400;

fn default_sync_interval() -> u64 {
    900
}

fn default_incremental_interval() -> u64 {
    60
}

fn default_max_entries() -> u64 {
    200_000
}

fn default_page_size() -> i32 {
    500
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LdapScope {
    Base,
    One,
    #[default]
    Sub,
}

fn default_number_attributes() -> Vec<String> {
    [
        "telephoneNumber",
        "mobile",
        "homePhone",
        "ipPhone",
        "otherTelephone",
    ]
    .map(String::from)
    .to_vec()
}

fn default_name_attributes() -> Vec<String> {
    ["displayName", "cn", "givenName+sn"]
        .map(String::from)
        .to_vec()
}

fn default_size_limit() -> i32 {
    5
}

fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b';')
}

impl LdapSettings {
    pub fn parse(source: &str, json: &str) -> Result<LdapSettings, DirectoryError> {
        let mut settings: LdapSettings =
            serde_json::from_str(json).map_err(|e| invalid(source, e.to_string()))?;
        let scheme = settings.url.split("://").next().unwrap_or_default();
        match scheme {
            "ldap" => {}
            "ldaps" if settings.starttls => {
                return Err(invalid(
                    source,
                    "starttls is for ldap:// URLs, not ldaps://",
                ))
            }
            "ldaps" => {}
            _ => return Err(invalid(source, "url must start with ldap:// or ldaps://")),
        }
        // A URL that does not parse fails at connect time, as it always did.
        if let Some(host) = url::Url::parse(&settings.url)
            .ok()
            .as_ref()
            .and_then(url::Url::host_str)
        {
            check_host_len(source, host)?;
        }
        if let Some(filter) = &settings.filter {
            // ldap3 parses a filter by recursion, one level per
            // parenthesis, on the worker that checks or searches: a deep
            // enough one overflows the stack and aborts the process.
            if filter.len() > MAX_FILTER_BYTES || filter.matches('(').count() > MAX_FILTER_PARTS {
                return Err(invalid(
                    source,
                    format!(
                        "filter must be at most {MAX_FILTER_BYTES} bytes with at most {MAX_FILTER_PARTS} parentheses"
                    ),
                ));
            }
            if ldap3::parse_filter(filter).is_err() {
                return Err(invalid(source, format!("filter {filter:?} does not parse")));
            }
        }
        if settings.number_attributes.is_empty() || settings.name_attributes.is_empty() {
            return Err(invalid(
                source,
                "number_attributes and name_attributes must not be empty",
            ));
        }
        let name_parts = settings
            .name_attributes
            .iter()
            .map(|n| n.split('+').count())
            .sum::<usize>();
        if settings.number_attributes.len() > MAX_ATTRIBUTES || name_parts > MAX_ATTRIBUTES {
            return Err(invalid(
                source,
                format!(
                    "number_attributes and name_attributes may each name at most {MAX_ATTRIBUTES} attributes"
                ),
            ));
        }
        let names = settings.name_attributes.iter().flat_map(|n| n.split('+'));
        if let Some(bad) = settings
            .number_attributes
            .iter()
            .map(String::as_str)
            .chain(names)
            .find(|a| !is_attribute_name(a))
        {
            return Err(invalid(source, format!("{bad:?} is not an attribute name")));
        }
        if !(1..=1000).contains(&settings.size_limit) {
            return Err(invalid(source, "size_limit must be between 1 and 1000"));
        }
        if settings.sync_interval_s < 10 {
            return Err(invalid(source, "sync_interval_s must be at least 10"));
        }
        // A stored row from before the upper bound still builds, held to it.
        settings.sync_interval_s = settings.sync_interval_s.min(MAX_SYNC_INTERVAL_S);
        settings.incremental_interval_s = settings.incremental_interval_s.min(MAX_SYNC_INTERVAL_S);
        if !(1..=MAX_MIRROR_ENTRIES).contains(&settings.max_entries) {
            return Err(invalid(
                source,
                format!("max_entries must be between 1 and {MAX_MIRROR_ENTRIES}"),
            ));
        }
        if !(1..=1000).contains(&settings.page_size) {
            return Err(invalid(source, "page_size must be between 1 and 1000"));
        }
        Ok(settings)
    }

    /// Every attribute a search must return to build a name.
    pub fn requested_attributes(&self) -> Vec<String> {
        let mut attrs: Vec<String> = self
            .name_attributes
            .iter()
            .flat_map(|n| n.split('+'))
            .map(String::from)
            .collect();
        attrs.dedup();
        attrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldap_settings_are_checked() {
        let ok =
            LdapSettings::parse("ad", r#"{"url":"ldap://dc1:389/","base_dn":"dc=x"}"#).unwrap();
        assert_eq!(ok.scope, LdapScope::Sub);
        assert_eq!(ok.mode, LdapMode::Live);
        let mirror = LdapSettings::parse(
            "ad",
            r#"{"url":"ldap://dc1/","base_dn":"dc=x","mode":"mirror","incremental_interval_s":0,"live_fallback":true}"#,
        )
        .unwrap();
        assert_eq!(
            (
                mirror.mode,
                mirror.sync_interval_s,
                mirror.incremental_interval_s
            ),
            (LdapMode::Mirror, 900, 0)
        );
        assert_eq!((mirror.max_entries, mirror.page_size), (200_000, 500));
        assert!(ok.number_attributes.contains(&"ipPhone".to_string()));
        assert_eq!(
            ok.requested_attributes(),
            ["displayName", "cn", "givenName", "sn"]
        );
        for (json, why) in [
            (r#"{"url":"http://x/","base_dn":"dc=x"}"#, "ldap://"),
            (
                r#"{"url":"ldaps://x/","base_dn":"dc=x","starttls":true}"#,
                "starttls",
            ),
            (
                r#"{"url":"ldap://x/","base_dn":"dc=x","filter":"(objectClass=person"}"#,
                "does not parse",
            ),
            (
                &format!(
                    r#"{{"url":"ldap://x/","base_dn":"dc=x","filter":"{}(a=b){}"}}"#,
                    "(!".repeat(200_000),
                    ")".repeat(200_000)
                ),
                "at most 1024 bytes",
            ),
            (
                &format!(
                    r#"{{"url":"ldap://x/","base_dn":"dc=x","filter":"(&{})"}}"#,
                    "(a=b)".repeat(40)
                ),
                "at most 32 parentheses",
            ),
            (
                r#"{"url":"ldap://x/","base_dn":"dc=x","number_attributes":["mobile)(cn=*"]}"#,
                "not an attribute",
            ),
            (
                r#"{"url":"ldap://x/","base_dn":"dc=x","tls_verify":false}"#,
                "unknown field",
            ),
            (r#"{"url":"ldap://x/"}"#, "base_dn"),
            (
                r#"{"url":"ldap://x/","base_dn":"dc=x","mode":"cached"}"#,
                "unknown variant",
            ),
            (
                r#"{"url":"ldap://x/","base_dn":"dc=x","sync_interval_s":5}"#,
                "sync_interval_s",
            ),
            (
                r#"{"url":"ldap://x/","base_dn":"dc=x","page_size":1001}"#,
                "page_size",
            ),
            (
                r#"{"url":"ldap://x/","base_dn":"dc=x","max_entries":0}"#,
                "max_entries",
            ),
        ] {
            let err = LdapSettings::parse("ad", json).unwrap_err().to_string();
            assert!(err.contains(why), "{json}: {err}");
        }
        // Each attribute is a clause per spelling in every lookup's filter.
        let many = vec!["a"; MAX_ATTRIBUTES + 1];
        let names = many.join("+");
        for json in [
            serde_json::json!({"url": "ldap://x/", "base_dn": "dc=x", "number_attributes": many}),
            serde_json::json!({"url": "ldap://x/", "base_dn": "dc=x", "name_attributes": [names]}),
        ] {
            let err = LdapSettings::parse("ad", &json.to_string())
                .unwrap_err()
                .to_string();
            assert!(err.contains("at most 16 attributes"), "{json}: {err}");
        }
        let most = vec!["a"; MAX_ATTRIBUTES];
        let json =
            serde_json::json!({"url": "ldap://x/", "base_dn": "dc=x", "number_attributes": most});
        LdapSettings::parse("ad", &json.to_string()).unwrap();
    }
}

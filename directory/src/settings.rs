//! What a `directory_sources` row's `settings` JSON holds, per kind. Parsed
//! with `deny_unknown_fields`, so a typo is an error at write time instead
//! of a silently ignored option.

use std::sync::Arc;

use serde::Deserialize;

use dialtone_sync::import::{ImportError, ImportPlan};
use dialtone_sync::{Mutation, SourceKind};

use crate::error::DirectoryError;

/// Checks a source's settings JSON for its kind as the admin API writes
/// it: what an import checks, and the rules newer than rows already
/// stored, which an export of those rows must still import past.
pub fn check(kind: SourceKind, name: &str, json: &str) -> Result<(), DirectoryError> {
    check_stored(kind, name, json)?;
    if matches!(kind, SourceKind::Ldap) {
        let settings = LdapSettings::parse(name, json)?;
        refuse_credentials_in_ldap_url(name, &settings.url)?;
    }
    Ok(())
}

/// Checks a source's settings JSON as an import takes it, so a typo fails
/// the write, not the first call. An import also moves a node's own
/// export (SQLite to PostgreSQL, a backup restored): a row the API took
/// when it was written must import as it was stored.
fn check_stored(kind: SourceKind, name: &str, json: &str) -> Result<(), DirectoryError> {
    match kind {
        SourceKind::Ldap => {
            LdapSettings::parse(name, json)?;
            check_intervals(name, json)
        }
        SourceKind::Http => {
            let settings = HttpSettings::parse(name, json)?;
            refuse_credentials_in_url(name, &settings.url)
        }
    }
}

/// Refused when written (a stored row with them still builds): a user or
/// password in the url is settings text, which every reader of the
/// tenant's sources sees and the snapshot keeps unsealed. The secret is
/// sealed: `auth` basic, bearer, or `{secret}` in the query.
fn refuse_credentials_in_url(name: &str, url: &str) -> Result<(), DirectoryError> {
    match HttpSettings::parse_filled(url, "1") {
        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => Err(invalid(
            name,
            "the url holds a user or password, which every reader of the source would see: \
             put the credential in secret (auth basic or bearer, or {secret} in the query)",
        )),
        _ => Ok(()),
    }
}

/// Refused when written through the admin API (a stored row with them
/// still builds and imports; they are never used, nor shown in the log): a bind password in
/// the url is settings text every reader of the source sees, and the bind
/// never takes it from there. The bind DN is `bind_dn`, its password the
/// sealed secret. Judged by what the log would show of the url, so that
/// nothing the rule lets through is ever cut from it.
fn refuse_credentials_in_ldap_url(name: &str, url: &str) -> Result<(), DirectoryError> {
    if crate::ldap::without_userinfo(url) != url {
        return Err(invalid(
            name,
            "the url holds a user or password, which every reader of the source would see \
             and the bind never uses: put the user in bind_dn and the password in secret",
        ));
    }
    Ok(())
}

/// A mirror's intervals as written: a tenant sets them, and past 30 days
/// the milliseconds a sync is due at stop fitting (a wrapped interval made
/// syncs run as often as the tenant's spacing allowed). Refused when
/// written; a row stored before the bound is held to it when read.
fn check_intervals(name: &str, json: &str) -> Result<(), DirectoryError> {
    #[derive(Deserialize)]
    struct Intervals {
        sync_interval_s: Option<u64>,
        incremental_interval_s: Option<u64>,
    }
    let written: Intervals =
        serde_json::from_str(json).map_err(|e| invalid(name, e.to_string()))?;
    for (field, value) in [
        ("sync_interval_s", written.sync_interval_s),
        ("incremental_interval_s", written.incremental_interval_s),
    ] {
        if value.is_some_and(|v| v > MAX_SYNC_INTERVAL_S) {
            return Err(invalid(
                name,
                format!("{field} must be at most {MAX_SYNC_INTERVAL_S} (30 days)"),
            ));
        }
    }
    Ok(())
}

/// Drops the sources of an import plan whose settings do not check, and
/// records each as an error at its place in the file.
pub fn check_import(plan: &mut ImportPlan) {
    let mut errors = Vec::new();
    plan.items.retain(|(mutation, location)| {
        let Mutation::UpsertDirectorySource(source) = mutation else {
            return true;
        };
        match check_stored(source.kind, &source.name, &source.settings) {
            Ok(()) => true,
            Err(e) => {
                errors.push(ImportError {
                    location: location.clone(),
                    message: e.to_string(),
                });
                false
            }
        }
    });
    plan.errors.extend(errors);
}

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

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// URL with placeholders: `{e164}` (`+15550101234`, percent-encoded),
    /// `{digits}` (`15550101234`), `{national}` (`5550101234`).
    pub url: String,
    #[serde(default)]
    pub format: HttpFormat,
    /// For JSON: a JSON pointer (`/name`, `/data/0/cnam`) to the name.
    #[serde(default)]
    pub name_field: Option<String>,
    /// CA certificates as PEM text, as for LDAP.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// How the source's secret is sent.
    #[serde(default)]
    pub auth: HttpAuth,
    /// User for basic auth.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuth {
    #[default]
    None,
    Bearer,
    Basic,
}

fn invalid(source: &str, reason: impl Into<String>) -> DirectoryError {
    DirectoryError::Settings {
        source_name: source.to_string(),
        reason: reason.into(),
    }
}

/// DNS's longest name. Every failure to reach a source is logged with its
/// host, and settings hold up to 64 KiB: a longer host can resolve nowhere
/// and would only fill the log.
pub const MAX_HOST_LEN: usize = 253;

fn check_host_len(source: &str, host: &str) -> Result<(), DirectoryError> {
    if host.len() > MAX_HOST_LEN {
        return Err(invalid(
            source,
            format!(
                "the url's host is {} characters long; a host name has at most {MAX_HOST_LEN}",
                host.len()
            ),
        ));
    }
    Ok(())
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

impl HttpSettings {
    /// `url` parsed with every placeholder (`{e164}`, `{digits}`,
    /// `{national}`, `{secret}`) filled with `with`: its scheme, host and
    /// port as every request will have them.
    pub fn parse_filled(url: &str, with: &str) -> Result<url::Url, url::ParseError> {
        let filled = ["{e164}", "{digits}", "{national}", "{secret}"]
            .iter()
            .fold(url.to_string(), |url, p| url.replace(p, with));
        url::Url::parse(&filled)
    }

    pub fn parse(source: &str, json: &str) -> Result<HttpSettings, DirectoryError> {
        let settings: HttpSettings =
            serde_json::from_str(json).map_err(|e| invalid(source, e.to_string()))?;
        if !(settings.url.starts_with("https://") || settings.url.starts_with("http://")) {
            return Err(invalid(source, "url must start with https:// or http://"));
        }
        if !["{e164}", "{digits}", "{national}"]
            .iter()
            .any(|p| settings.url.contains(p))
        {
            return Err(invalid(
                source,
                "url must contain {e164}, {digits} or {national}",
            ));
        }
        // The host and port are checked once, when the client is built
        // (`upstream.rs`): a number in them would connect to a port (the
        // national number's) or host that check never saw. Compared as
        // the URL parser reads them, with the placeholders filled two
        // ways: a URL's text can hide its host from a split on `/`
        // (`http:///{digits}.example/`: the parser skips the slashes).
        let filled = |with: &str| {
            let url = HttpSettings::parse_filled(&settings.url, with).ok()?;
            Some((url.host_str()?.to_owned(), url.port_or_known_default()?))
        };
        match (filled("1"), filled("2")) {
            (Some(one), Some(two)) if one == two => check_host_len(source, &one.0)?,
            (Some(_), Some(_)) => {
                return Err(invalid(
                    source,
                    "placeholders belong in the url's path or query, not its host or port",
                ))
            }
            _ => {
                return Err(invalid(
                    source,
                    "url must be an absolute http:// or https:// URL with a host",
                ))
            }
        }
        if settings.format == HttpFormat::Json && settings.name_field.is_none() {
            return Err(invalid(
                source,
                "format json needs name_field (a JSON pointer)",
            ));
        }
        if let Some(field) = &settings.name_field {
            if !field.starts_with('/') {
                return Err(invalid(
                    source,
                    "name_field is a JSON pointer and starts with /",
                ));
            }
        }
        if settings.auth == HttpAuth::Basic && settings.user.is_none() {
            return Err(invalid(source, "basic auth needs user"));
        }
        Ok(settings)
    }
}

/// Bound of a source's CA text: a few certificates, not a store.
const MAX_CA_PEM: usize = 64 * 1024;

/// The system's CAs, read once per process. Read for each source built,
/// they were 145 certificates read and parsed (1.7–3 ms here) every time a
/// tenant saved a source, under the registry's one lock then. A CA
/// store changed on disk is read at the next start.
static SYSTEM_CONFIG: std::sync::LazyLock<Result<Arc<rustls::ClientConfig>, String>> =
    std::sync::LazyLock::new(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        client_config(roots)
    });

fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    if roots.is_empty() {
        return Err("no CA certificates to verify the server with".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A rustls client config trusting `ca_pem`, or the system's CAs.
pub fn tls_config(
    source: &str,
    ca_pem: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            if pem.len() > MAX_CA_PEM {
                return Err(invalid(
                    source,
                    format!("ca_pem is over {} KiB", MAX_CA_PEM / 1024),
                ));
            }
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| invalid(source, format!("ca_pem: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid(source, format!("ca_pem: {e}")))?;
            }
        }
        None => return SYSTEM_CONFIG.clone().map_err(|e| invalid(source, e)),
    }
    client_config(roots).map_err(|e| invalid(source, e))
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

    /// Past 30 days an interval is refused when written; a row stored
    /// before the bound still builds, held to it.
    #[test]
    fn mirror_intervals_are_bounded() {
        for (json, why) in [
            (
                r#"{"url":"ldap://x/","base_dn":"dc=x","sync_interval_s":18446744073709551615}"#,
                "sync_interval_s must be at most",
            ),
            (
                r#"{"url":"ldap://x/","base_dn":"dc=x","incremental_interval_s":9300000000000000}"#,
                "incremental_interval_s must be at most",
            ),
        ] {
            let err = check(SourceKind::Ldap, "ad", json).unwrap_err().to_string();
            assert!(err.contains(why), "{json}: {err}");
            let stored = LdapSettings::parse("ad", json).unwrap();
            assert!(stored.sync_interval_s <= MAX_SYNC_INTERVAL_S);
            assert!(stored.incremental_interval_s <= MAX_SYNC_INTERVAL_S);
        }
        check(
            SourceKind::Ldap,
            "ad",
            r#"{"url":"ldap://x/","base_dn":"dc=x","sync_interval_s":2592000}"#,
        )
        .unwrap();
    }

    #[test]
    fn http_settings_are_checked() {
        HttpSettings::parse("cnam", r#"{"url":"https://cnam.example/v1/{digits}"}"#).unwrap();
        // A number as the user name reaches no other host.
        HttpSettings::parse(
            "cnam",
            r#"{"url":"https://{digits}@cnam.example:8443/?q={e164}"}"#,
        )
        .unwrap();
        for (json, why) in [
            (r#"{"url":"https://cnam.example/v1/"}"#, "must contain"),
            (r#"{"url":"ftp://x/{e164}"}"#, "https://"),
            (
                r#"{"url":"https://x/{e164}","format":"json"}"#,
                "name_field",
            ),
            (r#"{"url":"https://x/{e164}","auth":"basic"}"#, "user"),
            (
                r#"{"url":"http://cnam.example:{national}/"}"#,
                "not its host or port",
            ),
            (
                r#"{"url":"http://{digits}.cnam.example/"}"#,
                "not its host or port",
            ),
            // The parser skips the slashes: the host is the number's.
            (
                r#"{"url":"http:///{digits}.cnam.example/x"}"#,
                "not its host or port",
            ),
            (
                r#"{"url":"http://\\{national}.cnam.example/"}"#,
                "not its host or port",
            ),
            (
                r#"{"url":"http://user:{e164}@cnam.example:99999/"}"#,
                "with a host",
            ),
        ] {
            let err = HttpSettings::parse("cnam", json).unwrap_err().to_string();
            assert!(err.contains(why), "{json}: {err}");
        }
    }
}

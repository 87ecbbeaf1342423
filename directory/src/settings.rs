//! What a `directory_sources` row's `settings` JSON holds, per kind. Parsed
//! with `deny_unknown_fields`, so a typo is an error at write time instead
//! of a silently ignored option.
//!
//! Each kind's fields and rules live in `ldap` and `http`; this file holds
//! the checks the admin API and an import run on a row, and the TLS client
//! config both kinds connect with.

use std::sync::Arc;

use serde::Deserialize;

use dialtone_sync::import::{ImportError, ImportPlan};
use dialtone_sync::{Mutation, SourceKind};

use crate::error::DirectoryError;

mod http;
mod ldap;

pub use http::{HttpAuth, HttpFormat, HttpSettings};
pub use ldap::{
    LdapMode, LdapScope, LdapSettings, MAX_ATTRIBUTES, MAX_FILTER_BYTES, MAX_FILTER_PARTS,
    MAX_MIRROR_ENTRIES, MAX_SYNC_INTERVAL_S,
};

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
}

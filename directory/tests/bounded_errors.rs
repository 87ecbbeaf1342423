//! A source's settings may be 64 KiB, and every failure to reach the source
//! is logged: what a failure says of the tenant's text (URL, host, DN) is
//! cut short, and a host name longer than DNS allows is refused outright.

mod common;

use std::time::Duration;

use common::*;
use dialtone_directory::ldap::LdapSource;
use dialtone_directory::networks::resolve;
use dialtone_directory::settings::{HttpSettings, LdapSettings, MAX_HOST_LEN};
use dialtone_directory::source_label::SourceLabel;
use dialtone_directory::{DirectoryError, SourceNetworks};

/// Far more than any error should carry, far less than the text in it.
const MOST_ERROR_TEXT: usize = 1_000;

/// A host name of `len` characters, in labels DNS would take.
fn host_of(len: usize) -> String {
    let mut host = String::new();
    while host.len() < len {
        if !host.is_empty() {
            host.push('.');
        }
        let label = (len - host.len()).min(63);
        host.push_str(&"a".repeat(label));
    }
    host
}

fn loopback() -> std::sync::Arc<SourceNetworks> {
    SourceNetworks::parse(&["127.0.0.0/8"]).unwrap().shared()
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_host_longer_than_dns_allows_is_refused_with_its_reason() {
    let longest = host_of(MAX_HOST_LEN);
    let too_long = host_of(MAX_HOST_LEN + 1);
    assert_eq!((longest.len(), too_long.len()), (253, 254));
    let ldap = |host: &str| {
        serde_json::json!({"url": format!("ldap://{host}:389/"), "base_dn": "dc=x"}).to_string()
    };
    let http = |host: &str| {
        serde_json::json!({"url": format!("https://{host}/cnam/{{digits}}")}).to_string()
    };
    LdapSettings::parse("ad", &ldap(&longest)).unwrap();
    HttpSettings::parse("cnam", &http(&longest)).unwrap();
    for error in [
        LdapSettings::parse("ad", &ldap(&too_long)).unwrap_err(),
        HttpSettings::parse("cnam", &http(&too_long)).unwrap_err(),
        LdapSettings::parse("ad", &ldap(&host_of(60_000))).unwrap_err(),
        HttpSettings::parse("cnam", &http(&host_of(60_000))).unwrap_err(),
    ] {
        let text = error.to_string();
        assert!(
            matches!(error, DirectoryError::Settings { .. }) && text.contains("at most 253"),
            "{text}"
        );
        assert!(text.len() < MOST_ERROR_TEXT, "{} bytes", text.len());
    }
}

/// A name that does not resolve is named in the error, cut short (stored
/// rows predate the settings' bound, and the resolver is the last word).
#[tokio::test]
async fn an_unresolved_host_is_named_cut_short() {
    let host = "x".repeat(60_000);
    let error = resolve(&SourceNetworks::default(), &host, 443)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert_eq!(
        error.kind(),
        "unresolved",
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(text.contains("resolving xxxx"), "{}", &text[..300]);
    assert!(text.len() < MOST_ERROR_TEXT, "{} bytes", text.len());
}

/// An LDAP URL whose host is short may still be 60 KB long: a failed
/// connect names it cut short.
#[tokio::test]
async fn a_failed_ldap_connect_names_the_url_cut_short() {
    let url = format!("ldap://127.0.0.1:{}/{}", closed_port(), "o".repeat(60_000));
    let settings = serde_json::json!({"url": url, "base_dn": "dc=x"}).to_string();
    let settings = LdapSettings::parse("ad", &settings).unwrap();
    let source = LdapSource::new(SourceLabel::new(1, 1, "ad"), settings, None, loopback()).unwrap();
    let error = source
        .lookup("+15550104242", "US", Duration::from_secs(5))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("connect ldap://127.0.0.1:"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(text.len() < MOST_ERROR_TEXT, "{} bytes", text.len());
}

/// A refused bind names its DN, cut short. Needs the shared slapd.
#[tokio::test]
async fn a_refused_bind_names_the_dn_cut_short() {
    let mut settings = ldap_settings(&shared_ldap_url());
    settings["bind_dn"] = format!("cn={},{LDAP_BASE}", "x".repeat(60_000)).into();
    let settings = LdapSettings::parse("ad", &settings.to_string()).unwrap();
    let source = LdapSource::new(
        SourceLabel::new(1, 1, "ad"),
        settings,
        Some("wrong".into()),
        loopback(),
    )
    .unwrap();
    let error = source
        .lookup("+15550104242", "US", Duration::from_secs(5))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, DirectoryError::Auth(_)) && text.contains("LDAP bind as cn=xxxx"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(text.len() < MOST_ERROR_TEXT, "{} bytes", text.len());
}

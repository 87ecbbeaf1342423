//! A user or password written into an LDAP source's url: refused when the
//! admin API writes a source, kept loading and importing when stored,
//! never used nor shown.

use std::time::Duration;

use dialtone_sync::SourceKind;

use super::{without_userinfo, LdapSource};
use crate::settings::{check, check_import, LdapSettings};

const WITH_PASSWORD: &str = "ldap://binduser:PW-in-the-url@127.0.0.1:9/";

fn settings(url: &str) -> String {
    serde_json::json!({"url": url, "base_dn": "dc=example,dc=com"}).to_string()
}

#[test]
fn a_written_source_may_not_hold_credentials_in_its_url() {
    for url in [
        WITH_PASSWORD,
        "ldap://binduser@dc1.example.com/",
        "ldaps://:secret@dc1.example.com:636/",
        "ldap://a@b@dc1.example.com/",
    ] {
        let refused = check(SourceKind::Ldap, "ad", &settings(url)).unwrap_err();
        let text = refused.to_string();
        assert!(text.contains("bind_dn"), "{url}: {text}");
        assert!(!text.contains("PW-in-the-url") && !text.contains("secret@"));
    }
    for url in [
        "ldap://127.0.0.1:9/",
        "ldaps://dc1.example.com:636/",
        "ldap://dc1.example.com/ou=a@b,dc=x",
    ] {
        check(SourceKind::Ldap, "ad", &settings(url)).unwrap();
    }
}

/// Stored before the rule, a row goes on loading: refusing stored data
/// would break the node's load and restoring a backup.
#[test]
fn a_stored_source_with_credentials_in_its_url_still_loads() {
    let loaded = LdapSettings::parse("ad", &settings(WITH_PASSWORD)).unwrap();
    assert_eq!(loaded.url, WITH_PASSWORD);
}

/// The API took such a url before the rule: its export is how a node
/// moves to PostgreSQL or is restored, so the import takes it back whole,
/// while the API refuses the very same row.
#[test]
fn an_import_takes_a_stored_source_with_credentials_in_its_url() {
    let location = dialtone_sync::import::Location {
        file: std::path::Path::new("sources.json").into(),
        line: 3,
        column: 1,
        field: None,
    };
    let row = dialtone_sync::DirectorySourceInput {
        tenant: "acme".into(),
        name: "ad".into(),
        kind: SourceKind::Ldap,
        priority: 10,
        enabled: true,
        settings: settings(WITH_PASSWORD),
        secret: None,
        timeout_ms: 2000,
    };
    let mut plan = dialtone_sync::import::ImportPlan::default();
    plan.items.push((
        dialtone_sync::Mutation::UpsertDirectorySource(row.clone()),
        location,
    ));
    check_import(&mut plan);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert_eq!(plan.items.len(), 1);

    let refused = check(row.kind, &row.name, &row.settings).unwrap_err();
    assert!(refused.to_string().contains("bind_dn"), "{refused}");
}

#[test]
fn userinfo_is_cut_from_the_authority_alone() {
    for (url, shown) in [
        (WITH_PASSWORD, "ldap://127.0.0.1:9/"),
        ("ldap://u@h", "ldap://h"),
        ("ldap://a@b@h:389/", "ldap://h:389/"),
        ("ldap://h/ou=a@b?x@y#z@w", "ldap://h/ou=a@b?x@y#z@w"),
        ("ldap://h?x@y", "ldap://h?x@y"),
        ("no scheme@h/x", "h/x"),
        ("ldap://h/", "ldap://h/"),
    ] {
        assert_eq!(without_userinfo(url), shown, "{url}");
    }
}

/// What a failed connect says goes to the log (`directory source failed`,
/// `mirror sync failed`) and to a global admin: it named the url whole.
#[tokio::test]
async fn a_connect_error_never_shows_the_urls_userinfo() {
    let loaded = LdapSettings::parse("ad", &settings(WITH_PASSWORD)).unwrap();
    let networks = crate::SourceNetworks::parse(&["127.0.0.0/8"])
        .unwrap()
        .shared();
    let source = LdapSource::new(
        crate::source_label::SourceLabel::new(1, 1, "ad"),
        loaded,
        None,
        networks,
    )
    .unwrap();
    let failed = source
        .lookup("+15550101234", "US", Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    assert!(failed.contains("127.0.0.1:9"), "{failed}");
    assert!(
        !failed.contains("PW-in-the-url") && !failed.contains("binduser"),
        "{failed}"
    );
}

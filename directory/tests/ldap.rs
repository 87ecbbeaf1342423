//! The LDAP source against a real slapd: the shared one scripts/test starts
//! (loaded with data/directory.ldif) and private ones for TLS, outages and
//! freezes.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::slapd::{test_tls, PrivateSlapd};
use common::*;
use dialtone_directory::ldap::LdapSource;
use dialtone_directory::settings::LdapSettings;
use dialtone_directory::source_label::SourceLabel;
use dialtone_directory::{CacheStatus, Clock, LookupOptions, LookupService};
use dialtone_sync::SourceKind;

/// Longer than production's 300 ms: on a loaded CI machine a first
/// connect, bind and search outlasted 300 ms and answered nothing where
/// the tests expect a name.
const DEADLINE: Duration = Duration::from_millis(1_000);
/// Slack for a loaded CI machine on top of the deadline; a lookup that
/// ignored the deadline would hang for seconds, not this.
const SLACK: Duration = Duration::from_millis(1_000);
/// The source's own timeout, inside the deadline: a frozen server's load
/// fails at it and every waiter coalesced on that load gets its answer.
const SOURCE_TIMEOUT_MS: i32 = 900;

fn direct_source(settings: serde_json::Value) -> LdapSource {
    let settings = LdapSettings::parse("ad", &settings.to_string()).unwrap();
    LdapSource::new(
        SourceLabel::new(1, 1, "ad"),
        settings,
        Some(LDAP_PASSWORD.into()),
        loopback(),
    )
    .unwrap()
}

/// The test slapd listens on loopback, which sources may reach only when
/// the operator says so.
fn loopback() -> std::sync::Arc<dialtone_directory::SourceNetworks> {
    dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
        .unwrap()
        .shared()
}

/// A service for tenant "acme" (region US) whose only remote source is LDAP at `url`.
async fn ldap_service(
    url: &str,
    clock: Clock,
) -> (
    LookupService,
    dialtone_sync::Id,
    dialtone_sync::testing::TestDb,
) {
    let (db, _store, mirror) = mirror_of(&[
        tenant("acme", "US"),
        source(
            "acme",
            "ad",
            SourceKind::Ldap,
            ldap_settings(url),
            Some(LDAP_PASSWORD),
            SOURCE_TIMEOUT_MS,
        ),
    ])
    .await;
    let options = LookupOptions {
        deadline: DEADLINE,
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_secs(30),
        source_networks: loopback(),
        ..LookupOptions::default()
    };
    let id = tenant_id(&mirror, "acme");
    let service = LookupService::with_clock(
        mirror,
        Some(dialtone_sync::testing::test_key()),
        options,
        clock,
    );
    (service, id, db)
}

#[tokio::test]
async fn found_by_every_input_form_and_attribute() {
    let (service, acme, _db) = ldap_service(&shared_ldap_url(), Clock::system()).await;
    // Stored as "+1 (555) 010-1234" in telephoneNumber and "555.010.1299" in mobile;
    // "555 010 1240" and "555-010-1241" (homePhone) for Bob.
    let cases = [
        ("+15550101234", "Alice Example"),
        ("15550101234", "Alice Example"),
        ("(555) 010-1234", "Alice Example"),
        ("555.010.1234", "Alice Example"),
        ("+1 555 010 1299", "Alice Example"),
        ("5550101240", "Robert Builder"),
        ("1-555-010-1241", "Robert Builder"),
        ("011 1 555 010 1251", "Carol Jones"),
        ("(555) 010-1250", "Carol Jones"),
        ("+441632960123", "Dave Davies"),
        ("0061 2 5550 1234", "Erin Walsh"),
    ];
    for (input, want) in cases {
        let answer = service.lookup(acme, input).await.unwrap();
        assert_eq!(answer.name(), Some(want), "{input}: {answer:?}");
        assert_eq!(answer.resolved.source.as_deref(), Some("ad"));
    }
    let miss = service.lookup(acme, "+15550109999").await.unwrap();
    assert_eq!(miss.name(), None);
    assert!(
        miss.resolved.definitive,
        "a clean miss is definitive: {miss:?}"
    );
}

/// Several entries under the number: one name shared by all is shown,
/// different names are not (whichever the server sent first would name
/// someone who may not have called).
#[tokio::test]
async fn a_number_several_entries_list_shows_only_a_name_they_share() {
    let source = direct_source(serde_json::json!({
        "url": shared_ldap_url(), "bind_dn": LDAP_ADMIN, "base_dn": LDAP_BASE,
    }));
    let name = |number: &'static str| {
        let source = &source;
        async move { source.lookup(number, "US", DEADLINE * 3).await.unwrap() }
    };
    assert_eq!(name("+15550101260").await, None);
    assert_eq!(name("+15550101270").await.as_deref(), Some("Gil Grant"));
    // A reply cut short at one entry cannot say the rest agree.
    let one = direct_source(serde_json::json!({
        "url": shared_ldap_url(), "bind_dn": LDAP_ADMIN, "base_dn": LDAP_BASE,
        "size_limit": 1,
    }));
    let cut = one
        .lookup("+15550101270", "US", DEADLINE * 3)
        .await
        .unwrap();
    assert_eq!(cut, None);
    let single = one
        .lookup("+15550101240", "US", DEADLINE * 3)
        .await
        .unwrap();
    assert_eq!(single.as_deref(), Some("Robert Builder"));
}

#[tokio::test]
async fn name_attributes_follow_the_configured_order() {
    let url = shared_ldap_url();
    // Default order: displayName, cn, givenName+sn.
    let default = direct_source(serde_json::json!({
        "url": url, "bind_dn": LDAP_ADMIN, "base_dn": LDAP_BASE,
    }));
    assert_eq!(
        default
            .lookup("+15550101251", "US", DEADLINE * 3)
            .await
            .unwrap()
            .as_deref(),
        Some("C. Jones (Sales)")
    );
    // givenName+sn before cn.
    let mut settings = ldap_settings(&url);
    let configured = direct_source(settings.clone());
    assert_eq!(
        configured
            .lookup("+15550101251", "US", DEADLINE * 3)
            .await
            .unwrap()
            .as_deref(),
        Some("Carol Jones")
    );
    assert_eq!(
        configured
            .lookup("+15550101234", "US", DEADLINE * 3)
            .await
            .unwrap()
            .as_deref(),
        Some("Alice Example")
    );
    // Bob has neither displayName nor givenName: cn.
    assert_eq!(
        configured
            .lookup("+15550101240", "US", DEADLINE * 3)
            .await
            .unwrap()
            .as_deref(),
        Some("Robert Builder")
    );
    // Only attributes Bob lacks: found, but no name to show, so a miss.
    settings["name_attributes"] = serde_json::json!(["displayName", "givenName+sn"]);
    let strict = direct_source(settings);
    assert_eq!(
        strict
            .lookup("+15550101240", "US", DEADLINE * 3)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn hostile_numbers_never_match_extra_entries() {
    let url = shared_ldap_url();
    let source = direct_source(ldap_settings(&url));
    // Straight into the source, past normalization: escaping alone must hold.
    for hostile in [
        "*",
        ")(uid=*",
        "*)(|(objectClass=*",
        "\\2a",
        "\0",
        "+1555*",
        "(cn=*)",
    ] {
        let found = source.lookup(hostile, "US", DEADLINE * 3).await;
        assert!(matches!(found, Ok(None)), "{hostile:?} matched: {found:?}");
    }
    assert!(source.searches() >= 7);
    // A search read to its end is not abandoned: an abandon sent after
    // each one delayed the next by 40 ms (Nagle against delayed ACKs).
    assert!(source
        .lookup("+15550101240", "US", DEADLINE * 3)
        .await
        .unwrap()
        .is_some());
    assert_eq!(source.abandoned(), 0);
    // Through the service the same inputs are refused before any search.
    let (service, acme, _db) = ldap_service(&url, Clock::system()).await;
    for hostile in ["*", ")(uid=*", "\\2a", "\0", "555-010-123*"] {
        assert!(
            service.lookup(acme, hostile).await.is_err(),
            "{hostile:?} accepted"
        );
    }
    assert_eq!(service.source(acme, "ad").unwrap().searches(), 0);
}

#[tokio::test]
async fn hundred_concurrent_misses_cost_one_search() {
    let (service, acme, _db) = ldap_service(&shared_ldap_url(), Clock::system()).await;
    let source = service.source(acme, "ad").unwrap();
    let before = source.searches();
    let lookups: Vec<_> = (0..100)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.lookup(acme, "+1 555 010 1240").await.unwrap() })
        })
        .collect();
    let mut statuses = Vec::new();
    for lookup in lookups {
        let answer = lookup.await.unwrap();
        assert_eq!(answer.name(), Some("Robert Builder"));
        statuses.push(answer.cache);
    }
    assert_eq!(source.searches() - before, 1, "one search for 100 lookups");
    assert_eq!(
        statuses.iter().filter(|s| **s == CacheStatus::Miss).count(),
        1,
        "{statuses:?}"
    );
    // And the answer is cached now.
    assert_eq!(
        service.lookup(acme, "5550101240").await.unwrap().cache,
        CacheStatus::Hit
    );
    assert_eq!(source.searches() - before, 1);
}

#[tokio::test]
async fn starttls_with_the_right_ca_and_not_with_a_wrong_one() {
    let tls = test_tls();
    let slapd = PrivateSlapd::start(Some(&tls));
    let mut settings = ldap_settings(&slapd.url());
    settings["starttls"] = true.into();
    verified_against_ca(settings, &tls).await;
}

/// ldaps:// by name: the connection is opened to the checked address, and
/// the certificate still has to prove the name in the URL.
#[tokio::test]
async fn ldaps_with_the_right_ca_and_not_with_a_wrong_one() {
    let tls = test_tls();
    let slapd = PrivateSlapd::start(Some(&tls));
    verified_against_ca(ldap_settings(&slapd.ldaps_url()), &tls).await;
}

/// Found with the CA that signed the server's certificate; refused, before
/// any search, with another.
async fn verified_against_ca(mut settings: serde_json::Value, tls: &common::slapd::Tls) {
    settings["ca_pem"] = tls.ca_pem.clone().into();
    let trusted = direct_source(settings.clone());
    assert_eq!(
        trusted
            .lookup("+15550101234", "US", Duration::from_secs(5))
            .await
            .unwrap()
            .as_deref(),
        Some("Alice Example")
    );
    settings["ca_pem"] = test_tls().ca_pem.into();
    let untrusted = direct_source(settings);
    let err = untrusted
        .lookup("+15550101234", "US", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate")
            || err.to_string().contains("UnknownIssuer"),
        "{err}"
    );
    assert_eq!(
        untrusted.searches(),
        0,
        "no search over an unverified connection"
    );
}

#[tokio::test]
async fn stopped_server_meets_the_deadline_and_opens_the_breaker() {
    let mut slapd = PrivateSlapd::start(None);
    let clock = Clock::manual();
    let (service, acme, _db) = ldap_service(&slapd.url(), clock.clone()).await;
    assert_eq!(
        service.lookup(acme, "+15550101234").await.unwrap().name(),
        Some("Alice Example")
    );
    let source = service.source(acme, "ad").unwrap();
    slapd.stop();

    // Three failures (the threshold), each within the deadline.
    for n in 0..3 {
        let started = Instant::now();
        let answer = service
            .lookup(acme, &format!("+1555010130{n}"))
            .await
            .unwrap();
        assert!(
            started.elapsed() < DEADLINE + SLACK,
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(answer.name(), None);
        assert!(
            !answer.resolved.definitive,
            "a failed source is not a miss: {answer:?}"
        );
    }
    assert_eq!(
        source.breaker.state(),
        dialtone_directory::breaker::BreakerState::Open
    );

    // Open: the source is not even tried.
    let connects = source_connects(&source);
    let mut slowest = Duration::ZERO;
    for n in 0..50 {
        let started = Instant::now();
        let answer = service
            .lookup(acme, &format!("+155501014{n:02}"))
            .await
            .unwrap();
        slowest = slowest.max(started.elapsed());
        assert!(!answer.resolved.definitive);
    }
    assert_eq!(
        source_connects(&source),
        connects,
        "breaker open, yet the source was tried"
    );
    println!("slowest lookup with the breaker open: {slowest:?}");
    // Whether it was tried is the count above (a killed server refuses at
    // once, so time cannot tell). Time tells that an open breaker answers
    // without waiting on the deadline: half of it is far from both a
    // loaded machine's pauses and a lookup that waited.
    assert!(slowest < DEADLINE / 2, "{slowest:?}");

    // After the cool-down one probe goes through; it fails and re-opens.
    clock.advance(Duration::from_secs(30));
    service.lookup(acme, "+15550101500").await.unwrap();
    assert_eq!(source_connects(&source), connects + 1);
    service.lookup(acme, "+15550101501").await.unwrap();
    assert_eq!(source_connects(&source), connects + 1);

    // The server is back: the next probe closes the breaker.
    slapd.resume_serving();
    clock.advance(Duration::from_secs(30));
    let answer = service.lookup(acme, "+15550101240").await.unwrap();
    assert_eq!(answer.name(), Some("Robert Builder"));
    assert_eq!(
        source.breaker.state(),
        dialtone_directory::breaker::BreakerState::Closed
    );
}

fn source_connects(source: &Arc<dialtone_directory::sources::RemoteSource>) -> u64 {
    match &source.remote {
        dialtone_directory::sources::Remote::Ldap(ldap) => ldap.connects(),
        _ => unreachable!("an LDAP source"),
    }
}

#[tokio::test]
async fn frozen_server_releases_every_waiter_at_the_deadline() {
    let slapd = PrivateSlapd::start(None);
    let (service, acme, _db) = ldap_service(&slapd.url(), Clock::manual()).await;
    // A warm connection, then the server stops answering on it.
    assert_eq!(
        service.lookup(acme, "+15550101234").await.unwrap().name(),
        Some("Alice Example")
    );
    slapd.freeze();
    let started = Instant::now();
    let waiters: Vec<_> = (0..50)
        .map(|i| {
            let service = service.clone();
            // Most wait for one number (coalesced), some for others.
            let number = if i % 10 == 0 {
                format!("+1555010160{}", i / 10)
            } else {
                "+15550101240".to_string()
            };
            tokio::spawn(async move {
                let answer = service.lookup(acme, &number).await.unwrap();
                (answer, Instant::now())
            })
        })
        .collect();
    let mut coalesced = 0;
    for waiter in waiters {
        let (answer, done) = waiter.await.unwrap();
        let took = done - started;
        assert!(took < DEADLINE + SLACK, "released after {took:?}");
        assert_eq!(answer.name(), None);
        coalesced += usize::from(answer.cache == CacheStatus::Coalesced);
    }
    assert!(
        coalesced >= 40,
        "waiters on one number share a load: {coalesced}"
    );
    slapd.thaw();
}

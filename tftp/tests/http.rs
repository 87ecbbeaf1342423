//! The HTTP front end through its router: ETag/304, per-device Digest
//! authentication (right, wrong, stale, and replayed: refused as stale, at
//! no miss), Basic refused on plain HTTP, bans answered 429, and
//! credential-protected phones kept off TFTP.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Request as HttpRequest, StatusCode};
use common::*;
use dialtone_sync::store::{LineInput, PhoneInput};
use dialtone_sync::*;
use dialtone_tftp::digest::{client_response, Algorithm};
use dialtone_tftp::{ProvisionError, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

const SECURE: &str = "/001565000044.cfg";

async fn with_protected_phone() -> Fixture {
    let f = Fixture::new().await;
    f.write(&[Mutation::UpsertPhone(PhoneInput {
        tenant: "acme".into(),
        mac: "00:15:65:00:00:44".parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: None,
        variables: "{}".into(),
        http_user: Some("desk44".into()),
        http_password: Some("hunter2!".into()),
        lines: vec![LineInput {
            extension: "144".into(),
            display_name: "Secure desk".into(),
            auth_user: "u144".into(),
            password: Some("sip-pw".into()),
            registrar: "sip.example.net".into(),
            proxy: None,
            settings: "{}".into(),
        }],
    })])
    .await;
    f
}

async fn get(
    f: &Fixture,
    from: &str,
    path: &str,
    headers: &[(header::HeaderName, String)],
) -> (StatusCode, Vec<String>, String) {
    let app = dialtone_tftp::http::router(f.provisioner.clone())
        .layer(MockConnectInfo(from.parse::<SocketAddr>().unwrap()));
    let mut request = HttpRequest::get(path);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenges = response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let etag = response
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_string());
    let body = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    (
        status,
        challenges,
        etag.map(|e| format!("{e}\n{body}")).unwrap_or(body),
    )
}

fn nonce_of(challenge: &str) -> String {
    challenge
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

/// Asks `SECURE` from `from`, then answers the SHA-256 challenge with
/// `password` for desk44; a request refused before any challenge (a ban)
/// gives that status.
async fn answer_challenge(f: &Fixture, from: &str, password: &str) -> (StatusCode, String) {
    let (status, challenges, body) = get(f, from, SECURE, &[]).await;
    if challenges.is_empty() {
        return (status, body);
    }
    let auth = client_response(
        &nonce_of(&challenges[0]),
        Algorithm::Sha256,
        "GET",
        SECURE,
        ("desk44", password),
        1,
        "k",
    );
    let (status, _, body) = get(f, from, SECURE, &[(header::AUTHORIZATION, auth)]).await;
    (status, body)
}

/// A tenant's template writes the whole file, XHTML with a script
/// included: no answer may run as a page on the provisioning origin.
#[tokio::test]
async fn every_answer_is_sandboxed_and_never_sniffed() {
    let f = Fixture::new().await;
    let app = dialtone_tftp::http::router(f.provisioner.clone()).layer(MockConnectInfo(
        "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
    ));
    for path in ["/001565000001.cfg", "/nothing-here.cfg", SECURE] {
        let request = HttpRequest::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let headers = response.headers();
        assert_eq!(
            headers
                .get(header::CONTENT_SECURITY_POLICY)
                .map(|v| v.to_str().unwrap()),
            Some("sandbox; default-src 'none'"),
            "{path}: {}",
            response.status()
        );
        assert_eq!(
            headers
                .get(header::X_CONTENT_TYPE_OPTIONS)
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn etag_and_not_modified() {
    let f = Fixture::new().await;
    let (status, _, tagged) = get(&f, "192.0.2.10:5060", "/001565000001.cfg", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let etag = tagged.lines().next().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() > 20, "{etag}");
    let (status, _, body) = get(
        &f,
        "192.0.2.10:5060",
        "/001565000001.cfg",
        &[(header::IF_NONE_MATCH, etag.clone())],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(body.lines().nth(1).unwrap_or(""), "");
    // If-None-Match compares weakly: our tag marked W/, in a list, matches.
    let weak = format!("\"other\", W/{etag}");
    let (status, _, _) = get(
        &f,
        "192.0.2.10:5060",
        "/001565000001.cfg",
        &[(header::IF_NONE_MATCH, weak)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, _) = get(
        &f,
        "192.0.2.10:5060",
        "/001565000001.cfg",
        &[(header::IF_NONE_MATCH, "\"other\"".to_string())],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn digest_accepts_the_right_credentials_once() {
    let f = with_protected_phone().await;
    let (status, challenges, _) = get(&f, "192.0.2.10:5060", SECURE, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenges.len(), 2, "{challenges:?}");
    assert!(challenges[0].contains("algorithm=SHA-256") && challenges[1].contains("algorithm=MD5"));
    assert!(challenges.iter().all(|c| !c.contains("Basic")));
    for (i, algorithm) in [Algorithm::Sha256, Algorithm::Md5].into_iter().enumerate() {
        // A fresh challenge each time: both algorithms share a nonce.
        let (_, challenges, _) = get(&f, "192.0.2.10:5060", SECURE, &[]).await;
        let nonce = nonce_of(&challenges[i]);
        let auth = client_response(
            &nonce,
            algorithm,
            "GET",
            SECURE,
            ("desk44", "hunter2!"),
            1,
            "0a4f113b",
        );
        let (status, _, body) = get(
            &f,
            "192.0.2.10:5060",
            SECURE,
            &[(header::AUTHORIZATION, auth.clone())],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{algorithm:?}: {body}");
        assert!(body.contains("account.1.password = sip-pw"), "{body}");
        // The same request again is a replay: refused, with a fresh nonce
        // (a phone retrying after a 503 or a cut-off answer does this), and
        // no miss, however often.
        for _ in 0..40 {
            let (status, challenges, _) = get(
                &f,
                "192.0.2.10:5060",
                SECURE,
                &[(header::AUTHORIZATION, auth.clone())],
            )
            .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{algorithm:?} replay accepted"
            );
            assert!(challenges[0].ends_with("stale=true"), "{challenges:?}");
        }
        assert_eq!(
            f.provisioner.guard().tracked_sources(),
            0,
            "replays charged"
        );
    }
}

/// Asks `target` with a fresh challenge answered for desk44 over `signed`.
async fn ask_signed(f: &Fixture, target: &str, signed: &str) -> (StatusCode, String) {
    let (_, challenges, _) = get(f, "192.0.2.10:5060", target, &[]).await;
    let auth = client_response(
        &nonce_of(&challenges[0]),
        Algorithm::Sha256,
        "GET",
        signed,
        ("desk44", "hunter2!"),
        1,
        "c1",
    );
    let (status, _, body) = get(
        f,
        "192.0.2.10:5060",
        target,
        &[(header::AUTHORIZATION, auth)],
    )
    .await;
    (status, body)
}

/// A client that sends an absolute-form target signs it as sent (RFC 7616:
/// the uri is the request-target), another only its path: both pass. A
/// signed target naming anything else, another file or host, does not.
#[tokio::test]
async fn digest_accepts_an_absolute_target_signed_as_sent_or_by_its_path() {
    let f = with_protected_phone().await;
    // The fixture's base_url host: another name is refused before any
    // login (plain_http_answers_only_names_it_was_given).
    let sent = format!("http://prov.example.net{SECURE}");
    for signed in [sent.as_str(), SECURE] {
        let (status, body) = ask_signed(&f, &sent, signed).await;
        assert_eq!(status, StatusCode::OK, "signed {signed}: {body}");
        assert!(body.contains("account.1.password = sip-pw"), "{body}");
    }
    for signed in [
        "http://prov.example.net/001565000045.cfg",
        "http://elsewhere.example/001565000044.cfg",
    ] {
        let (status, _) = ask_signed(&f, &sent, signed).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "signed {signed}");
    }
}

#[tokio::test]
async fn wrong_credentials_and_basic_are_refused() {
    let f = with_protected_phone().await;
    let (_, challenges, _) = get(&f, "192.0.2.10:5060", SECURE, &[]).await;
    let nonce = nonce_of(&challenges[1]);
    let wrong = client_response(
        &nonce,
        Algorithm::Md5,
        "GET",
        SECURE,
        ("desk44", "guess"),
        1,
        "c1",
    );
    let (status, _, _) = get(
        &f,
        "192.0.2.10:5060",
        SECURE,
        &[(header::AUTHORIZATION, wrong)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Basic over plain HTTP: never, even with the right password.
    let basic = format!("Basic {}", base64_of("desk44:hunter2!"));
    let (status, _, _) = get(
        &f,
        "192.0.2.10:5060",
        SECURE,
        &[(header::AUTHORIZATION, basic)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Phones without credentials are unaffected.
    assert_eq!(
        get(&f, "192.0.2.10:5060", "/001565000001.cfg", &[]).await.0,
        StatusCode::OK
    );
}

fn base64_of(text: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn failed_logins_get_the_source_banned_not_the_phone() {
    let f = with_protected_phone().await;
    let mut banned = false;
    for i in 0..200 {
        let (_, challenges, _) = get(&f, "198.51.100.9:40000", SECURE, &[]).await;
        if challenges.is_empty() {
            banned = true;
            break;
        }
        let nonce = nonce_of(&challenges[1]);
        let wrong = client_response(
            &nonce,
            Algorithm::Md5,
            "GET",
            SECURE,
            ("desk44", &format!("guess{i}")),
            1,
            "c",
        );
        let (status, _, _) = get(
            &f,
            "198.51.100.9:40000",
            SECURE,
            &[(header::AUTHORIZATION, wrong)],
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            banned = true;
            break;
        }
    }
    assert!(banned, "a password-guessing source was never banned");
    assert_eq!(
        get(&f, "198.51.100.9:40000", "/001565000001.cfg", &[])
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The phone itself, from its own address, still authenticates.
    let (_, challenges, _) = get(&f, "192.0.2.44:5060", SECURE, &[]).await;
    let auth = client_response(
        &nonce_of(&challenges[0]),
        Algorithm::Sha256,
        "GET",
        SECURE,
        ("desk44", "hunter2!"),
        1,
        "z",
    );
    assert_eq!(
        get(
            &f,
            "192.0.2.44:5060",
            SECURE,
            &[(header::AUTHORIZATION, auth)]
        )
        .await
        .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn protected_phones_are_not_served_over_tftp() {
    let f = with_protected_phone().await;
    let over_tftp = f.provisioner.provision(&Request {
        path: "001565000044.cfg",
        protocol: dialtone_tftp::Protocol::Tftp,
        remote: Some("192.0.2.44".parse().unwrap()),
        ..Default::default()
    });
    assert_eq!(over_tftp.err(), Some(ProvisionError::NotFound));
}

#[tokio::test]
async fn basic_is_accepted_only_over_tls() {
    let f = with_protected_phone().await;
    let basic = format!("Basic {}", base64_of("desk44:hunter2!"));
    let app = dialtone_tftp::http::router_with(f.provisioner.clone(), true).layer(MockConnectInfo(
        "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
    ));
    let request = HttpRequest::get(SECURE)
        .header(header::AUTHORIZATION, &basic)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    let wrong = format!("Basic {}", base64_of("desk44:nope"));
    let request = HttpRequest::get(SECURE)
        .header(header::AUTHORIZATION, &wrong)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.oneshot(request).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

/// A phone holding the ETag of a file that has since changed gets the new
/// bytes, even before the change stream has been followed at all.
#[tokio::test]
async fn an_old_etag_gets_the_new_bytes_after_an_edit() {
    let f = Fixture::new().await;
    let (_, _, tagged) = get(&f, "192.0.2.10:5060", "/001565000001.cfg", &[]).await;
    let old = tagged.lines().next().unwrap().to_string();
    f.store
        .apply(
            &[phone(
                "00:15:65:00:00:01",
                Family::Yealink,
                "T46S",
                &["Moved desk"],
            )],
            &audit(),
        )
        .await
        .unwrap();
    watcher::catch_up(&f.mirror, &*f.store).await.unwrap();
    let (status, _, tagged) = get(
        &f,
        "192.0.2.10:5060",
        "/001565000001.cfg",
        &[(header::IF_NONE_MATCH, old.clone())],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(tagged.contains("display_name = Moved desk"), "{tagged}");
    let new = tagged.lines().next().unwrap().to_string();
    assert_ne!(new, old);
    let (status, _, _) = get(
        &f,
        "192.0.2.10:5060",
        "/001565000001.cfg",
        &[(header::IF_NONE_MATCH, new)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}

/// A phone with a user and no password (an import can write one) opens to
/// no answer at all, the empty password included: a MAC is no secret.
#[tokio::test]
async fn a_user_without_a_password_is_locked_not_open() {
    let f = with_protected_phone().await;
    f.write(&[Mutation::UpsertPhone(PhoneInput {
        tenant: "acme".into(),
        mac: "00:15:65:00:00:44".parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: None,
        variables: "{}".into(),
        http_user: Some("desk44".into()),
        http_password: None,
        lines: Vec::new(),
    })])
    .await;
    let (status, body) = answer_challenge(&f, "192.0.2.10:5060", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// A source the phone fetched from before passes its ban for the phone's
/// own files, but not to go on guessing its password: after one wrong
/// answer while banned it gets no more tries, right or wrong.
#[tokio::test]
async fn a_banned_source_cannot_go_on_guessing_a_known_phones_password() {
    let f = with_protected_phone().await;
    let from = "198.51.100.20:40000";
    let answer = |password: &'static str| {
        let f = &f;
        async move { answer_challenge(f, from, password).await.0 }
    };
    // The phone fetches from there: the source knows it.
    assert_eq!(answer("hunter2!").await, StatusCode::OK);
    // Someone at the same address gets it banned on another phone's file.
    let mut banned = false;
    for n in 0..500 {
        let (status, ..) = get(&f, from, &format!("/0015650{n:05x}.cfg"), &[]).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            banned = true;
            break;
        }
    }
    assert!(banned, "never banned");
    // Banned, the known phone still gets its file with its password...
    assert_eq!(answer("hunter2!").await, StatusCode::OK);
    // ...until a wrong answer: then no more tries while the ban lasts.
    assert_eq!(answer("guess").await, StatusCode::UNAUTHORIZED);
    assert_eq!(answer("hunter2!").await, StatusCode::TOO_MANY_REQUESTS);
}

/// Bans are per source, so guesses spread over many sources are counted
/// per phone too: past the limit, only a source the phone fetched from may
/// still try its credentials, and everyone else is answered as if wrong.
#[tokio::test]
async fn guesses_from_many_sources_close_a_phone_to_new_ones_not_to_its_own() {
    let f = with_protected_phone().await;
    // As SIGHUP sets it: a handful, so that no source here is banned.
    let limit = 5;
    f.provisioner.guard().set_phone_failures(limit);
    let office = "198.51.100.30:40000";
    assert_eq!(
        answer_challenge(&f, office, "hunter2!").await.0,
        StatusCode::OK
    );
    // One wrong answer from each of several addresses.
    for n in 0..limit - 1 {
        let from = format!("203.0.113.{}:5060", n + 1);
        let (status, body) = answer_challenge(&f, &from, "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // Under the limit a new source with the password still gets in.
    let moved = "192.0.2.77:5060";
    assert_eq!(
        answer_challenge(&f, moved, "hunter2!").await.0,
        StatusCode::OK
    );
    let last = answer_challenge(&f, "203.0.113.250:5060", "guess").await;
    assert_eq!(last.0, StatusCode::UNAUTHORIZED);
    // Closed: a new source is refused even with the right password, as
    // often as it tries, and is not banned for it (the office moved: its
    // other phones fetch from there too)...
    for _ in 0..40 {
        let (status, _) = answer_challenge(&f, "192.0.2.78:5060", "hunter2!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // ...while the phone's own sources still get in.
    assert_eq!(
        answer_challenge(&f, office, "hunter2!").await.0,
        StatusCode::OK
    );
    assert_eq!(
        answer_challenge(&f, moved, "hunter2!").await.0,
        StatusCode::OK
    );

    // Wrong answers from sources the phone knows do not count.
    let other = with_protected_phone().await;
    other.provisioner.guard().set_phone_failures(limit);
    assert_eq!(
        answer_challenge(&other, office, "hunter2!").await.0,
        StatusCode::OK
    );
    for _ in 0..limit * 2 {
        let status = answer_challenge(&other, office, "guess").await.0;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let newcomer = answer_challenge(&other, "192.0.2.79:5060", "hunter2!").await;
    assert_eq!(newcomer.0, StatusCode::OK);
}

/// A lower limit (SIGHUP) closes a phone already past it at once, and
/// says how many it closed: it never reaches the new limit to be told.
#[tokio::test]
async fn a_lower_limit_closes_the_phones_past_it_and_says_so() {
    let f = with_protected_phone().await;
    assert_eq!(f.provisioner.guard().set_phone_failures(10), 0);
    for n in 0..3 {
        let from = format!("203.0.113.{}:5060", n + 1);
        assert_eq!(
            answer_challenge(&f, &from, "guess").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let open = answer_challenge(&f, "192.0.2.90:5060", "hunter2!").await;
    assert_eq!(open.0, StatusCode::OK);
    assert_eq!(f.provisioner.guard().set_phone_failures(2), 1);
    let closed = answer_challenge(&f, "192.0.2.91:5060", "hunter2!").await;
    assert_eq!(closed.0, StatusCode::UNAUTHORIZED);
    assert_eq!(f.provisioner.guard().set_phone_failures(1), 0, "told twice");
}

/// Wrong answers arriving at once are all counted: none is lost between
/// the count and the check, and the phone closes at the limit, not later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_answers_at_once_are_all_counted() {
    let f = std::sync::Arc::new(with_protected_phone().await);
    let limit = 24;
    f.provisioner.guard().set_phone_failures(limit);
    let guesses = (0..limit - 1).map(|n| {
        let f = f.clone();
        tokio::spawn(async move {
            let from = format!("203.0.113.{}:5060", n + 1);
            answer_challenge(&f, &from, "guess").await.0
        })
    });
    for status in futures::future::join_all(guesses).await {
        assert_eq!(status.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let opened = answer_challenge(&f, "192.0.2.80:5060", "hunter2!").await;
    assert_eq!(opened.0, StatusCode::OK, "closed before the limit");
    assert_eq!(
        answer_challenge(&f, "203.0.113.200:5060", "guess").await.0,
        StatusCode::UNAUTHORIZED
    );
    let closed = answer_challenge(&f, "192.0.2.81:5060", "hunter2!").await;
    assert_eq!(
        closed.0,
        StatusCode::UNAUTHORIZED,
        "still open at the limit"
    );
}

/// DNS rebinding: a page whose name was re-pointed at this server asks
/// from inside an office with its own name in `Host`. Plain HTTP answers
/// only `base_url`'s name, listed names and addresses; the refusal is no
/// miss, or the page would get its visitor's office banned. Over TLS the
/// page never gets past the certificate, so HTTPS does not check.
#[tokio::test]
async fn plain_http_answers_only_names_it_was_given() {
    let f = Fixture::new().await;
    let from = "192.0.2.10:5060";
    let ask = |host: Option<&'static str>| {
        let headers: Vec<(header::HeaderName, String)> = host
            .map(|h| (header::HOST, h.to_string()))
            .into_iter()
            .collect();
        let f = &f;
        async move { get(f, from, "/001565000001.cfg", &headers).await }
    };
    for host in [
        None,
        Some("prov.example.net"),
        Some("PROV.example.net:80"),
        Some("192.0.2.1:8081"),
        Some("[2001:db8::1]:8081"),
    ] {
        let (status, _, body) = ask(host).await;
        assert_eq!(status, StatusCode::OK, "{host:?}: {body}");
    }
    for _ in 0..60 {
        let (status, _, body) = ask(Some("rebind.attacker.example")).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
        assert!(!body.contains("sip.example.net"), "{body}");
    }
    assert!(!f
        .provisioner
        .guard()
        .is_banned("192.0.2.10".parse().unwrap()));

    let tls = dialtone_tftp::http::router_with(f.provisioner.clone(), true)
        .layer(MockConnectInfo(from.parse::<SocketAddr>().unwrap()));
    let request = HttpRequest::get("/001565000001.cfg")
        .header(header::HOST, "rebind.attacker.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(tls.oneshot(request).await.unwrap().status(), StatusCode::OK);
}

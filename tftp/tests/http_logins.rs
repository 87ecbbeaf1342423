//! Per-device logins as a phone meets them: half a login locks a phone
//! rather than opening it, places a phone was fetched from before its
//! login changed do not count under the new one, a user name with a quote
//! or a backslash can answer Digest, and HTTPS offers Basic.

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

const MAC: &str = "00:15:65:00:00:44";
const FILE: &str = "/001565000044.cfg";
const PASSWORD: &str = "hunter2!";

/// Phone 44 of `tenant` with this login, its line's SIP password in its
/// file.
fn phone_44(tenant: &str, user: Option<&str>, password: Option<&str>) -> Mutation {
    Mutation::UpsertPhone(PhoneInput {
        tenant: tenant.into(),
        mac: MAC.parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: None,
        variables: "{}".into(),
        http_user: user.map(str::to_string),
        http_password: password.map(str::to_string),
        lines: vec![LineInput {
            extension: "144".into(),
            display_name: "Desk".into(),
            auth_user: "u144".into(),
            password: Some("sip-pw".into()),
            registrar: "sip.example.net".into(),
            proxy: None,
            settings: "{}".into(),
        }],
    })
}

struct Reply {
    status: StatusCode,
    challenges: Vec<String>,
    body: String,
}

async fn get(f: &Fixture, secure: bool, from: &str, authorization: Option<&str>) -> Reply {
    let app = dialtone_tftp::http::router_with(f.provisioner.clone(), secure)
        .layer(MockConnectInfo(from.parse::<SocketAddr>().unwrap()));
    let mut request = HttpRequest::get(FILE);
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenges = (response.headers().get_all(header::WWW_AUTHENTICATE))
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        challenges,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Asks over plain HTTP, then answers the SHA-256 challenge as `user`
/// with `password`.
async fn answer(f: &Fixture, from: &str, user: &str, password: &str) -> Reply {
    let first = get(f, false, from, None).await;
    let Some(challenge) = first.challenges.first() else {
        return first;
    };
    let nonce = challenge.split("nonce=\"").nth(1).unwrap();
    let nonce = nonce.split('"').next().unwrap();
    let auth = client_response(
        nonce,
        Algorithm::Sha256,
        "GET",
        FILE,
        (user, password),
        1,
        "c",
    );
    get(f, false, from, Some(&auth)).await
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// A phone with a password and no user (written around the checks) asks
/// for a login no answer can give: refused over HTTP and HTTPS, whatever
/// user is sent, and not served over TFTP either. It used to be served to
/// anyone, SIP passwords and all.
#[tokio::test]
async fn a_password_without_a_user_locks_the_phone() {
    let f = Fixture::new().await;
    f.write(&[phone_44("acme", None, Some(PASSWORD))]).await;
    let from = "192.0.2.10:5060";
    let asked = get(&f, false, from, None).await;
    assert_eq!(asked.status, StatusCode::UNAUTHORIZED, "{}", asked.body);
    assert!(!asked.body.contains("sip-pw"));
    for user in ["", "desk", "admin"] {
        let reply = answer(&f, from, user, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{user:?}");
        let reply = get(&f, true, from, Some(&basic(user, PASSWORD))).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{user:?} over TLS");
    }
    let over_tftp = f.provisioner.provision(&Request {
        path: "001565000044.cfg",
        protocol: dialtone_tftp::Protocol::Tftp,
        remote: Some("192.0.2.44".parse().unwrap()),
        ..Default::default()
    });
    assert_eq!(over_tftp.err(), Some(ProvisionError::NotFound));
}

/// The review's case: someone who knew the MAC fetched the phone's file
/// from four addresses while it had no login. Once its tenant gives it
/// one, those addresses are no longer the phone's: the office that proves
/// the password is remembered in their place, so when guesses from
/// elsewhere close the phone's credentials, the office still gets in and
/// the four addresses, right password or not, do not.
#[tokio::test]
async fn places_taken_before_a_login_do_not_outlive_it() {
    let f = Fixture::new().await;
    f.write(&[phone_44("acme", None, None)]).await;
    let taken: Vec<String> = (1..=4).map(|n| format!("203.0.113.{n}:5060")).collect();
    for from in &taken {
        let reply = get(&f, false, from, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }

    f.write(&[phone_44("acme", Some("desk44"), Some(PASSWORD))])
        .await;
    let limit = 3;
    f.provisioner.guard().set_phone_failures(limit);
    let office = "198.51.100.30:40000";
    let reply = answer(&f, office, "desk44", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    for n in 0..limit {
        let from = format!("192.0.2.{}:5060", 100 + n);
        let reply = answer(&f, &from, "desk44", "guess").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }

    let reply = answer(&f, office, "desk44", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "the office was shut out");
    for from in &taken {
        let reply = answer(&f, from, "desk44", PASSWORD).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{from} still counts as the phone's"
        );
    }
}

/// The same after a move: places the phone was fetched from in its old
/// tenant do not pass a ban for it in the new one.
#[tokio::test]
async fn places_do_not_follow_a_phone_to_another_tenant() {
    let f = Fixture::new().await;
    f.write(&[Mutation::UpsertTenant(store::TenantInput {
        slug: "globex".into(),
        name: "Globex".into(),
        default_region: "US".into(),
        settings: "{}".into(),
    })])
    .await;
    f.write(&[phone_44("acme", None, None)]).await;
    let old_office = "203.0.113.9:5060";
    assert_eq!(
        get(&f, false, old_office, None).await.status,
        StatusCode::OK
    );
    f.write(&[phone_44("globex", None, None)]).await;
    // Banned on misses of its own, the old office is not let through for
    // the phone it no longer has.
    let mut banned = false;
    for n in 0..500u32 {
        // Past the fixture's MACs: a fetch of phone 44 would be served.
        let path = format!("0015650{:05x}.cfg", 0x1000 + n);
        let asked = f.provisioner.provision(&Request {
            path: &path,
            protocol: dialtone_tftp::Protocol::Http,
            remote: Some(old_office.parse::<SocketAddr>().unwrap().ip()),
            ..Default::default()
        });
        if asked.err() == Some(ProvisionError::Banned) {
            banned = true;
            break;
        }
    }
    assert!(banned, "never banned");
    let reply = get(&f, false, old_office, None).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
}

/// A user name holding `"` or `\` (stored before the checks refused one)
/// is sent escaped inside Digest's quotes, and read back unescaped.
#[tokio::test]
async fn a_user_name_with_a_quote_or_backslash_can_answer_digest() {
    let f = Fixture::new().await;
    let user = r#"desk "44" \ main"#;
    f.write(&[phone_44("acme", Some(user), Some(PASSWORD))])
        .await;
    let reply = answer(&f, "192.0.2.10:5060", user, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("sip-pw"));
    let wrong = answer(&f, "192.0.2.11:5060", "desk ", PASSWORD).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

/// HTTPS offers Basic after the Digest challenges, and a phone that sends
/// Basic only once offered it gets in; plain HTTP never offers it.
#[tokio::test]
async fn basic_is_offered_over_https_only() {
    let f = Fixture::new().await;
    f.write(&[phone_44("acme", Some("desk44"), Some(PASSWORD))])
        .await;
    let from = "192.0.2.10:5060";
    let secure = get(&f, true, from, None).await;
    assert_eq!(secure.status, StatusCode::UNAUTHORIZED);
    assert_eq!(secure.challenges.len(), 3, "{:?}", secure.challenges);
    assert!(secure.challenges[..2]
        .iter()
        .all(|c| c.starts_with("Digest ")));
    assert_eq!(secure.challenges[2], r#"Basic realm="dialtone""#);
    let reply = get(&f, true, from, Some(&basic("desk44", PASSWORD))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let plain = get(&f, false, from, None).await;
    assert_eq!(plain.status, StatusCode::UNAUTHORIZED);
    assert_eq!(plain.challenges.len(), 2, "{:?}", plain.challenges);
    assert!(plain.challenges.iter().all(|c| !c.contains("Basic")));
}

/// A wrong password is a line of the phone's history (a phone still
/// sending the one it had before an admin changed it fails at every boot,
/// and support looks there); Digest's challenge to a request without
/// credentials is not.
#[tokio::test]
async fn a_wrong_password_is_in_the_history_and_the_challenge_is_not() {
    let mut f = Fixture::new().await;
    f.write(&[phone_44("acme", Some("desk"), Some(PASSWORD))])
        .await;
    let from = "192.0.2.10:5060";
    // Each step with its own history, written out before the next.
    let outcomes = |f: &mut Fixture| {
        let (provisioner, writer) = recording(f);
        f.provisioner = std::sync::Arc::new(provisioner);
        let store = f.store.clone();
        async move {
            stored(writer).await;
            let boots = store
                .recent_boots(&MAC.parse().unwrap(), None, 10)
                .await
                .unwrap();
            boots.into_iter().map(|b| b.outcome).collect::<Vec<_>>()
        }
    };

    let written = outcomes(&mut f);
    for _ in 0..3 {
        let challenged = get(&f, false, from, None).await;
        assert_eq!(challenged.status, StatusCode::UNAUTHORIZED);
    }
    let challenges = written.await;
    assert!(challenges.is_empty(), "{challenges:?}");

    let written = outcomes(&mut f);
    let wrong = answer(&f, from, "desk", "hunter3").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let right = answer(&f, from, "desk", PASSWORD).await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
    let mut rows = written.await;
    rows.sort();
    assert_eq!(rows, ["error: device authentication failed", "ok"]);
}

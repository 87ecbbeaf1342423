//! Requests anyone can repeat at will must not become a log line each, nor
//! let one tenant's flood of a failure hide another tenant's line of it.

mod common;
#[allow(unused_macros)]
mod tftp_support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request as HttpRequest, StatusCode};
use common::*;
use dialtone_sync::store::TenantInput;
use dialtone_sync::testing::logs::{capture, LogLines};
use dialtone_sync::{Family, Mutation, TemplateScope};
use dialtone_tftp::tftp::TftpOptions;
use tower::ServiceExt;

fn app(f: &Fixture) -> axum::Router {
    dialtone_tftp::http::router(f.provisioner.clone()).layer(MockConnectInfo(
        "192.0.2.10:5060".parse::<SocketAddr>().unwrap(),
    ))
}

async fn status(app: &axum::Router, path: &str) -> StatusCode {
    let request = HttpRequest::get(path).body(Body::empty()).unwrap();
    app.clone().oneshot(request).await.unwrap().status()
}

/// A file that opens for nobody, not even root: one whose read is denied
/// where that holds, else a symbolic link to itself (ELOOP).
fn make_unopenable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(path).is_ok() {
        std::fs::remove_file(path).unwrap();
        std::os::unix::fs::symlink(path.file_name().unwrap(), path).unwrap();
    }
    assert!(std::fs::File::open(path).is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound));
}

#[tokio::test]
async fn a_static_file_that_will_not_open_is_404_if_gone_else_500_and_logged_once_a_second() {
    let lines = capture();
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gone.ld"), b"firmware").unwrap();
    std::fs::write(dir.path().join("denied.ld"), b"firmware").unwrap();
    assert_eq!(f.provisioner.reload_static(dir.path()).unwrap(), 2);
    std::fs::remove_file(dir.path().join("gone.ld")).unwrap();
    make_unopenable(&dir.path().join("denied.ld"));
    let app = app(&f);

    for _ in 0..50 {
        assert_eq!(status(&app, "/gone.ld").await, StatusCode::NOT_FOUND);
    }
    let logged = lines.containing("static file");
    // Two at most should the requests straddle a second.
    assert!((1..=2).contains(&logged.len()), "{logged:#?}");

    assert_eq!(
        status(&app, "/denied.ld").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn one_tenants_failing_phone_does_not_hide_anothers_failure() {
    let lines = capture();
    let f = Fixture::new().await;
    let Mutation::UpsertPhone(mut beta_phone) =
        phone("00:15:65:00:00:09", Family::Yealink, "T46S", &["Beta"])
    else {
        unreachable!()
    };
    beta_phone.tenant = "beta".into();
    f.write(&[
        Mutation::UpsertTenant(TenantInput {
            slug: "beta".into(),
            name: "Beta".into(),
            default_region: "US".into(),
            settings: "{}".into(),
        }),
        Mutation::UpsertPhone(beta_phone),
    ])
    .await;
    let state = f.mirror.load();
    let broken: Vec<Mutation> = ["acme", "beta"]
        .iter()
        .map(|slug| {
            template(
                TemplateScope::Tenant,
                Family::Yealink,
                &state.tenant_by_slug(slug).unwrap().id.to_string(),
                "{mac}.cfg",
                "{{ throw('broken') }}",
            )
        })
        .collect();
    f.write(&broken).await;
    let app = app(&f);

    // Cached after the first: each costs nothing, and could come at line rate.
    for _ in 0..20 {
        assert_eq!(
            status(&app, "/001565000001.cfg").await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(
        status(&app, "/001565000009.cfg").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let failed = lines.containing("provisioning failed");
    let of = |slug: &str| {
        let field = format!("tenant=\"{slug}\"");
        failed.iter().filter(|l| l.contains(&field)).count()
    };
    assert_eq!(of("acme"), 1, "{failed:#?}");
    assert_eq!(of("beta"), 1, "{failed:#?}");
}

/// A refused path is logged, whatever it held: whole, a 60 KB one from a
/// few addresses kept gigabytes of log a day coming.
#[tokio::test]
async fn a_refused_60_kb_path_is_logged_cut_to_a_bounded_line() {
    let lines = capture();
    let f = Fixture::new().await;
    let path = format!("/{}", "a".repeat(60_000));
    assert_eq!(status(&app(&f), &path).await, StatusCode::BAD_REQUEST);
    let logged = lines.containing("refused provisioning path");
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(logged[0].len() < 600, "{} bytes", logged[0].len());
    assert!(logged[0].contains("…[cut, "), "{}", logged[0]);
}

/// The same over TFTP, where a name fills what a datagram holds; the
/// server's threads log, so the subscriber is the process's.
#[tokio::test]
async fn a_refused_long_tftp_name_is_logged_cut_to_a_bounded_line() {
    let lines = LogLines::process_wide();
    let f = Fixture::new().await;
    let server = tftp_support::Server::start(
        tftp_support::Mode::Ported,
        f.provisioner.clone(),
        TftpOptions::default(),
    );
    let name = format!("{}.cfg", "a".repeat(2000));
    let (code, _) = tftp_support::error_of(server.addr, &tftp_support::request(1, &name, &[]));
    assert_eq!(code, 2);
    drop(server);
    let logged = lines.containing("refused TFTP path");
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(logged[0].len() < 600, "{} bytes", logged[0].len());
    assert!(logged[0].contains("[cut, 2004 bytes]"), "{}", logged[0]);
}

/// The ban line fail2ban reads says when a miss behind the ban came over
/// TFTP, whose source anyone can forge: a firewall must not block an
/// address on those. Misses over HTTP connections alone end the line
/// where the shipped filter's pattern ends. An IPv6 source is its /64.
#[tokio::test]
async fn a_ban_says_when_its_misses_could_be_forged() {
    let lines = capture();
    let f = Fixture::new().await;
    let ask = |from: &'static str, protocol: dialtone_tftp::provision::Protocol| {
        let provisioner = f.provisioner.clone();
        async move {
            let request = dialtone_tftp::Request {
                path: "nothing-here.cfg",
                remote: Some(from.parse().unwrap()),
                protocol,
                ..Default::default()
            };
            let _ = provisioner.provision_async(&request).await;
        }
    };
    use dialtone_tftp::provision::Protocol::{Http, Tftp};
    for _ in 0..40 {
        ask("192.0.2.21", Http).await;
    }
    ask("192.0.2.22", Tftp).await;
    for _ in 0..40 {
        ask("192.0.2.22", Http).await;
        ask("2001:db8:1:2::7", Http).await;
    }
    let bans = lines.containing("provisioning: ban ");
    assert_eq!(bans.len(), 3, "{bans:#?}");
    let line = |source: &str| {
        bans.iter()
            .find(|l| l.contains(&format!("ban {source} ")))
            .unwrap_or_else(|| panic!("no ban of {source}: {bans:#?}"))
            .clone()
    };
    assert!(
        line("192.0.2.21").ends_with("after repeated misses"),
        "{}",
        line("192.0.2.21")
    );
    assert!(
        line("192.0.2.22").contains("misses, some over TFTP"),
        "{}",
        line("192.0.2.22")
    );
    assert!(
        line("2001:db8:1:2::/64").ends_with("after repeated misses"),
        "{}",
        line("2001:db8:1:2::/64")
    );
}

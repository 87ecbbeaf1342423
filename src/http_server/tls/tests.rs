//! Reloads of the served certificate, checked by handshakes of a client
//! trusting one certificate or another, and its dates.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn handshake_failures_are_logged_once_a_minute() {
    let limit = MinuteLimit::new();
    let start = Instant::now();
    assert_eq!(limit.allow(start), Some(0));
    assert_eq!(limit.allow(start + Duration::from_secs(1)), None);
    assert_eq!(limit.allow(start + Duration::from_secs(59)), None);
    assert_eq!(limit.allow(start + Duration::from_secs(60)), Some(2));
}

/// A self-signed certificate for `localhost`, written to the files.
fn issue(cert: &Path, key: &Path) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(cert, issued.cert.pem()).unwrap();
    std::fs::write(key, issued.signing_key.serialize_pem()).unwrap();
    issued
}

/// As [`issue`], valid until the first of January of `year`.
fn issue_until(cert: &Path, key: &Path, year: i32) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    issue_dated(cert, key, 1975, year)
}

/// As [`issue`], valid from the first of January of `from` until that of
/// `until`.
fn issue_dated(
    cert: &Path,
    key: &Path,
    from: i32,
    until: i32,
) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(until, 1, 1);
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let issued = rcgen::CertifiedKey {
        cert: params.self_signed(&signing_key).unwrap(),
        signing_key,
    };
    std::fs::write(cert, issued.cert.pem()).unwrap();
    std::fs::write(key, issued.signing_key.serialize_pem()).unwrap();
    issued
}

/// What `run` logged, as the text log shows it.
fn logged<T>(run: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, run);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// Whether a client trusting only `trusted` completes a handshake.
async fn handshake(acceptor: &TlsAcceptor, trusted: &rcgen::Certificate) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let (client, server) = tokio::io::duplex(64 * 1024);
    let serving = {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let mut stream = acceptor.accept(server).await.ok()?;
            stream.write_all(b"hi").await.ok()?;
            stream.shutdown().await.ok()
        })
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let Ok(mut stream) = connector.connect(name, client).await else {
        return false;
    };
    let mut greeting = [0u8; 2];
    let read = stream.read_exact(&mut greeting).await.is_ok();
    let _ = serving.await;
    read && &greeting == b"hi"
}

#[tokio::test]
async fn a_reload_serves_the_renewed_certificate_and_keeps_the_old_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = issue(&cert, &key);
    let (acceptor, files) = tls_acceptor(&cert, &key).unwrap();
    assert!(handshake(&acceptor, &first.cert).await);

    // rcgen's default validity ends on 4096-01-01.
    assert_eq!(files.not_after(), Some(67_090_118_400));

    // Renewed in place, then SIGHUP; the expiry follows the renewal.
    let renewed = issue_until(&cert, &key, 2031);
    assert!(handshake(&acceptor, &first.cert).await, "until the reload");
    files.reload().unwrap();
    assert_eq!(files.not_after(), Some(1_924_992_000));
    assert!(handshake(&acceptor, &renewed.cert).await);
    assert!(!handshake(&acceptor, &first.cert).await);

    // Half a renewal (a new certificate, the old key): refused, and
    // the running certificate stays.
    let half = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&cert, half.cert.pem()).unwrap();
    let refused = files.reload().unwrap_err().to_string();
    assert!(refused.contains("cert.pem"), "{refused}");
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(files.reload().is_err());
    assert!(handshake(&acceptor, &renewed.cert).await);
    assert_eq!(files.not_after(), Some(1_924_992_000), "the running one's");
}

/// Valid from 2099, or until 2000: a phone that checks dates refuses
/// both, so a SIGHUP to either keeps a running certificate that is valid,
/// and says why at ERROR, naming the date.
#[tokio::test]
async fn a_reload_keeps_a_valid_certificate_over_one_outside_its_dates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = issue(&cert, &key);
    let (acceptor, files) = tls_acceptor(&cert, &key).unwrap();
    for (from, until, why) in [
        (
            2099,
            2100,
            "the new one is not valid until 2099-01-01 00:00:00 UTC",
        ),
        (1999, 2000, "the new one expired at 2000-01-01 00:00:00 UTC"),
    ] {
        issue_dated(&cert, &key, from, until);
        let (reloaded, log) = logged(|| files.reload_logged());
        assert!(!reloaded, "{log}");
        assert!(log.contains("ERROR"), "{log}");
        assert!(
            log.contains(&format!("kept the running certificate: {why}")),
            "{log}"
        );
        assert!(handshake(&acceptor, &first.cert).await, "{why}");
        assert_eq!(files.not_after(), Some(67_090_118_400), "the running one's");
    }
    // A half renewal stays a warning: the next SIGHUP mends it.
    let half = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&cert, half.cert.pem()).unwrap();
    let (reloaded, log) = logged(|| files.reload_logged());
    assert!(
        !reloaded && log.contains("WARN") && !log.contains("ERROR"),
        "{log}"
    );
}

/// With the running certificate outside its dates too there is nothing
/// valid to keep: the new one is served, and its dates logged at ERROR.
#[tokio::test]
async fn a_reload_from_an_expired_certificate_serves_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    issue_dated(&cert, &key, 1999, 2000);
    let (acceptor, files) = tls_acceptor(&cert, &key).unwrap();
    let later = issue_dated(&cert, &key, 2099, 2100);
    let (reloaded, log) = logged(|| files.reload_logged());
    assert!(reloaded, "{log}");
    assert!(
        log.contains("ERROR") && log.contains("not valid until 2099-01-01 00:00:00 UTC"),
        "{log}"
    );
    assert_eq!(files.not_after(), Some(4_102_444_800));
    // The client checks dates: the handshake fails on them, not on trust.
    assert!(!handshake(&acceptor, &later.cert).await);
    assert_eq!(
        files.date_problem(),
        Some(DateProblem::NotYetValid(4_070_908_800))
    );
}

/// At the start there is nothing else to serve: a certificate outside
/// its dates is served, said at ERROR with the date, and both dates are
/// exported.
#[test]
fn a_certificate_outside_its_dates_is_an_error_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    for (from, until, said) in [
        (2099, 2100, "not valid until 2099-01-01 00:00:00 UTC"),
        (1999, 2000, "expired at 2000-01-01 00:00:00 UTC"),
    ] {
        issue_dated(&cert, &key, from, until);
        let (_, files) = tls_acceptor(&cert, &key).unwrap();
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let ((), log) =
            logged(|| metrics::with_local_recorder(&recorder, || files.record_expiry()));
        assert!(log.contains("ERROR") && log.contains(said), "{log}");
        let scrape = handle.render();
        let not_before = rcgen::date_time_ymd(from, 1, 1).unix_timestamp();
        assert!(
            scrape.contains(&format!("{NOT_BEFORE_GAUGE} {not_before}")),
            "{scrape}"
        );
    }
}

#[test]
fn a_start_a_little_ahead_of_this_clock_is_allowed_for() {
    let dates = Validity {
        not_before: 1_000_000 + 60,
        not_after: 2_000_000,
    };
    assert_eq!(dates.problem(1_000_000), None);
    assert_eq!(
        dates.problem(1_000_000 - 3_600),
        Some(DateProblem::NotYetValid(1_000_060))
    );
    assert_eq!(
        dates.problem(2_000_000),
        Some(DateProblem::Expired(2_000_000))
    );
}

#[test]
fn dates_are_said_in_utc_whatever_the_year() {
    assert_eq!(dates::Utc(0).to_string(), "1970-01-01 00:00:00 UTC");
    assert_eq!(
        dates::Utc(-631_152_000).to_string(),
        "1950-01-01 00:00:00 UTC"
    );
    assert_eq!(
        dates::Utc(67_090_118_400).to_string(),
        "4096-01-01 00:00:00 UTC"
    );
    assert_eq!(
        DateProblem::Expired(1).to_string(),
        "expired at 1970-01-01 00:00:01 UTC"
    );
}

//! The HTTPS listener's certificate, read from PEM files at start and again
//! on SIGHUP: a certificate renewed in place (certbot and the like) is
//! served from the next handshake on, without a restart that would drop
//! every phone's connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// The certificate and key files, and what was last read from them.
#[derive(Debug)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// When the served certificate expires (Unix seconds; 0 if its date
    /// could not be read).
    not_after: AtomicI64,
}

/// The gauge an expiry alert compares with `time()`.
pub const EXPIRY_GAUGE: &str = "dialtone_tls_certificate_expiry_timestamp_seconds";

/// Within this many days of its expiry, a certificate read is logged as
/// a warning: a renewal that stopped working shows in the log weeks
/// before phones refuse the handshake.
const EXPIRY_WARNING_DAYS: i64 = 21;

impl TlsFiles {
    /// Reads the files again; on any error the running certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = certified_key(&self.cert, &self.key, &self.provider)?;
        let not_after = not_after(&fresh);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        self.not_after.store(not_after, Ordering::Relaxed);
        self.record_expiry();
        Ok(())
    }

    /// When the served certificate expires (Unix seconds), if its date
    /// could be read.
    pub fn not_after(&self) -> Option<i64> {
        Some(self.not_after.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }

    /// Sets the expiry gauge, and logs a certificate that has expired or
    /// soon will. Called once the metrics recorder is installed, and after
    /// each reload.
    pub fn record_expiry(&self) {
        let Some(not_after) = self.not_after() else {
            // 0, not the previous certificate's date: the alerts skip it.
            metrics::gauge!(EXPIRY_GAUGE).set(0.0);
            tracing::warn!(cert = %self.cert.display(), "the TLS certificate's expiry date could not be read; expiry gauge 0");
            return;
        };
        metrics::gauge!(EXPIRY_GAUGE).set(not_after as f64);
        let now = dialtone_sync::now_millis() / 1000;
        let days = (not_after - now).div_euclid(86_400);
        if not_after <= now {
            tracing::error!(cert = %self.cert.display(), "the TLS certificate has expired; phones that check dates refuse it");
        } else if days < EXPIRY_WARNING_DAYS {
            tracing::warn!(cert = %self.cert.display(), days, "the TLS certificate expires soon");
        }
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

impl ResolvesServerCert for TlsFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The chain and key from PEM files, the key checked against the chain's
/// first certificate, so a renewal that replaced one file but not yet the
/// other is refused rather than served.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, provider)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))
}

/// The expiry of the chain's first certificate, the one served for this
/// node's name (Unix seconds), or 0.
fn not_after(key: &CertifiedKey) -> i64 {
    key.end_entity_cert()
        .ok()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map_or(0, |(_, cert)| cert.validity().not_after.timestamp())
}

/// A TLS acceptor from PEM files, speaking HTTP/1.1 only (ALPN): phones
/// need nothing else, and HTTP/2 would bring limits of its own to set.
/// The files' handle reloads the certificate the acceptor serves.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<(TlsAcceptor, Arc<TlsFiles>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let first = certified_key(cert, key, &provider)?;
    let files = Arc::new(TlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        not_after: AtomicI64::new(not_after(&first)),
        current: RwLock::new(Arc::new(first)),
        provider: provider.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(files.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), files))
}

/// Failed handshakes of the HTTPS listener, by [`HandshakeFailure`].
pub const HANDSHAKE_FAILURES: &str = "dialtone_tls_handshake_failures_total";

/// Why a handshake failed, as an operator acts on it. rustls speaks TLS 1.2
/// and 1.3 with AEAD suites and ECDHE only: a phone that offers nothing
/// newer than TLS 1.1, or only CBC or RSA-key-exchange suites, fails here
/// on every boot, and was seen only in the debug log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client offered no TLS 1.2 or 1.3.
    ProtocolVersion,
    /// No cipher suite, key exchange group or signature scheme in common.
    NoSharedCipher,
    /// The client refused our certificate (untrusted, expired, wrong kind).
    Certificate,
    /// Not finished within `header_timeout`.
    Timeout,
    /// The client closed or reset the connection before it finished, with
    /// no TLS error: a load balancer's TCP check, a phone that gave up.
    Closed,
    Other,
}

impl HandshakeFailure {
    /// Every one, for the test that each starts at zero (`metric_help.rs`).
    #[cfg(test)]
    pub const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::ProtocolVersion,
        HandshakeFailure::NoSharedCipher,
        HandshakeFailure::Certificate,
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::ProtocolVersion => "protocol_version",
            HandshakeFailure::NoSharedCipher => "no_shared_cipher",
            HandshakeFailure::Certificate => "certificate",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    /// The failure an accept's error stands for: tokio-rustls wraps
    /// rustls's error in the `io::Error`.
    pub fn of(error: &std::io::Error) -> HandshakeFailure {
        use rustls::{AlertDescription as Alert, Error, PeerIncompatible as Peer};
        use std::io::ErrorKind;
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
            return match error.kind() {
                ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => HandshakeFailure::Closed,
                _ => HandshakeFailure::Other,
            };
        };
        match tls {
            // Signature algorithms came with TLS 1.2: rustls refuses a
            // client without them before it reads the version it offers.
            Error::PeerIncompatible(
                Peer::Tls12NotOffered
                | Peer::Tls12NotOfferedOrEnabled
                | Peer::SupportedVersionsExtensionRequired
                | Peer::SignatureAlgorithmsExtensionRequired,
            )
            | Error::AlertReceived(Alert::ProtocolVersion) => HandshakeFailure::ProtocolVersion,
            Error::PeerIncompatible(
                Peer::NoCipherSuitesInCommon
                | Peer::NoKxGroupsInCommon
                | Peer::NoSignatureSchemesInCommon,
            )
            | Error::AlertReceived(Alert::InsufficientSecurity) => HandshakeFailure::NoSharedCipher,
            Error::AlertReceived(
                Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA,
            ) => HandshakeFailure::Certificate,
            _ => HandshakeFailure::Other,
        }
    }

    /// Counts the failure, and logs it at most once a minute, with its
    /// peer (`error`: rustls's own words, for the detail).
    pub fn record(self, peer: SocketAddr, error: Option<&std::io::Error>) {
        metrics::counter!(HANDSHAKE_FAILURES, "reason" => self.label()).increment(1);
        let reason = self.label();
        let error = error.map(ToString::to_string);
        static LOGGED: MinuteLimit = MinuteLimit::new();
        // A closed connection is a health check as often as a phone, and
        // says nothing about what phones need.
        let skipped = (self != HandshakeFailure::Closed)
            .then(|| LOGGED.allow(Instant::now()))
            .flatten();
        match skipped {
            Some(skipped) => tracing::info!(
                %peer,
                reason,
                error,
                skipped,
                "TLS handshake failed (TLS 1.2 or 1.3 with AEAD suites only; logged once a minute at most)"
            ),
            None => tracing::debug!(%peer, reason, error, "TLS handshake failed"),
        }
    }
}

/// One line a minute. `dialtone_sync::LogLimit` allows one a second: an
/// office of old phones retrying their handshake would fill the log with
/// the same line.
struct MinuteLimit(Mutex<(Option<Instant>, u64)>);

impl MinuteLimit {
    const INTERVAL: Duration = Duration::from_secs(60);

    const fn new() -> MinuteLimit {
        MinuteLimit(Mutex::new((None, 0)))
    }

    /// `Some(lines left out since the last one)` when a line may be written.
    fn allow(&self, now: Instant) -> Option<u64> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (last, skipped) = &mut *guard;
        if last.is_some_and(|last| now.saturating_duration_since(last) < Self::INTERVAL) {
            *skipped += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(skipped))
    }
}

#[cfg(test)]
mod tests {
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
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let signing_key = rcgen::KeyPair::generate().unwrap();
        let issued = rcgen::CertifiedKey {
            cert: params.self_signed(&signing_key).unwrap(),
            signing_key,
        };
        std::fs::write(cert, issued.cert.pem()).unwrap();
        std::fs::write(key, issued.signing_key.serialize_pem()).unwrap();
        issued
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
        let refused = files.reload().unwrap_err();
        assert!(refused.contains("cert.pem"), "{refused}");
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(files.reload().is_err());
        assert!(handshake(&acceptor, &renewed.cert).await);
        assert_eq!(files.not_after(), Some(1_924_992_000), "the running one's");
    }
}

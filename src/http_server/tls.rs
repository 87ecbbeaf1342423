//! The HTTPS listener's certificate, read from PEM files at start and again
//! on SIGHUP: a certificate renewed in place (certbot and the like) is
//! served from the next handshake on, without a restart that would drop
//! every phone's connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

mod dates;
use dates::Utc;
pub use dates::{DateProblem, Validity, EXPIRY_GAUGE, NOT_BEFORE_GAUGE};

/// The certificate and key files, and what was last read from them.
#[derive(Debug)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Served>,
}

/// The served certificate with its dates (`None` if they could not be
/// read), swapped together so the gauges never pair one certificate's
/// start with another's expiry.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    dates: Option<Validity>,
}

impl Served {
    fn new(key: CertifiedKey) -> Served {
        let dates = Validity::of(&key);
        Served {
            key: Arc::new(key),
            dates,
        }
    }
}

/// Within this many days of its expiry, a certificate read (by `serve`,
/// a reload, or `check-config`) is logged as a warning: a renewal that
/// stopped working shows in the log weeks before phones refuse the
/// handshake.
pub const EXPIRY_WARNING_DAYS: i64 = 21;

/// Why a reload kept the running certificate.
#[derive(Debug)]
pub enum Refused {
    /// The files do not load: unreadable, not PEM, a key that does not
    /// match the certificate.
    Unusable(String),
    /// The new certificate is expired or not valid yet, and the running
    /// one is valid.
    Dates(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unusable(why) | Refused::Dates(why) => f.write_str(why),
        }
    }
}

impl TlsFiles {
    /// Reads the files again. The running certificate stays on any error,
    /// and when the new one is outside its dates while the running one is
    /// within them: swapping would turn away every phone that checks
    /// dates. A running one outside its dates too is replaced: there is
    /// nothing valid to keep, and the files are what the operator chose.
    pub fn reload(&self) -> Result<(), Refused> {
        let fresh = Served::new(
            certified_key(&self.cert, &self.key, &self.provider).map_err(Refused::Unusable)?,
        );
        let now = dates::now();
        {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            let running_valid = current.dates.is_some_and(|d| d.problem(now).is_none());
            if let Some(problem) = fresh.dates.and_then(|d| d.problem(now)) {
                if running_valid {
                    return Err(Refused::Dates(format!(
                        "{}: kept the running certificate: the new one {problem}",
                        self.cert.display()
                    )));
                }
            }
            *current = fresh;
        }
        self.record_expiry();
        Ok(())
    }

    /// [`reload`](Self::reload) for SIGHUP, logged: a certificate kept for
    /// its dates at ERROR, as phones will refuse the renewal once the
    /// running one expires. Says whether the new certificate is served.
    pub fn reload_logged(&self) -> bool {
        match self.reload() {
            Ok(()) => {
                tracing::info!(cert = %self.cert.display(), "SIGHUP: TLS certificate reloaded");
                true
            }
            Err(Refused::Unusable(e)) => {
                tracing::warn!(error = %e, "SIGHUP: TLS certificate not reloaded; serving the running one");
                false
            }
            Err(Refused::Dates(e)) => {
                tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; serving the running one");
                false
            }
        }
    }

    /// The served certificate's dates, if they parse.
    pub fn dates(&self) -> Option<Validity> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).dates
    }

    /// When the served certificate expires (Unix seconds), if its date
    /// could be read.
    #[cfg(test)]
    pub fn not_after(&self) -> Option<i64> {
        self.dates().map(|d| d.not_after)
    }

    /// Why phones that check dates refuse the served certificate now.
    #[cfg(test)]
    pub fn date_problem(&self) -> Option<DateProblem> {
        self.dates().and_then(|d| d.problem(dates::now()))
    }

    /// The dates of the certificate in `cert`, read without its key: for
    /// `check-config` when the key is a credential systemd hands over only
    /// at the service's start.
    pub fn file_dates(cert: &Path) -> Result<Option<Validity>, String> {
        let chain = read_chain(cert)?;
        Ok(Validity::of_der(&chain[0]))
    }

    /// Sets the date gauges, and logs a certificate that is not valid
    /// yet, has expired or soon will. Called once the metrics recorder is
    /// installed, and after each reload that swapped: at the start there
    /// is nothing else to serve, so one outside its dates is served, said
    /// at ERROR.
    pub fn record_expiry(&self) {
        let Some(dates) = self.dates() else {
            // 0, not the previous certificate's dates: the alerts skip it.
            metrics::gauge!(EXPIRY_GAUGE).set(0.0);
            metrics::gauge!(NOT_BEFORE_GAUGE).set(0.0);
            tracing::warn!(cert = %self.cert.display(), "the TLS certificate's dates could not be read; expiry gauge 0");
            return;
        };
        metrics::gauge!(EXPIRY_GAUGE).set(dates.not_after as f64);
        metrics::gauge!(NOT_BEFORE_GAUGE).set(dates.not_before as f64);
        let now = dates::now();
        let days = dates.days_left(now);
        match dates.problem(now) {
            Some(DateProblem::NotYetValid(at)) => tracing::error!(
                cert = %self.cert.display(),
                "the TLS certificate is not valid until {}; phones that check dates refuse it until then",
                Utc(at)
            ),
            Some(DateProblem::Expired(at)) => tracing::error!(
                cert = %self.cert.display(),
                "the TLS certificate expired at {}; phones that check dates refuse it",
                Utc(at)
            ),
            None if days < EXPIRY_WARNING_DAYS => {
                tracing::warn!(cert = %self.cert.display(), days, "the TLS certificate expires soon")
            }
            None => {}
        }
    }
}

impl ResolvesServerCert for TlsFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .key
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
    use rustls::pki_types::PrivateKeyDer;
    let chain = read_chain(cert)?;
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, provider)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))
}

/// The certificates of a PEM file, at least one.
fn read_chain(cert: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    Ok(chain)
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
        current: RwLock::new(Served::new(first)),
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
mod tests;

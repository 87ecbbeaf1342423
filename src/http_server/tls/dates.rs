//! The served certificate's validity dates, as phones that check them see
//! them: one not valid yet (made on a machine whose clock ran ahead, or
//! issued for a later start) is refused exactly as an expired one is.

use std::fmt;

use rustls::sign::CertifiedKey;

/// The gauge an expiry alert compares with `time()`.
pub const EXPIRY_GAUGE: &str = "dialtone_tls_certificate_expiry_timestamp_seconds";

/// The gauge of when the served certificate becomes valid: past `time()`
/// while it is not valid yet.
pub const NOT_BEFORE_GAUGE: &str = "dialtone_tls_certificate_not_before_timestamp_seconds";

/// How far ahead of this node's clock a certificate's start may be and
/// still count as valid: a CA that does not backdate, on a clock a little
/// ahead of ours, would otherwise have its fresh renewal kept out until
/// the next SIGHUP, and the renewal tool, seeing a new certificate on
/// disk, would not renew again before the running one expired.
const CLOCK_SKEW_S: i64 = 300;

/// The chain's first certificate's notBefore and notAfter (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a phone that checks dates refuses the certificate now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateProblem {
    /// Not valid until then (Unix seconds).
    NotYetValid(i64),
    /// Expired then (Unix seconds).
    Expired(i64),
}

impl Validity {
    /// The dates of the certificate served for this node's name, if they
    /// parse.
    pub fn of(key: &CertifiedKey) -> Option<Validity> {
        Validity::of_der(key.end_entity_cert().ok()?)
    }

    /// The dates of one DER certificate, if they parse.
    pub fn of_der(der: &[u8]) -> Option<Validity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = cert.validity();
        Some(Validity {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// Whole days from `now` (Unix seconds) to the expiry.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// What is wrong with the dates at `now` (Unix seconds), if anything.
    pub fn problem(&self, now: i64) -> Option<DateProblem> {
        if self.not_before > now.saturating_add(CLOCK_SKEW_S) {
            Some(DateProblem::NotYetValid(self.not_before))
        } else if self.not_after <= now {
            Some(DateProblem::Expired(self.not_after))
        } else {
            None
        }
    }
}

impl fmt::Display for DateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DateProblem::NotYetValid(at) => write!(f, "is not valid until {}", Utc(at)),
            DateProblem::Expired(at) => write!(f, "expired at {}", Utc(at)),
        }
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`, as `openssl x509 -dates`
/// would show the date in the operator's own terms; any year an X.509
/// date can hold, before 1970 included.
pub struct Utc(pub i64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match x509_parser::time::ASN1Time::from_timestamp(self.0) {
            Ok(time) => {
                let t = time.to_datetime();
                write!(
                    f,
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                    t.year(),
                    t.month() as u8,
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            }
            // Only a date no certificate can hold; said as read.
            Err(_) => write!(f, "{} (Unix seconds)", self.0),
        }
    }
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    dialtone_sync::now_millis() / 1000
}

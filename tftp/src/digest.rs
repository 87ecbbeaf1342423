//! HTTP Digest authentication (RFC 7616) for phones that have per-device
//! credentials. Nonces are issued by the server and carry their own time
//! and an HMAC, so any node can check them and they expire; the highest
//! nonce count seen per nonce is kept (bounded), so a replayed request is
//! refused. Both SHA-256 and MD5 are offered, since many phones know only
//! MD5. Basic is never offered on plain HTTP.

use std::net::IpAddr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use moka::sync::Cache;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const REALM: &str = "dialtone";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn hash(self, input: &str) -> String {
        match self {
            Algorithm::Md5 => hex(md5::Md5::digest(input.as_bytes())),
            Algorithm::Sha256 => hex(Sha256::digest(input.as_bytes())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }
}

use hex::encode as hex;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// No or malformed credentials, wrong user or password.
    Denied,
    /// Right password on an expired nonce: the client should retry with a
    /// new one (`stale=true`), which is not a miss.
    Stale,
    /// A nonce count seen before: a replay.
    Replay,
}

pub struct DigestAuth {
    key: [u8; 32],
    lifetime: Duration,
    /// Highest nonce count seen per nonce, for as long as nonces live.
    seen: Cache<String, u64>,
}

impl DigestAuth {
    /// `key` signs nonces; nodes sharing it accept each other's nonces.
    pub fn new(key: [u8; 32], lifetime: Duration, max_nonces: u64) -> DigestAuth {
        DigestAuth {
            key,
            lifetime,
            seen: Cache::builder()
                .max_capacity(max_nonces)
                .time_to_live(lifetime * 2)
                .build(),
        }
    }

    /// Signs a nonce's payload together with the client's source (its
    /// address, or its /64), which the nonce does not carry: an answer is
    /// good only from where the challenge went. Replayed from elsewhere, on
    /// this node or another, its nonce is not ours.
    fn sign(&self, payload: &[u8], source: Option<IpAddr>) -> [u8; 16] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload);
        match source.map(crate::guard::source_key) {
            Some(IpAddr::V4(v4)) => mac.update(&v4.octets()),
            Some(IpAddr::V6(v6)) => mac.update(&v6.octets()),
            None => {}
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A fresh nonce for a client at `source`: issue time, 8 random bytes,
    /// and their signature.
    pub fn nonce(&self, source: Option<IpAddr>) -> String {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&(dialtone_sync::now_millis() as u64).to_be_bytes());
        rand::thread_rng().fill_bytes(&mut payload[8..]);
        let mut blob = payload.to_vec();
        blob.extend_from_slice(&self.sign(&payload, source));
        B64.encode(blob)
    }

    /// Whether `nonce` is ours for a client at `source`, and whether it is
    /// still fresh.
    fn check_nonce(&self, nonce: &str, source: Option<IpAddr>) -> Option<bool> {
        let blob = B64.decode(nonce).ok()?;
        if blob.len() != 32 {
            return None;
        }
        let (payload, signature) = blob.split_at(16);
        let expected = self.sign(payload, source);
        if !constant_time_eq(signature, &expected) {
            return None;
        }
        let issued = u64::from_be_bytes(payload[..8].try_into().ok()?) as i64;
        let age = dialtone_sync::now_millis() - issued;
        Some((0..self.lifetime.as_millis() as i64).contains(&age))
    }

    /// `WWW-Authenticate` values to send with a 401 to a client at
    /// `source`, strongest first.
    pub fn challenges(&self, stale: bool, source: Option<IpAddr>) -> Vec<String> {
        let nonce = self.nonce(source);
        [Algorithm::Sha256, Algorithm::Md5]
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{REALM}\", qop=\"auth\", algorithm={}, nonce=\"{nonce}\"{}",
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Checks an `Authorization` header from a client at `source` against
    /// the phone's credentials.
    pub fn verify(
        &self,
        source: Option<IpAddr>,
        header: Option<&str>,
        method: &str,
        uri: &str,
        user: &str,
        password: &str,
    ) -> Verdict {
        let Some(fields) = header
            .and_then(|h| h.strip_prefix("Digest "))
            .map(parse_fields)
        else {
            return Verdict::Denied;
        };
        let get = |k: &str| {
            fields
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let algorithm = match get("algorithm").unwrap_or("MD5") {
            a if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            a if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            _ => return Verdict::Denied,
        };
        let (Some(username), Some(nonce), Some(their_uri), Some(response)) =
            (get("username"), get("nonce"), get("uri"), get("response"))
        else {
            return Verdict::Denied;
        };
        if get("realm") != Some(REALM) || get("qop") != Some("auth") || their_uri != uri {
            return Verdict::Denied;
        }
        let (Some(nc_text), Some(cnonce)) = (get("nc"), get("cnonce")) else {
            return Verdict::Denied;
        };
        let Ok(nc) = u64::from_str_radix(nc_text, 16) else {
            return Verdict::Denied;
        };
        let Some(fresh) = self.check_nonce(nonce, source) else {
            return Verdict::Denied;
        };
        let ha1 = algorithm.hash(&format!("{username}:{REALM}:{password}"));
        let ha2 = algorithm.hash(&format!("{method}:{their_uri}"));
        let expected = algorithm.hash(&format!("{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}"));
        let right = constant_time_eq(username.as_bytes(), user.as_bytes())
            & constant_time_eq(
                response.to_ascii_lowercase().as_bytes(),
                expected.as_bytes(),
            );
        if !right {
            return Verdict::Denied;
        }
        if !fresh {
            return Verdict::Stale;
        }
        // Counts must rise: the same (nonce, nc) twice is a replay.
        let mut replay = false;
        self.seen
            .entry(nonce.to_string())
            .and_compute_with(|previous| match previous.map(|e| e.into_value()) {
                Some(last) if nc <= last => {
                    replay = true;
                    moka::ops::compute::Op::Nop
                }
                _ => moka::ops::compute::Op::Put(nc),
            });
        if replay {
            Verdict::Replay
        } else {
            Verdict::Ok
        }
    }
}

/// Splits `a="b", c=d` into pairs, honouring quotes.
fn parse_fields(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => break,
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The algorithm and nonce of one `WWW-Authenticate: Digest …` value, as a
/// client reads them (PHLEM); `None` for other schemes and algorithms.
pub fn parse_challenge(value: &str) -> Option<(Algorithm, String)> {
    let fields = parse_fields(value.strip_prefix("Digest ")?);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let algorithm = match get("algorithm").as_deref().unwrap_or("MD5") {
        a if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
        a if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
        _ => return None,
    };
    Some((algorithm, get("nonce")?))
}

/// Builds the `Authorization` header a client would send (tests, PHLEM).
pub fn client_response(
    challenge_nonce: &str,
    algorithm: Algorithm,
    method: &str,
    uri: &str,
    (user, password): (&str, &str),
    nc: u64,
    cnonce: &str,
) -> String {
    let nc_text = format!("{nc:08x}");
    let ha1 = algorithm.hash(&format!("{user}:{REALM}:{password}"));
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    let response = algorithm.hash(&format!(
        "{ha1}:{challenge_nonce}:{nc_text}:{cnonce}:auth:{ha2}"
    ));
    format!(
        "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{challenge_nonce}\", uri=\"{uri}\", \
         algorithm={}, qop=auth, nc={nc_text}, cnonce=\"{cnonce}\", response=\"{response}\"",
        algorithm.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> DigestAuth {
        DigestAuth::new([7; 32], Duration::from_secs(300), 1000)
    }

    /// An answer counts only from the source its challenge went to (an
    /// IPv4 address, or an IPv6 /64): a request captured and replayed from
    /// elsewhere, on this node or another sharing the key, is refused.
    #[test]
    fn a_nonce_is_good_only_from_where_it_was_sent() {
        let a = auth();
        let at = |ip: &str| Some(ip.parse::<IpAddr>().unwrap());
        for (sent_to, answered_from, verdict) in [
            ("192.0.2.10", "192.0.2.10", Verdict::Ok),
            ("192.0.2.10", "192.0.2.11", Verdict::Denied),
            ("2001:db8::1", "2001:db8::2", Verdict::Ok),
            ("2001:db8::1", "2001:db8:0:1::1", Verdict::Denied),
        ] {
            let nonce = a.nonce(at(sent_to));
            let h = client_response(
                &nonce,
                Algorithm::Sha256,
                "GET",
                "/x.cfg",
                ("phone1", "s3cret"),
                1,
                "c",
            );
            let other = DigestAuth::new([7; 32], Duration::from_secs(300), 1000);
            assert_eq!(
                other.verify(
                    at(answered_from),
                    Some(&h),
                    "GET",
                    "/x.cfg",
                    "phone1",
                    "s3cret"
                ),
                verdict,
                "{sent_to} -> {answered_from}"
            );
        }
    }

    #[test]
    fn clients_read_our_challenges() {
        let a = auth();
        let parsed: Vec<_> = a
            .challenges(false, None)
            .iter()
            .filter_map(|c| parse_challenge(c))
            .collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].0, Algorithm::Md5);
        assert!(a.check_nonce(&parsed[1].1, None).is_some());
        assert_eq!(parse_challenge("Basic realm=\"x\""), None);
        assert_eq!(
            parse_challenge("Digest realm=\"x\", algorithm=SHA-512-256, nonce=\"n\""),
            None
        );
    }

    #[test]
    fn right_credentials_pass_once_per_count() {
        let a = auth();
        let nonce = a.nonce(None);
        for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
            let nonce = if algorithm == Algorithm::Md5 {
                nonce.clone()
            } else {
                a.nonce(None)
            };
            let h = client_response(
                &nonce,
                algorithm,
                "GET",
                "/0015654aa937.cfg",
                ("phone1", "s3cret"),
                1,
                "abc",
            );
            assert_eq!(
                a.verify(
                    None,
                    Some(&h),
                    "GET",
                    "/0015654aa937.cfg",
                    "phone1",
                    "s3cret"
                ),
                Verdict::Ok
            );
            assert_eq!(
                a.verify(
                    None,
                    Some(&h),
                    "GET",
                    "/0015654aa937.cfg",
                    "phone1",
                    "s3cret"
                ),
                Verdict::Replay
            );
            let h2 = client_response(
                &nonce,
                algorithm,
                "GET",
                "/0015654aa937.cfg",
                ("phone1", "s3cret"),
                2,
                "abd",
            );
            assert_eq!(
                a.verify(
                    None,
                    Some(&h2),
                    "GET",
                    "/0015654aa937.cfg",
                    "phone1",
                    "s3cret"
                ),
                Verdict::Ok
            );
        }
    }

    #[test]
    fn wrong_password_user_uri_or_forged_nonce_fail() {
        let a = auth();
        let nonce = a.nonce(None);
        let h = client_response(
            &nonce,
            Algorithm::Md5,
            "GET",
            "/x.cfg",
            ("phone1", "wrong"),
            1,
            "c",
        );
        assert_eq!(
            a.verify(None, Some(&h), "GET", "/x.cfg", "phone1", "s3cret"),
            Verdict::Denied
        );
        let h = client_response(
            &nonce,
            Algorithm::Md5,
            "GET",
            "/x.cfg",
            ("other", "s3cret"),
            1,
            "c",
        );
        assert_eq!(
            a.verify(None, Some(&h), "GET", "/x.cfg", "phone1", "s3cret"),
            Verdict::Denied
        );
        let h = client_response(
            &nonce,
            Algorithm::Md5,
            "GET",
            "/y.cfg",
            ("phone1", "s3cret"),
            1,
            "c",
        );
        assert_eq!(
            a.verify(None, Some(&h), "GET", "/x.cfg", "phone1", "s3cret"),
            Verdict::Denied
        );
        let forged = B64.encode([0u8; 32]);
        let h = client_response(
            &forged,
            Algorithm::Md5,
            "GET",
            "/x.cfg",
            ("phone1", "s3cret"),
            1,
            "c",
        );
        assert_eq!(
            a.verify(None, Some(&h), "GET", "/x.cfg", "phone1", "s3cret"),
            Verdict::Denied
        );
        assert_eq!(
            a.verify(
                None,
                Some("Basic cGhvbmUxOnMzY3JldA=="),
                "GET",
                "/x.cfg",
                "phone1",
                "s3cret"
            ),
            Verdict::Denied
        );
        assert_eq!(
            a.verify(None, None, "GET", "/x.cfg", "phone1", "s3cret"),
            Verdict::Denied
        );
    }

    #[test]
    fn expired_nonces_are_stale() {
        let a = DigestAuth::new([7; 32], Duration::from_millis(50), 1000);
        let nonce = a.nonce(None);
        std::thread::sleep(Duration::from_millis(120));
        let h = client_response(
            &nonce,
            Algorithm::Sha256,
            "GET",
            "/x.cfg",
            ("phone1", "s3cret"),
            1,
            "c",
        );
        assert_eq!(
            a.verify(None, Some(&h), "GET", "/x.cfg", "phone1", "s3cret"),
            Verdict::Stale
        );
    }
}

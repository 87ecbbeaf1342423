//! HTTP Digest authentication (RFC 7616) for phones that have per-device
//! credentials. Nonces are issued by the server and carry their own time
//! and an HMAC, so any node can check them and they expire; the highest
//! nonce count seen per nonce is kept (bounded), so a replayed request is
//! refused. A nonce whose count the bound made us forget is answered stale,
//! never taken as new. Both SHA-256 and MD5 are offered, since many phones
//! know only MD5. Basic is never offered on plain HTTP.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const REALM: &str = "dialtone";

/// How far another node's clock may run ahead of ours. Its nonces then look
/// issued in the future here; refused as stale, a phone behind a load
/// balancer that spreads its requests would loop on 401s. The same
/// allowance ranks rows stamped further ahead last (`dialtone_sync::skew`).
pub use dialtone_sync::MAX_CLOCK_SKEW;

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
    /// A nonce count seen before, with the right password: a replay,
    /// refused with a fresh nonce and no miss (`device_auth.rs` says why).
    Replay,
}

/// A nonce decoded: issue time (big-endian, so blobs sort oldest first),
/// random bytes, signature.
type Blob = [u8; 32];

/// Below every nonce issued since 1970.
const NO_BLOB: Blob = [0; 32];

fn issued_at(blob: &Blob) -> i64 {
    u64::from_be_bytes(blob[..8].try_into().expect("8 bytes")) as i64
}

/// Above every nonce issued at `millis` or before, below every later one.
fn last_blob_issued_at(millis: i64) -> Blob {
    let mut blob = [0xff; 32];
    blob[..8].copy_from_slice(&(millis as u64).to_be_bytes());
    blob
}

/// Highest nonce count per nonce. Not a moka cache: moka evicts later, in
/// its pending tasks, and may refuse a new key when full, so a count could
/// be gone with nothing yet saying so, and a replay of it would pass as a
/// first use. Here a record and the floor move under one lock.
struct Seen {
    counts: BTreeMap<Blob, u64>,
    /// The last nonce whose record was dropped. Records go oldest first, so
    /// a nonce up to it that `counts` lacks may have been used. Ordered by
    /// whole nonce rather than by issue time, so that a drop does not
    /// refuse the rest of its millisecond.
    floor: Blob,
    max: usize,
}

impl Seen {
    /// Counts `nc` against the nonce `blob`, still fresh at `now`.
    fn count(&mut self, blob: Blob, nc: u64, now: i64, lifetime: i64) -> Verdict {
        // A floor issued later than any clock may run ahead of ours means
        // ours went back: every new nonce would sort under it and be stale
        // until the clock caught up. Lowered to now, the floor still refuses
        // every forgotten nonce issued before this moment (a full table's
        // drops, one pruned because of a forward jump), for one new challenge
        // to phones holding unrecorded ones. It reopens forgotten nonces
        // issued after now: those pruned while our clock ran ahead turn fresh
        // again as it catches up, and so do a full table's drops from a node
        // up to MAX_CLOCK_SKEW ahead. Telling them from new nonces would need
        // a record of every pruned one, more than a bounded table keeps; the
        // old floor would refuse every phone until the clock caught up.
        if issued_at(&self.floor) > now + MAX_CLOCK_SKEW.as_millis() as i64 {
            self.floor = last_blob_issued_at(now - 1);
        }
        // Expired nonces are stale before they get here; their records go
        // under the floor all the same, so a clock stepped back cannot
        // bring one issued before its new reading back as unused.
        while let Some(entry) = self.counts.first_entry() {
            if now - issued_at(entry.key()) < lifetime {
                break;
            }
            self.floor = entry.remove_entry().0;
        }
        match self.counts.get_mut(&blob) {
            // Counts must rise: the same (nonce, nc) twice is a replay.
            Some(last) if nc <= *last => Verdict::Replay,
            Some(last) => {
                *last = nc;
                Verdict::Ok
            }
            // Maybe forgotten, maybe never used: a replay must not pass, and
            // a new challenge costs a phone one round trip.
            None if blob <= self.floor => Verdict::Stale,
            None => {
                self.counts.insert(blob, nc);
                // The oldest goes: it is the nearest to expiring, and the
                // floor then rises only as far as it must. It may be this
                // very nonce, whose first use still stands.
                if self.counts.len() > self.max {
                    if let Some((dropped, _)) = self.counts.pop_first() {
                        self.floor = dropped;
                    }
                }
                Verdict::Ok
            }
        }
    }
}

pub struct DigestAuth {
    key: [u8; 32],
    lifetime: Duration,
    /// Highest nonce count seen per nonce, for as long as nonces live.
    seen: Mutex<Seen>,
}

impl DigestAuth {
    /// `key` signs nonces; nodes sharing it accept each other's nonces.
    /// At most `max_nonces` counts are kept.
    pub fn new(key: [u8; 32], lifetime: Duration, max_nonces: u64) -> DigestAuth {
        DigestAuth {
            key,
            lifetime,
            seen: Mutex::new(Seen {
                counts: BTreeMap::new(),
                floor: NO_BLOB,
                max: usize::try_from(max_nonces).unwrap_or(usize::MAX),
            }),
        }
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signs a nonce's payload together with the client's source (its
    /// address, or its /64), which the nonce does not carry: an answer is
    /// good only from where the challenge went. Replayed from elsewhere, on
    /// this node or another, its nonce is not ours.
    fn sign(&self, payload: &[u8], source: Option<IpAddr>) -> [u8; 16] {
        let full = self.signer(payload, source).finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The MAC of [`sign`](Self::sign), not yet finished: checking a
    /// signature through it compares in constant time.
    fn signer(&self, payload: &[u8], source: Option<IpAddr>) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload);
        match source.map(crate::guard::source_key) {
            Some(IpAddr::V4(v4)) => mac.update(&v4.octets()),
            Some(IpAddr::V6(v6)) => mac.update(&v6.octets()),
            None => {}
        }
        mac
    }

    /// A fresh nonce for a client at `source`: issue time, 8 random bytes,
    /// and their signature.
    pub fn nonce(&self, source: Option<IpAddr>) -> String {
        self.nonce_at(dialtone_sync::now_millis(), source)
    }

    fn nonce_at(&self, now: i64, source: Option<IpAddr>) -> String {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&(now as u64).to_be_bytes());
        rand::thread_rng().fill_bytes(&mut payload[8..]);
        let mut blob = payload.to_vec();
        blob.extend_from_slice(&self.sign(&payload, source));
        B64.encode(blob)
    }

    /// `nonce` decoded if it is ours for a client at `source`, and whether
    /// it is still fresh at `now`.
    fn check_nonce(&self, nonce: &str, source: Option<IpAddr>, now: i64) -> Option<(Blob, bool)> {
        let blob: Blob = B64.decode(nonce).ok()?.try_into().ok()?;
        let (payload, signature) = blob.split_at(16);
        self.signer(payload, source)
            .verify_truncated_left(signature)
            .ok()?;
        let age = now - issued_at(&blob);
        let skew = MAX_CLOCK_SKEW.as_millis() as i64;
        let fresh = (-skew..self.lifetime.as_millis() as i64).contains(&age);
        Some((blob, fresh))
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
    /// the phone's credentials. `targets`: the request targets the header
    /// may have signed, each naming the file served.
    pub fn verify(
        &self,
        source: Option<IpAddr>,
        header: Option<&str>,
        method: &str,
        targets: &[&str],
        user: &str,
        password: &str,
    ) -> Verdict {
        let now = dialtone_sync::now_millis();
        self.verify_at(now, source, header, method, targets, user, password)
    }

    #[allow(clippy::too_many_arguments)]
    fn verify_at(
        &self,
        now: i64,
        source: Option<IpAddr>,
        header: Option<&str>,
        method: &str,
        targets: &[&str],
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
        if get("realm") != Some(REALM)
            || get("qop") != Some("auth")
            || !targets.contains(&their_uri)
        {
            return Verdict::Denied;
        }
        let (Some(nc_text), Some(cnonce)) = (get("nc"), get("cnonce")) else {
            return Verdict::Denied;
        };
        let Ok(nc) = u64::from_str_radix(nc_text, 16) else {
            return Verdict::Denied;
        };
        let Some((blob, fresh)) = self.check_nonce(nonce, source, now) else {
            return Verdict::Denied;
        };
        let ha1 = algorithm.hash(&format!("{username}:{REALM}:{password}"));
        let ha2 = algorithm.hash(&format!("{method}:{their_uri}"));
        let expected = algorithm.hash(&format!("{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}"));
        // `&`, not `&&`: a wrong user name takes as long as a wrong answer.
        let right = secrets_match(username.as_bytes(), user.as_bytes())
            & secrets_match(
                response.to_ascii_lowercase().as_bytes(),
                expected.as_bytes(),
            );
        if !right {
            return Verdict::Denied;
        }
        if !fresh {
            return Verdict::Stale;
        }
        self.seen()
            .count(blob, nc, now, self.lifetime.as_millis() as i64)
    }
}

/// Splits `a="b", c=d` into pairs, honouring quotes and, inside them,
/// backslash escapes.
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
            match unquote(quoted) {
                Some(unquoted) => unquoted,
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

/// The value of a quoted-string whose opening quote is already read, and
/// the text after its closing quote; `None` when it never closes. A
/// quoted-pair (`\x`, RFC 7230 3.2.6) stands for its second character: a
/// client must send a user name's `"` or `\` so, and the name it signs is
/// the one without the backslashes.
fn unquote(quoted: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &quoted[at + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

/// Whether a secret a client sent is the one expected, in a time that says
/// neither how long the secret is nor how much of it a guess got right.
/// Both sides are hashed first, so a guess of another length costs as much
/// as one of the right length; the digests, of one length, are compared
/// by `hmac`'s constant-time check, which the optimizer cannot turn into
/// an early exit as it may a hand-written loop. (Hashing takes one more
/// block per 64 bytes, so the expected side's length shows only to that
/// grain.)
pub(crate) fn secrets_match(sent: &[u8], expected: &[u8]) -> bool {
    let digest_of = |bytes: &[u8]| {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"").expect("any key length");
        mac.update(bytes);
        mac
    };
    let expected = digest_of(expected).finalize().into_bytes();
    digest_of(sent).verify_slice(&expected).is_ok()
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
    let quoted_user = user.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "Digest username=\"{quoted_user}\", realm=\"{REALM}\", nonce=\"{challenge_nonce}\", uri=\"{uri}\", \
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
                    &["/x.cfg"],
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
        assert!(a
            .check_nonce(&parsed[1].1, None, dialtone_sync::now_millis())
            .is_some());
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
                    &["/0015654aa937.cfg"],
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
                    &["/0015654aa937.cfg"],
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
                    &["/0015654aa937.cfg"],
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
            a.verify(None, Some(&h), "GET", &["/x.cfg"], "phone1", "s3cret"),
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
            a.verify(None, Some(&h), "GET", &["/x.cfg"], "phone1", "s3cret"),
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
            a.verify(None, Some(&h), "GET", &["/x.cfg"], "phone1", "s3cret"),
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
            a.verify(None, Some(&h), "GET", &["/x.cfg"], "phone1", "s3cret"),
            Verdict::Denied
        );
        assert_eq!(
            a.verify(
                None,
                Some("Basic cGhvbmUxOnMzY3JldA=="),
                "GET",
                &["/x.cfg"],
                "phone1",
                "s3cret"
            ),
            Verdict::Denied
        );
        assert_eq!(
            a.verify(None, None, "GET", &["/x.cfg"], "phone1", "s3cret"),
            Verdict::Denied
        );
    }

    /// Timing cannot be tested here; what the constant-time comparison must
    /// keep is the verdicts: only the exact password passes, whatever the
    /// length or shared prefix of a wrong one.
    #[test]
    fn only_the_exact_password_passes_whatever_its_length() {
        let a = auth();
        for (password, verdict) in [
            ("s3cret", Verdict::Ok),
            ("s3creT", Verdict::Denied),
            ("s3cre", Verdict::Denied),
            ("s3cret!", Verdict::Denied),
            ("", Verdict::Denied),
        ] {
            let h = client_response(
                &a.nonce(None),
                Algorithm::Sha256,
                "GET",
                "/x.cfg",
                ("phone1", password),
                1,
                "c",
            );
            let got = a.verify(None, Some(&h), "GET", &["/x.cfg"], "phone1", "s3cret");
            assert_eq!(got, verdict, "{password:?}");
        }
        assert!(secrets_match(b"s3cret", b"s3cret"));
        for wrong in [&b"s3creT"[..], b"s3cre", b"s3cret\0", b""] {
            assert!(!secrets_match(wrong, b"s3cret"), "{wrong:?}");
        }
        // A nonce's signature cut short, or one byte off, is not ours.
        let blob = B64.decode(a.nonce(None)).unwrap();
        let now = dialtone_sync::now_millis();
        assert!(a.check_nonce(&B64.encode(&blob), None, now).is_some());
        assert!(a.check_nonce(&B64.encode(&blob[..31]), None, now).is_none());
        let mut flipped = blob.clone();
        flipped[31] ^= 1;
        assert!(a.check_nonce(&B64.encode(&flipped), None, now).is_none());
    }

    fn answer(nonce: &str, nc: u64) -> String {
        client_response(
            nonce,
            Algorithm::Sha256,
            "GET",
            "/x.cfg",
            ("phone1", "s3cret"),
            nc,
            "c",
        )
    }

    fn verify_at(a: &DigestAuth, now: i64, header: &str) -> Verdict {
        a.verify_at(
            now,
            None,
            Some(header),
            "GET",
            &["/x.cfg"],
            "phone1",
            "s3cret",
        )
    }

    /// A tenant can fill the table with its own phone's requests; a count
    /// pushed out must not let a captured request through again.
    #[test]
    fn a_full_table_never_lets_a_replay_through() {
        let a = DigestAuth::new([7; 32], Duration::from_secs(300), 8);
        let t0 = dialtone_sync::now_millis();
        let requests: Vec<_> = (0..50)
            .map(|i| answer(&a.nonce_at(t0 + i, None), 1))
            .collect();
        for (i, request) in requests.iter().enumerate() {
            assert_eq!(
                verify_at(&a, t0 + 50, request),
                Verdict::Ok,
                "first use {i}"
            );
        }
        assert_eq!(a.seen().counts.len(), 8);
        for (i, request) in requests.iter().enumerate() {
            let expected = if i < 42 {
                Verdict::Stale
            } else {
                Verdict::Replay
            };
            assert_eq!(verify_at(&a, t0 + 60, request), expected, "replay {i}");
        }

        // Expired records go too, without reopening their nonces to a
        // clock that steps back.
        let later = t0 + 49 + 300_000;
        assert_eq!(verify_at(&a, later, &requests[49]), Verdict::Stale);
        let fresh = answer(&a.nonce_at(later, None), 1);
        assert_eq!(verify_at(&a, later, &fresh), Verdict::Ok);
        assert_eq!(a.seen().counts.len(), 1);
        assert_eq!(verify_at(&a, t0 + 60, &requests[49]), Verdict::Stale);
    }

    /// Under a flood a phone loses its count and gets a new challenge, which
    /// it follows; its new nonce works as any other.
    #[test]
    fn a_phone_keeps_authenticating_while_the_table_is_flooded() {
        let a = DigestAuth::new([7; 32], Duration::from_secs(300), 8);
        let t0 = dialtone_sync::now_millis();
        let phone = a.nonce_at(t0, None);
        assert_eq!(verify_at(&a, t0, &answer(&phone, 1)), Verdict::Ok);
        for i in 1..=8 {
            let flood = a.nonce_at(t0 + i, None);
            assert_eq!(verify_at(&a, t0 + i, &answer(&flood, 1)), Verdict::Ok);
        }
        assert_eq!(verify_at(&a, t0 + 9, &answer(&phone, 2)), Verdict::Stale);
        let renewed = a.nonce_at(t0 + 10, None);
        for nc in 1..=3 {
            assert_eq!(verify_at(&a, t0 + 10, &answer(&renewed, nc)), Verdict::Ok);
        }
    }

    /// A node that ran an hour ahead and was stepped back must take new
    /// nonces at once, and still refuse what it may have seen: a nonce it
    /// still holds, or one it forgot that was issued before the step.
    #[test]
    fn a_clock_stepped_back_neither_locks_phones_out_nor_reopens_replays() {
        let a = auth();
        let t0 = dialtone_sync::now_millis();
        let hour = 3_600_000;
        let before_jump = a.nonce_at(t0, None);
        assert_eq!(verify_at(&a, t0, &answer(&before_jump, 1)), Verdict::Ok);

        let ahead = t0 + hour;
        let pruned = a.nonce_at(ahead, None);
        assert_eq!(verify_at(&a, ahead, &answer(&pruned, 1)), Verdict::Ok);
        let held = a.nonce_at(ahead + 400_000, None);
        assert_eq!(
            verify_at(&a, ahead + 400_000, &answer(&held, 1)),
            Verdict::Ok
        );
        assert_eq!(a.seen().counts.len(), 1, "older records pruned");

        let back = t0 + 60_000;
        let fresh = a.nonce_at(back, None);
        assert_eq!(verify_at(&a, back, &answer(&fresh, 1)), Verdict::Ok);
        assert_eq!(verify_at(&a, back, &answer(&fresh, 1)), Verdict::Replay);
        assert_eq!(verify_at(&a, back, &answer(&fresh, 2)), Verdict::Ok);
        assert_eq!(
            verify_at(&a, back, &answer(&before_jump, 1)),
            Verdict::Stale,
            "pruned by the jump, still fresh: must not pass as unused"
        );
        let caught_up = ahead + 400_000;
        assert_eq!(verify_at(&a, caught_up, &answer(&held, 1)), Verdict::Replay);
    }

    /// Behind a load balancer, a nonce may come from a node whose clock
    /// runs a little ahead.
    #[test]
    fn nonces_from_a_clock_somewhat_ahead_are_fresh() {
        let a = auth();
        let now = dialtone_sync::now_millis();
        let skew = MAX_CLOCK_SKEW.as_millis() as i64;
        let lifetime = 300_000;
        for (issued, verdict) in [
            (now + skew, Verdict::Ok),
            (now + 1, Verdict::Ok),
            (now - lifetime + 1, Verdict::Ok),
            (now + skew + 1, Verdict::Stale),
            (now - lifetime, Verdict::Stale),
        ] {
            let nonce = a.nonce_at(issued, None);
            assert_eq!(
                verify_at(&a, now, &answer(&nonce, 1)),
                verdict,
                "issued {} ms from now",
                issued - now
            );
        }
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
            a.verify(None, Some(&h), "GET", &["/x.cfg"], "phone1", "s3cret"),
            Verdict::Stale
        );
    }
}

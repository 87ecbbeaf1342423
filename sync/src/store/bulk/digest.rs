//! Keyed digests of imported phones, so that a re-import reads what it
//! needs to tell "the same as last time" and no more.
//!
//! An import that compared a stored phone column by column writes its MAC
//! and a digest of the phone with its lines as the run gave them (table
//! `phone_digests`). Any later write to the phone or its lines makes the
//! database forget that digest (the migrations' triggers). So a stored
//! digest equal to the run's means the stored rows are the run's: the next
//! import reads the digests, then every column of only the phones without
//! the run's digest (by id, or by MAC for those without one).
//!
//! A phone an import inserts gets its digest from the next import that
//! finds it stored: a first import is the server's pace (BENCHMARKS.md,
//! round 9), and a million digests cost the server ~0.7 s more there.
//!
//! The digest is an HMAC-SHA-256 under a key derived from the secret key,
//! truncated to 128 bits: it covers passwords, and a plain hash of a
//! password is a dictionary attack away from it. Every field is framed
//! (present or not, then its length), so no two runs digest alike unless
//! they are alike.

use hmac::Mac as _;

use crate::crypto::{DigestKey, SecretKey};
use crate::model::Id;
use crate::store::PhoneBatch;

/// 128 bits, as two columns a backend stores without a bytea's encoding.
pub(crate) type Digest = [i64; 2];

/// What the first read of a re-import gives per stored digest.
pub(crate) struct StoredDigest<'a> {
    pub id: Id,
    pub mac: &'a [u8],
    pub digest: Digest,
}

/// Every stored digest, in [`StoredDigest`]'s order.
pub(crate) const DIGEST_SELECT: &str = "SELECT id, mac, high, low FROM phone_digests";

pub(crate) const DIGEST_TABLE: &str = "phone_digests";
pub(crate) const DIGEST_COLUMNS: &[&str] = &["id", "mac", "high", "low"];

/// What the digest read found of a phone of the run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Digested {
    /// No digest: a new phone, or one whose digest a write forgot. Looked
    /// up by MAC, and given a digest if it is stored.
    None,
    /// The run's digest: the stored phone and lines are the run's.
    Same,
    /// Another digest: read by id, and given the run's.
    Differs,
}

/// Phones without the run's digest are read by id and MAC while they are
/// at most this share of the run (1 in 8); past it, both tables are read
/// whole. A read by id probes an index per phone, a whole read streams: on
/// a million phones the read by id of 10,000 took ~0.1 s, the whole read
/// ~1 s.
pub(crate) fn by_id_pays(unsettled: usize, run: usize) -> bool {
    8 * unsettled <= run
}

/// Each phone's digest, on up to four threads: ~0.3 µs a phone of the
/// bench's rows on one core, a third of a second for a million.
pub(crate) fn run_digests(
    key: &SecretKey,
    phones: &PhoneBatch,
    tenant_ids: &[Option<Id>],
) -> Vec<Digest> {
    let key = key.digest_key();
    let mut out = vec![[0; 2]; phones.len()];
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4);
    let chunk = phones.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (k, part) in out.chunks_mut(chunk).enumerate() {
            let key = &key;
            scope.spawn(move || {
                for (at, digest) in part.iter_mut().enumerate() {
                    let i = k * chunk + at;
                    let tenant_id = tenant_ids[phones.tenant_index(i)].unwrap_or_default();
                    *digest = phone_digest(key, phones, i, tenant_id);
                }
            });
        }
    });
    out
}

/// Phone `i` with its lines, as the comparison would compare them: the
/// tenant by stored id, text as the run holds it (JSON already canonical),
/// secrets in the clear (the key keeps them so).
pub(crate) fn phone_digest(
    key: &DigestKey,
    phones: &PhoneBatch,
    i: usize,
    tenant_id: Id,
) -> Digest {
    let mut mac = key.start();
    let mut field = |bytes: Option<&[u8]>| match bytes {
        None => mac.update(&[0]),
        Some(bytes) => {
            mac.update(&[1]);
            mac.update(&(bytes.len() as u64).to_le_bytes());
            mac.update(bytes);
        }
    };
    let p = phones.get(i);
    field(Some(&tenant_id.to_le_bytes()));
    for text in [
        Some(p.family.as_str()),
        p.model,
        p.label,
        Some(p.variables),
        p.http_user,
        p.http_password,
    ] {
        field(text.map(str::as_bytes));
    }
    let lines = phones.line_range(i);
    field(Some(&(lines.len() as u64).to_le_bytes()));
    for flat in lines {
        let l = phones.line(flat);
        for text in [
            Some(l.extension),
            Some(l.display_name),
            Some(l.auth_user),
            l.password,
            Some(l.registrar),
            l.proxy,
            Some(l.settings),
        ] {
            field(text.map(str::as_bytes));
        }
    }
    let bytes = mac.finalize().into_bytes();
    let half = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    [half(0), half(8)]
}

//! A mirror's file (`store.rs`): read back only for its own settings,
//! a flipped bit refused by its checksum, a file from before checksums
//! still loaded.

use super::tests::{data, raw};
use super::*;

#[test]
fn files_round_trip_for_their_own_settings_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = data(vec![
        raw("cn=ann", Some("Ann"), &["5550101234"]),
        raw("cn=bob", Some("Bob"), &["5550104321"]),
    ]);
    d.watermark = Some(Watermark::ModifyTimestamp("20261130145500Z".into()));
    d.last_incremental_sync = Some(2_000);
    d.last_full_ms = Some(42);
    let path = store::path(dir.path(), 7);
    assert!(path.ends_with("ldap-mirror-7.bin"));
    store::write(&path, "fp1", &d).unwrap();
    assert_eq!(store::read(&path, "fp1", 10).unwrap(), Some(d.clone()));
    // Another source's settings: not this mirror.
    assert_eq!(store::read(&path, "fp2", 10).unwrap(), None);
    // More entries than allowed, or garbage: refused, not loaded.
    assert!(store::read(&path, "fp1", 1).is_err());
    std::fs::write(&path, b"DTLDAPM\x01\xff\xff\xff").unwrap();
    assert!(store::read(&path, "fp1", 10).is_err());
    std::fs::write(&path, b"something else").unwrap();
    assert!(store::read(&path, "fp1", 10).is_err());
    store::remove(dir.path(), 7);
    assert_eq!(store::read(&path, "fp1", 10).unwrap(), None);
}

/// A written file with `at`'s first occurrence (or, if `None`, its middle
/// byte) changed by one bit.
fn flipped(bytes: &[u8], at: Option<&[u8]>) -> Vec<u8> {
    let position = match at {
        Some(needle) => bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the bytes to flip are in the file"),
        None => bytes.len() / 2,
    };
    let mut damaged = bytes.to_vec();
    damaged[position] ^= 1;
    damaged
}

/// One bit flipped in a number, the watermark or anywhere between: refused
/// as damaged, never decoded into another number or another watermark.
#[test]
fn a_flipped_bit_is_refused_as_a_checksum_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = data(vec![
        raw("cn=ann", Some("Ann"), &["5550101234"]),
        raw("cn=bob", Some("Bob"), &["5550104321"]),
    ]);
    d.watermark = Some(Watermark::ModifyTimestamp("20261130145500Z".into()));
    let path = store::path(dir.path(), 7);
    store::write(&path, "fp1", &d).unwrap();
    let whole = std::fs::read(&path).unwrap();
    let places: [Option<&[u8]>; 3] = [Some(b"+15550104321"), Some(b"20261130145500Z"), None];
    for at in places {
        std::fs::write(&path, flipped(&whole, at)).unwrap();
        let error = store::read(&path, "fp1", 10).unwrap_err().to_string();
        assert!(error.contains("checksum mismatch"), "{at:?}: {error}");
    }
    std::fs::write(&path, &whole[..whole.len() - 1]).unwrap();
    assert!(store::read(&path, "fp1", 10).is_err(), "torn");
    std::fs::write(&path, &whole).unwrap();
    assert_eq!(store::read(&path, "fp1", 10).unwrap(), Some(d));
}

/// A file of the release before checksums (version 2: no sum after the
/// body) still loads, so an upgrade costs no source a full sync.
#[test]
fn a_file_without_a_checksum_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = data(vec![raw("cn=ann", Some("Ann"), &["5550101234"])]);
    d.watermark = Some(Watermark::Usn(77));
    let path = store::path(dir.path(), 7);
    store::write(&path, "fp1", &d).unwrap();
    let summed = std::fs::read(&path).unwrap();
    let payload = summed.strip_prefix(b"DTLDAPM\x04".as_slice()).unwrap();
    let unsummed = &payload[..payload.len() - 4];
    std::fs::write(&path, [b"DTLDAPM\x02".as_slice(), unsummed].concat()).unwrap();
    assert_eq!(store::read(&path, "fp1", 10).unwrap(), Some(d));
}

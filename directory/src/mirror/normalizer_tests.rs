//! Mirror files kept across an upgrade: numbers another release's
//! normalizer read are read again from their spellings on load, not served
//! with the old readings until the next full sync.

use super::tests::{data, raw};
use super::*;

/// What a release whose reading rules differ from this one's names itself.
const OLD_NORMALIZER: &str = "dialtone-directory 0.9.0 reading 3; phonenumber 0.3.6+8.13.52";

/// A US tenant's entry as an older release read it: as a Belgian number.
fn read_by_the_old_release() -> MirrorData {
    let mut d = data(vec![raw("cn=alice", Some("Alice"), &["322 719 2670"])]);
    let alice = d.entries.get_mut("cn=alice").unwrap();
    Arc::make_mut(alice).numbers[0].e164 = Some("+3227192670".into());
    d
}

fn current_reading(d: &MirrorData) -> Option<&str> {
    d.entries["cn=alice"].numbers[0].e164.as_deref()
}

#[test]
fn a_file_of_another_normalizer_is_read_again_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = store::path(dir.path(), 7);
    store::write_as_if_by(&path, "fp1", &read_by_the_old_release(), OLD_NORMALIZER).unwrap();

    let mut loaded = store::read(&path, "fp1", 10).unwrap().unwrap();
    assert!(loaded.readings_stale("US"));
    loaded.renormalize("US");
    assert!(!loaded.readings_stale("US"));
    assert_eq!(current_reading(&loaded), Some("+13227192670"));
    let index = loaded.index(7);
    assert_eq!(index.find("+13227192670"), Some("Alice"));
    assert_eq!(index.find("+3227192670"), None);

    // Written again by this release: its readings stand.
    store::write(&path, "fp1", &loaded).unwrap();
    let again = store::read(&path, "fp1", 10).unwrap().unwrap();
    assert!(!again.readings_stale("US"));
}

/// A file of the format before normalizers were named: loaded, and its
/// numbers read again, neither refused nor trusted.
#[test]
fn a_file_that_names_no_normalizer_is_read_again_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = store::path(dir.path(), 7);
    store::write(&path, "fp1", &read_by_the_old_release()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // Version 4 ends with the payload's CRC-32C, which version 1 lacks.
    let summed = bytes.strip_prefix(b"DTLDAPM\x04".as_slice()).unwrap();
    let named = &summed[..summed.len() - 4];
    let (_, body) = postcard::take_from_bytes::<&str>(named).unwrap();
    std::fs::write(&path, [b"DTLDAPM\x01".as_slice(), body].concat()).unwrap();

    let mut loaded = store::read(&path, "fp1", 10).unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 1);
    assert_eq!(loaded.last_full_sync, Some(1_000));
    assert!(loaded.readings_stale("US"));
    loaded.renormalize("US");
    assert_eq!(current_reading(&loaded), Some("+13227192670"));
}

/// The review's case end to end: a node restarted on a new release, its
/// directory down, answers with the new readings from the kept file.
#[tokio::test]
async fn a_restarted_node_answers_with_this_releases_readings() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, service, acme) = super::tests::service::setup(dir.path()).await;
    let source = service.source(acme, "ad").unwrap();
    let fingerprint = source.mirror.as_ref().unwrap().fingerprint.clone();
    let file = store::path(dir.path(), source.id);
    store::write_as_if_by(
        &file,
        &fingerprint,
        &read_by_the_old_release(),
        OLD_NORMALIZER,
    )
    .unwrap();

    service.load_mirror(&source).await;
    let found = service.lookup(acme, "+13227192670").await.unwrap();
    assert_eq!(found.name(), Some("Alice"));
    let old = service.lookup(acme, "+3227192670").await.unwrap();
    assert_eq!(old.name(), None);
}

//! A snapshot served without its database checks the key against the
//! sealed values it holds (`check_key`).

use super::tests::{every_field, key, mirror_of};
use super::*;

fn refused(state: &MirrorState, key: &SecretKey) -> String {
    match check_key(state, key) {
        Err(SyncError::Key(why)) => why,
        other => panic!("expected the key refused, got {other:?}"),
    }
}

fn another_key() -> SecretKey {
    SecretKey::parse(&"ab".repeat(32)).unwrap()
}

#[test]
fn the_key_the_secrets_are_sealed_with_opens_them_and_another_is_refused() {
    let mirror = mirror_of(&every_field());
    check_key(&mirror.load(), &key()).unwrap();
    let why = refused(&mirror.load(), &another_key());
    assert!(why.contains("sealed with"), "{why}");
}

/// Each kind alone is enough to tell: a platform may have line passwords
/// and nothing else, or only a directory source's secret.
#[test]
fn each_kind_of_sealed_value_is_checked_on_its_own() {
    let keep_only = |kind: Purpose| {
        let mut data = every_field();
        for phone in &mut data.phones {
            if !matches!(kind, Purpose::DeviceHttpPassword) {
                phone.http_password = None;
            }
        }
        for line in &mut data.lines {
            if !matches!(kind, Purpose::LinePassword) {
                line.password = None;
            }
        }
        for source in &mut data.directory_sources {
            if !matches!(kind, Purpose::SourceSecret) {
                source.secret = None;
            }
        }
        mirror_of(&data)
    };
    for kind in [
        Purpose::LinePassword,
        Purpose::DeviceHttpPassword,
        Purpose::SourceSecret,
    ] {
        let mirror = keep_only(kind);
        check_key(&mirror.load(), &key()).unwrap();
        refused(&mirror.load(), &another_key());
    }
}

#[test]
fn a_snapshot_without_sealed_values_takes_any_key() {
    let mut data = every_field();
    data.phones.iter_mut().for_each(|p| p.http_password = None);
    data.lines.iter_mut().for_each(|l| l.password = None);
    data.directory_sources
        .iter_mut()
        .for_each(|s| s.secret = None);
    let mirror = mirror_of(&data);
    check_key(&mirror.load(), &another_key()).unwrap();
    check_key(&Mirror::new().load(), &another_key()).unwrap();
}

/// A row sealed with another key (a key file once created anew on one
/// node) does not refuse the key the rest are sealed with; another key,
/// which opens none of them, is still refused.
#[test]
fn a_stray_row_sealed_with_another_key_does_not_refuse_the_right_one() {
    let mut data = every_field();
    let stray = another_key().seal(Purpose::LinePassword, "stray");
    for line in data.lines.iter_mut().filter(|l| l.password.is_some()) {
        line.password = Some(stray.clone());
    }
    let mirror = mirror_of(&data);
    check_key(&mirror.load(), &key()).unwrap();
    refused(&mirror.load(), &SecretKey::parse(&"cd".repeat(32)).unwrap());
}

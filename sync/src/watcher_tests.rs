//! When a catch-up reloads in full rather than apply what it read.

use super::*;

fn meta(timeline: Option<u32>) -> Meta {
    Meta {
        epoch: 1,
        database_id: "db".into(),
        timeline,
        ..Default::default()
    }
}

fn read(timeline: Option<u32>) -> ChangeBatch {
    ChangeBatch {
        meta: meta(timeline),
        ..Default::default()
    }
}

const CURSOR: Cursor = Cursor { txid: 1138, seq: 0 };

#[test]
fn another_timeline_reloads_in_full() {
    let reason = reload_reason(&meta(Some(1)), CURSOR, &read(Some(2)));
    assert!(
        reason.is_some_and(|r| r.contains("timeline changed")),
        "{reason:?}"
    );
    // Whatever the rest of the read says: the ids it compares are the
    // new primary's, reused.
    let ahead = ChangeBatch {
        next_cursor: Cursor { txid: 1140, seq: 0 },
        ..read(Some(2))
    };
    assert!(reload_reason(&meta(Some(1)), CURSOR, &ahead).is_some());
}

#[test]
fn an_unknown_timeline_is_no_reason() {
    assert_eq!(reload_reason(&meta(Some(1)), CURSOR, &read(Some(1))), None);
    // A snapshot from before format 6, or SQLite: the read's is adopted.
    assert_eq!(reload_reason(&meta(None), CURSOR, &read(Some(2))), None);
    // A read that could not tell.
    assert_eq!(reload_reason(&meta(Some(1)), CURSOR, &read(None)), None);
    assert_eq!(reload_reason(&meta(None), CURSOR, &read(None)), None);
}

#[test]
fn another_database_is_named_before_its_timeline() {
    let other = ChangeBatch {
        meta: Meta {
            database_id: "other".into(),
            ..meta(Some(2))
        },
        ..Default::default()
    };
    let reason = reload_reason(&meta(Some(1)), CURSOR, &other);
    assert!(
        reason.is_some_and(|r| r.contains("not the one")),
        "{reason:?}"
    );
}

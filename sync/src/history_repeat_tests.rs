//! Repeats of a fetch are told apart by a hash under each sink's own
//! random key: nothing a tenant can search collisions under.

use super::*;

fn sink() -> HistorySink {
    HistorySink::new(queue::bounded(100, DROPPED, |r: &BootRecord| r.tenant_id).0)
}

fn fetch() -> BootRecord {
    BootRecord {
        mac: "001565000001".into(),
        at: 1_000,
        remote_ip: "192.0.2.1".into(),
        user_agent: None,
        protocol: "tftp".into(),
        file: "001565000001.cfg".into(),
        outcome: "ok".into(),
        bytes: 1,
        model: None,
        firmware: None,
        tenant_id: Some(1),
    }
}

/// A seed fixed in the code is one a tenant can search collisions
/// under; each sink's own random key leaves none to precompute.
#[test]
fn repeat_keys_are_secret_to_each_sink() {
    assert_ne!(sink().repeat_key(&fetch()), sink().repeat_key(&fetch()));
}

#[test]
fn fetches_that_differ_in_any_part_are_not_repeats() {
    let sink = sink();
    let variants = [
        fetch(),
        BootRecord {
            mac: "001565000002".into(),
            ..fetch()
        },
        BootRecord {
            file: "y000000000028.cfg".into(),
            ..fetch()
        },
        BootRecord {
            outcome: "not-found".into(),
            ..fetch()
        },
        BootRecord {
            protocol: "http".into(),
            ..fetch()
        },
        BootRecord {
            remote_ip: "192.0.2.2".into(),
            ..fetch()
        },
        BootRecord {
            tenant_id: Some(2),
            ..fetch()
        },
    ];
    for record in variants {
        sink.record(record);
    }
    assert_eq!(sink.repeats(), 0);
    sink.record(BootRecord {
        at: 2_000,
        ..fetch()
    });
    assert_eq!(sink.repeats(), 1);
}

/// File names match whatever their case (and TFTP's leading slash): each
/// spelling of one file is the same fetch, or anyone knowing a MAC could
/// write a row a spelling (`-DIRECTORY.xml`, `-Directory.xml`, ...).
#[test]
fn spellings_of_one_file_are_one_fetch() {
    let sink = sink();
    for (at, file) in [
        "001565000001.cfg",
        "001565000001.CFG",
        "/001565000001.cfg",
        "001565000001.cFg",
    ]
    .into_iter()
    .enumerate()
    {
        sink.record(BootRecord {
            at: 1_000 + at as i64,
            file: file.into(),
            ..fetch()
        });
    }
    assert_eq!(sink.repeats(), 3);
}

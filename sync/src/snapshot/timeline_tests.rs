//! The database's timeline travels with the snapshot and its freshness
//! file, so a node started from them after a failover to a standby can
//! tell (`watcher::catch_up`); a file from the release before, which has
//! none, still loads, its timeline unknown.

use serde::Serialize;

use super::tests::{every_field, load_error, meta, mirror_of};
use super::*;
use crate::mirror::LoadedFrom;

#[test]
fn the_timeline_survives_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    write(&mirror_of(&every_field()), &path, "s").unwrap();
    let (header, _) = load(&path).unwrap().unwrap();
    assert_eq!(header.meta.timeline, Some(3));
    assert_eq!(header.meta, meta());
}

/// Format 5's index: format 6's without the timeline.
#[derive(Serialize)]
struct Index5<'a> {
    header: &'a SnapshotHeader,
    sections: [format::Section; 7],
}

/// The file at `path` rewritten as the release before wrote it.
fn as_format_5(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let index_at = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let (index, _) =
        postcard::take_from_bytes::<format::Index>(&bytes[index_at as usize..]).unwrap();
    let old = postcard::to_allocvec(&Index5 {
        header: &index.header,
        sections: index.sections,
    })
    .unwrap();
    let mut file = bytes[..index_at as usize].to_vec();
    file[..8].copy_from_slice(format::MAGIC_5);
    file.extend(&old);
    file.extend(format::index_checksum(format::MAGIC_5, index_at, &old).to_le_bytes());
    std::fs::write(path, file).unwrap();
}

#[test]
fn a_snapshot_of_the_release_before_loads_with_no_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let data = every_field();
    write(&mirror_of(&data), &path, "s").unwrap();
    as_format_5(&path);
    let (header, loading) = load(&path).unwrap().unwrap();
    assert_eq!(header.meta.timeline, None);
    assert_eq!(header.meta.database_id, meta().database_id);
    assert_eq!(loading.into_dataset(), data);

    // Still under its checksum, which covers the format byte.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[7] = 6;
    std::fs::write(&path, bytes).unwrap();
    assert!(load_error(&path).contains("checksum"));
}

#[test]
fn the_freshness_file_carries_the_timeline_adopted_since() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mirror = mirror_of(&every_field());
    let unknown = Meta {
        timeline: None,
        ..meta()
    };
    mirror.reset(
        every_field(),
        Cursor { txid: 7, seq: 8 },
        unknown.clone(),
        LoadedFrom::Snapshot,
    );
    mirror.mark_synced();
    let Written::Whole(whole) = refresh(&mirror, &path, "s", None).unwrap() else {
        panic!("the first write is whole");
    };
    assert_eq!(whole.header.meta.timeline, None);

    // A catch-up that learnt the timeline, and changed no row.
    std::thread::sleep(std::time::Duration::from_millis(5));
    mirror.apply(Vec::new(), Cursor { txid: 9, seq: 0 }, meta());
    mirror.mark_synced();
    let Written::Freshness(_) = refresh(&mirror, &path, "s", Some(&whole)).unwrap() else {
        panic!("rows unchanged: only the freshness is written");
    };
    let (header, _) = load(&path).unwrap().unwrap();
    assert_eq!(header.cursor, Cursor { txid: 9, seq: 0 });
    assert_eq!(header.meta.timeline, Some(3));

    // One that recorded none (the release before wrote none) keeps the
    // snapshot's own.
    let mirror = mirror_of(&every_field());
    mirror.mark_synced();
    let Written::Whole(whole) = refresh(&mirror, &path, "s", None).unwrap() else {
        panic!("a new mirror's snapshot is whole");
    };
    std::thread::sleep(std::time::Duration::from_millis(5));
    mirror.apply(Vec::new(), Cursor { txid: 11, seq: 0 }, unknown);
    mirror.mark_synced();
    let Written::Freshness(_) = refresh(&mirror, &path, "s", Some(&whole)).unwrap() else {
        panic!("rows unchanged: only the freshness is written");
    };
    let synced = std::fs::read_to_string(synced::path_of(&path)).unwrap();
    assert!(!synced.contains("timeline"), "{synced}");
    let (header, _) = load(&path).unwrap().unwrap();
    assert_eq!(header.cursor, Cursor { txid: 11, seq: 0 });
    assert_eq!(header.meta.timeline, Some(3));
}

//! The snapshot's freshness file: written instead of the whole snapshot
//! while the mirror's rows are unchanged, taken at a start only when it
//! belongs to the snapshot beside it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::*;
use crate::mirror::LoadedFrom;
use crate::testing::build::{phone_row, tenant_row};

fn mirror() -> Mirror {
    let data = Dataset {
        tenants: vec![tenant_row("{}")],
        phones: (1..=50)
            .map(|id| {
                phone_row(
                    id,
                    1,
                    format!("0015650000{id:02x}").parse().unwrap(),
                    Family::Yealink,
                )
            })
            .collect(),
        ..Default::default()
    };
    let mirror = Mirror::new();
    let meta = Meta {
        database_id: "db-1".into(),
        ..Default::default()
    };
    mirror.reset(data, Cursor { txid: 7, seq: 0 }, meta, LoadedFrom::Database);
    mirror.mark_synced();
    mirror
}

/// A catch-up that found nothing: the cursor moves, the rows do not.
fn moved_on(mirror: &Mirror, txid: i64) {
    let state = mirror.load();
    mirror.apply(Vec::new(), Cursor { txid, seq: 0 }, state.meta().clone());
    std::thread::sleep(std::time::Duration::from_millis(5));
    mirror.mark_synced();
}

/// Which file is at `path`: an inode number can come back for the next
/// file, its modification time with it cannot.
fn inode(path: &Path) -> (u64, i64, i64) {
    let metadata = std::fs::metadata(path).unwrap();
    (metadata.ino(), metadata.mtime(), metadata.mtime_nsec())
}

#[test]
fn an_unchanged_mirror_records_only_its_freshness() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mirror = mirror();
    let Written::Whole(whole) = refresh(&mirror, &path, "src", None).unwrap() else {
        panic!("the first write is whole");
    };
    let written_as = inode(&path);

    moved_on(&mirror, 90);
    let Written::Freshness(fresh) = refresh(&mirror, &path, "src", Some(&whole)).unwrap() else {
        panic!("rows unchanged: only the freshness is written");
    };
    assert_eq!(inode(&path), written_as, "the snapshot was rewritten");
    assert!(fresh.synced_at > whole.header.synced_at);

    let (header, loading) = load(&path).unwrap().unwrap();
    assert_eq!(header.cursor, Cursor { txid: 90, seq: 0 });
    assert_eq!(header.synced_at, fresh.synced_at);
    assert_eq!(loading.into_dataset().phones.len(), 50);

    // A row changes: the whole snapshot again, and the freshness file,
    // no longer of it, is gone.
    let state = mirror.load();
    let mut changed = phone_row(3, 1, "001565000003".parse().unwrap(), Family::Yealink);
    changed.label = Some("moved".into());
    mirror.apply(
        vec![(Entity::Phone, 3, Some(Row::Phone(changed)))],
        Cursor { txid: 95, seq: 0 },
        state.meta().clone(),
    );
    let Written::Whole(again) = refresh(&mirror, &path, "src", Some(&whole)).unwrap() else {
        panic!("rows changed: the snapshot is written whole");
    };
    assert!(!synced::path_of(&path).exists());
    let (header, _) = load(&path).unwrap().unwrap();
    assert_eq!(header, again.header);
}

#[test]
fn a_freshness_file_of_another_snapshot_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mirror = mirror();
    let Written::Whole(whole) = refresh(&mirror, &path, "src", None).unwrap() else {
        panic!("the first write is whole");
    };
    moved_on(&mirror, 90);
    refresh(&mirror, &path, "src", Some(&whole)).unwrap();
    let kept = std::fs::read(synced::path_of(&path)).unwrap();

    // Another snapshot is renamed into place (the final write at
    // shutdown, a node sharing the folder): the old freshness file, put
    // back beside it, belongs to a file that is gone.
    let replaced = write(&mirror, &path, "src").unwrap();
    std::fs::write(synced::path_of(&path), &kept).unwrap();
    let (header, _) = load(&path).unwrap().unwrap();
    assert_eq!(header, replaced);

    // Nor is a freshness written for it: its rows may lack what this
    // mirror's cursor has passed. The snapshot is written whole.
    moved_on(&mirror, 99);
    let written = refresh(&mirror, &path, "src", Some(&whole)).unwrap();
    let Written::Whole(latest) = written else {
        panic!("a freshness recorded for another node's snapshot: {written:?}");
    };
    let (header, _) = load(&path).unwrap().unwrap();
    assert_eq!(header.cursor, Cursor { txid: 99, seq: 0 });
    let replaced = latest.header;

    // Damaged: ignored too.
    std::fs::write(synced::path_of(&path), b"{not json").unwrap();
    let (header, _) = load(&path).unwrap().unwrap();
    assert_eq!(header, replaced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_writes_whole_only_when_rows_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mirror = std::sync::Arc::new(mirror());
    let cancel = CancellationToken::new();
    let writer = tokio::spawn(run_writer(
        mirror.clone(),
        path.clone(),
        "src".into(),
        std::time::Duration::from_millis(20),
        cancel.clone(),
    ));
    let wait_for = |done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never caught up"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for(&|| path.exists());
    let written_as = inode(&path);
    for txid in [20, 30, 40] {
        moved_on(&mirror, txid);
        let expected = Cursor { txid, seq: 0 };
        wait_for(&|| load(&path).unwrap().unwrap().0.cursor == expected);
    }
    assert_eq!(inode(&path), written_as, "rewritten with no row changed");
    cancel.cancel();
    writer.await.unwrap();
}

/// A changed digit still parses: a cursor moved ahead would have the
/// catch-up skip the changes between. The checksum refuses it, and the
/// snapshot's own header stands.
#[test]
fn a_freshness_file_with_a_changed_digit_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mirror = mirror();
    let Written::Whole(whole) = refresh(&mirror, &path, "src", None).unwrap() else {
        panic!("the first write is whole");
    };
    moved_on(&mirror, 90);
    refresh(&mirror, &path, "src", Some(&whole)).unwrap();
    let (header, _) = load(&path).unwrap().unwrap();
    assert_eq!(header.cursor, Cursor { txid: 90, seq: 0 });

    let freshness = synced::path_of(&path);
    let text = std::fs::read_to_string(&freshness).unwrap();
    assert_eq!(text.matches("\"txid\":90").count(), 1, "{text}");
    std::fs::write(&freshness, text.replace("\"txid\":90", "\"txid\":98")).unwrap();
    let (header, _) = load(&path).unwrap().unwrap();
    assert_eq!(header, whole.header);
}

//! How the snapshot reaches the disk: through the 1 MiB buffer in large
//! writes, not a write per row, and with the disk's own error when the
//! write fails.

use std::io::{self, Write};

use super::*;
use crate::mirror::Mirror;
use crate::model::{Cursor, Dataset, Family, Line, Phone};
use crate::snapshot::tests::{every_field, mac, meta, mirror_of};

/// Every field, and `phones` phones with a line each.
fn many_rows(phones: i64) -> Dataset {
    let mut data = every_field();
    for n in 0..phones {
        data.phones.push(Phone {
            id: 1000 + n,
            tenant_id: 1,
            mac: mac(1000 + n as u64),
            family: Family::Yealink,
            model: Some("T54W".into()),
            label: Some(format!("Desk {n}").into()),
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            updated_at: n,
        });
        data.lines.push(Line {
            id: 100_000 + n,
            phone_id: 1000 + n,
            position: 1,
            extension: format!("{}", 2000 + n).into(),
            display_name: format!("User {n}").into(),
            auth_user: format!("u{n}").into(),
            password: None,
            registrar: "sip.example.net".into(),
            proxy: None,
            settings: "{}".into(),
            updated_at: n,
        });
    }
    data.sort();
    data
}

/// Fixed, so two writes of the same rows give the same bytes.
fn header() -> SnapshotHeader {
    SnapshotHeader {
        source: "s".into(),
        synced_at: 1,
        cursor: Cursor { txid: 7, seq: 8 },
        meta: meta(),
        version: 1,
    }
}

fn write_through<W: Write>(mirror: &Mirror, inner: W) -> io::Result<(W, u64)> {
    let state = mirror.load();
    write_to(inner, &header(), &state.tables())
}

/// Counts the writes that reach it.
#[derive(Default)]
struct CountingWrites {
    bytes: Vec<u8>,
    calls: usize,
}

impl Write for CountingWrites {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn rows_reach_the_disk_in_large_writes_not_one_each() {
    let rows = 10_000;
    let mirror = mirror_of(&many_rows(rows));
    let (written, _) = write_through(&mirror, CountingWrites::default()).unwrap();
    // A write per row was 20,000 here and more; the buffer holds 1 MiB.
    let buffers = written.bytes.len() / (1 << 20) + 1;
    assert!(
        written.calls < 20,
        "{} writes for {} bytes ({buffers} buffers' worth) of {} rows",
        written.calls,
        written.bytes.len(),
        2 * rows
    );
}

/// A disk that has no room left.
#[derive(Debug)]
struct FullDisk;

impl Write for FullDisk {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(28))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_disk_is_reported_as_one() {
    // Small enough to sit in the buffer until the end, and large enough
    // to overflow it: the error is the disk's either way.
    for rows in [0, 20_000] {
        let mirror = mirror_of(&many_rows(rows));
        let error = write_through(&mirror, FullDisk).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28), "{rows} rows: {error}");
        assert!(
            error.to_string().contains("No space left on device"),
            "{rows} rows: {error}"
        );
    }
}

#[test]
fn a_full_disk_names_itself_in_the_snapshot_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mirror = mirror_of(&many_rows(3));
    let state = mirror.load();
    let error = write_to(FullDisk, &header(), &state.tables()).unwrap_err();
    let reported = crate::snapshot::err(&path, error).to_string();
    assert!(
        reported.contains("No space left on device (os error 28)"),
        "{reported}"
    );
}

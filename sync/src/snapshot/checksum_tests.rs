//! The snapshot's checksums: damage anywhere is refused and named, an
//! intact file loads, and a file from before them is refused.

use std::path::PathBuf;

use super::format::Index;
use super::tests::{every_field, load_error, loaded, mac, mirror_of};
use super::*;

/// The sections' tables as a damaged one is named, in the file's order.
const TABLES: [&str; 7] = [
    "tenants",
    "phones",
    "lines",
    "templates",
    "directory entries",
    "directory sources",
    "API tokens",
];

/// Every field, and phones and lines enough that their sections take
/// several of the reader's 1 MiB reads, and a template body larger than
/// one (the reader grows its buffer for it).
fn large() -> Dataset {
    let mut data = every_field();
    data.templates[0].body = "y".repeat(3 << 20).into();
    for n in 0..25_000i64 {
        data.phones.push(Phone {
            id: 1000 + n,
            tenant_id: 1,
            mac: mac(1000 + n as u64),
            family: Family::Yealink,
            model: Some("T54W".into()),
            label: Some(format!("Desk {n}, reception, floor {}", n % 12).into()),
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
            display_name: format!("User {n} — Ærø").into(),
            auth_user: format!("u{n}").into(),
            password: Some(crate::crypto::Sealed(format!("v1:{n:0>72}").into())),
            registrar: "sip.example.net".into(),
            proxy: None,
            settings: "{}".into(),
            updated_at: n,
        });
    }
    data.sort();
    data
}

struct Written {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    index_at: usize,
    index: Index,
}

fn written(data: &Dataset) -> Written {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    write(&mirror_of(data), &path, "s").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let index_at = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let (index, _) = postcard::take_from_bytes::<Index>(&bytes[index_at..]).unwrap();
    Written {
        _dir: dir,
        path,
        bytes,
        index_at,
        index,
    }
}

impl Written {
    /// Why the file is refused with bit `bit` of byte `at` flipped.
    fn flipped(&self, at: usize, bit: u8) -> String {
        let mut damaged = self.bytes.clone();
        damaged[at] ^= 1 << bit;
        std::fs::write(&self.path, &damaged).unwrap();
        load_error(&self.path)
    }

    /// What a flip at `at` must be refused for.
    fn expected(&self, at: usize) -> &'static str {
        if at < 8 {
            return "snapshot";
        }
        if at < 16 || at >= self.index_at {
            return "index";
        }
        let s = self
            .index
            .sections
            .iter()
            .position(|s| (s.offset as usize..(s.offset + s.len) as usize).contains(&at));
        TABLES[s.expect("every byte before the index is a section's")]
    }
}

/// A single flipped bit anywhere, in the first bytes, any section, the
/// index or its checksum, is refused, and the reason names the part.
#[test]
fn a_flipped_bit_anywhere_is_refused_and_named() {
    let file = written(&every_field());
    assert!(file.index.sections.iter().all(|s| s.len > 0));
    let mut named = std::collections::BTreeSet::new();
    for at in 0..file.bytes.len() {
        // Each bit of a byte in turn: every byte, and every bit position.
        let bit = (at % 8) as u8;
        let reason = file.flipped(at, bit);
        let part = file.expected(at);
        let expected = match part {
            "snapshot" => reason.contains("snapshot"),
            "index" => {
                reason.contains("the header and index fail their checksum")
                    || reason.contains("the index is outside the file")
                    || reason.contains("the index is too long")
            }
            table => reason == format!("damaged: the {table} table fails its checksum"),
        };
        assert!(expected, "byte {at} bit {bit} ({part}): {reason}");
        named.insert(part);
    }
    assert_eq!(named.len(), 2 + TABLES.len(), "{named:?}");
}

/// In sections read in several pieces, and around the edges of those
/// pieces, a flipped bit is refused too.
#[test]
fn a_flipped_bit_deep_in_a_large_section_is_refused() {
    let file = written(&large());
    const CHUNK: u64 = 1 << 20;
    for (s, table) in file.index.sections.iter().zip(TABLES) {
        let end = s.offset + s.len;
        let mut places = vec![s.offset, end - 1];
        if s.len > CHUNK + 1 {
            places.extend([s.offset + CHUNK - 1, s.offset + CHUNK]);
        }
        if table == "phones" || table == "lines" || table == "templates" {
            assert!(s.len > CHUNK + 1, "{table}: {} bytes", s.len);
        }
        for at in places {
            let reason = file.flipped(at as usize, 3);
            assert_eq!(
                reason,
                format!("damaged: the {table} table fails its checksum"),
                "byte {at}"
            );
        }
    }
}

/// A damaged index offset near the file's start is refused before the
/// rest of the file is read as the index (before its checksum, a large
/// snapshot was read into memory whole).
#[test]
fn an_index_offset_far_from_the_end_is_refused_unread() {
    let file = written(&large());
    let mut damaged = file.bytes.clone();
    damaged[8..16].copy_from_slice(&16u64.to_le_bytes());
    std::fs::write(&file.path, &damaged).unwrap();
    assert_eq!(load_error(&file.path), "damaged: the index is too long");
}

/// An intact file loads, and what it carries are the checksums of its
/// bytes.
#[test]
fn an_intact_file_loads_and_carries_the_checksums_of_its_bytes() {
    let data = large();
    let file = written(&data);
    for (s, table) in file.index.sections.iter().zip(TABLES) {
        let bytes = &file.bytes[s.offset as usize..(s.offset + s.len) as usize];
        assert_eq!(s.checksum, crc32c::checksum(bytes), "{table}");
    }
    let (index, trailer) =
        file.bytes[file.index_at..].split_at(file.bytes.len() - file.index_at - 4);
    let mut covered = file.bytes[..16].to_vec();
    covered.extend(index);
    assert_eq!(trailer, crc32c::checksum(&covered).to_le_bytes());
    assert_eq!(loaded(&file.path).load().to_dataset(), data);
}

/// Format 4, the same layout without the checksums, as the release
/// before wrote it: refused (the node loads from the database), saying
/// which format it is.
#[test]
fn a_format_4_file_is_refused_and_says_so() {
    #[derive(Serialize)]
    struct Format4Section {
        offset: u64,
        len: u64,
        rows: u64,
    }
    #[derive(Serialize)]
    struct Format4Index {
        header: SnapshotHeader,
        sections: [Format4Section; 7],
    }
    let file = written(&every_field());
    let index = Format4Index {
        header: file.index.header.clone(),
        sections: file.index.sections.map(|s| Format4Section {
            offset: s.offset,
            len: s.len,
            rows: s.rows,
        }),
    };
    let mut bytes = file.bytes[..file.index_at].to_vec();
    bytes[7] = 4;
    bytes.extend(postcard::to_allocvec(&index).unwrap());
    std::fs::write(&file.path, &bytes).unwrap();
    let reason = load_error(&file.path);
    assert!(
        reason.contains("format 4") && reason.contains("reads formats 5 and 6"),
        "{reason}"
    );
}

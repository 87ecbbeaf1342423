use super::*;

/// GB spellings of the drama ranges, a US one, and text that is no number.
const SPELLINGS: &[&str] = &[
    "01632 960123",
    "+44 (0)1632 960123",
    "0044 1632 960123",
    "020 7946 0123",
    "+1 (555) 010-1234",
    "+44 1632 960123 ext 9",
    "",
    "call me",
    "01632 96",
];

/// The bound of a directory with these spellings.
fn bound(spellings: &[&str]) -> Bound {
    Bound::of(spellings.iter().copied())
}

fn made(region: &str) -> ReadingMap {
    let mut readings = Readings::new(region, SPELLINGS.len());
    for spelling in SPELLINGS {
        readings.read(spelling);
    }
    readings.into_map()
}

#[test]
fn readings_are_what_normalize_reads_each_time() {
    let mut readings = Readings::new("GB", 4);
    for _ in 0..3 {
        for spelling in SPELLINGS {
            assert_eq!(
                readings.read(spelling),
                normalize(spelling, "GB").ok().as_deref(),
                "{spelling}"
            );
        }
    }
    assert_eq!(readings.taken(), 0);
    assert_eq!(readings.into_map().len(), SPELLINGS.len());
}

/// A kept reading is taken as it is, not made again (a wrong one planted
/// shows through), and what the pass did not meet is not kept again.
#[test]
fn kept_readings_are_taken_and_only_met_ones_kept_again() {
    let mut kept = made("GB");
    kept.insert("01632 960123".into(), Some("+15550000000".into()));
    kept.insert("gone from the directory".into(), None);
    let mut readings = Readings::with_kept("GB", 4, kept);
    assert_eq!(readings.read("01632 960123"), Some("+15550000000"));
    assert_eq!(readings.read("020 7946 0123"), Some("+442079460123"));
    assert_eq!(readings.read("+61 2 5550 1234"), Some("+61255501234"));
    assert_eq!(readings.read("01632 960123"), Some("+15550000000"));
    assert_eq!(readings.taken(), 2);
    let again = readings.into_map();
    let mut spellings: Vec<&str> = again.keys().map(|s| &**s).collect();
    spellings.sort_unstable();
    assert_eq!(
        spellings,
        ["+61 2 5550 1234", "01632 960123", "020 7946 0123"]
    );
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dialtone-readings-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_kept_file_is_read_back_in_its_own_region_only() {
    let dir = dir("round-trip");
    let files = KeptReadings::new(dir.clone());
    let readings = made("GB");
    files.write(7, "GB", &readings);
    assert_eq!(files.read(7, "GB", bound(SPELLINGS)), readings);
    assert!(
        files.read(7, "US", bound(SPELLINGS)).is_empty(),
        "another region's"
    );
    assert!(
        files.read(8, "GB", bound(SPELLINGS)).is_empty(),
        "another tenant's"
    );
    assert!(
        files.read(7, "GB", bound(&SPELLINGS[1..])).is_empty(),
        "more readings than the directory has numbers"
    );
    // Spellings a tenant made long: its file is held to their size.
    let long: Vec<String> = (0..9)
        .map(|i| format!("{i} {}", "x".repeat(2_000)))
        .collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let mut readings = Readings::new("GB", long.len());
    for spelling in &long {
        assert_eq!(readings.read(spelling), None);
    }
    let readings = readings.into_map();
    files.write(9, "GB", &readings);
    assert!(
        files.read(9, "GB", bound(SPELLINGS)).is_empty(),
        "more bytes than twice the directory's spellings"
    );
    assert_eq!(files.read(9, "GB", bound(&long)), readings);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn damaged_or_foreign_files_cost_a_whole_build_not_a_wrong_reading() {
    let dir = dir("damaged");
    let files = KeptReadings::new(dir.clone());
    let readings = made("GB");
    files.write(1, "GB", &readings);
    let path = files.path(1);
    let whole = std::fs::read(&path).unwrap();

    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    assert!(files.read(1, "GB", bound(SPELLINGS)).is_empty(), "torn");
    std::fs::write(&path, b"").unwrap();
    assert!(files.read(1, "GB", bound(SPELLINGS)).is_empty(), "empty");
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    assert!(files.read(1, "GB", bound(SPELLINGS)).is_empty(), "zeros");

    // Another normalizer's file: same shape, another name.
    let out = Out {
        header: Header {
            normalizer: "dialtone-directory 0.0.0; phonenumber 0.0.0".into(),
            region: "GB".into(),
        },
        readings: &readings,
    };
    let mut foreign = Vec::new();
    write_checksummed(&mut foreign, MAGIC, |payload| encode_to(&out, payload)).unwrap();
    std::fs::write(&path, foreign).unwrap();
    assert!(
        files.read(1, "GB", bound(SPELLINGS)).is_empty(),
        "another normalizer's"
    );

    // This normalizer's name on readings it does not make: every reading
    // is spot-checked when there are no more than SPOT_CHECKS.
    let mut wrong = readings.clone();
    wrong.insert("020 7946 0123".into(), Some("+15550000000".into()));
    files.write(1, "GB", &wrong);
    assert!(
        files.read(1, "GB", bound(SPELLINGS)).is_empty(),
        "a wrong reading"
    );

    files.write(1, "GB", &readings);
    assert_eq!(files.read(1, "GB", bound(SPELLINGS)), readings);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn files_of_tenants_no_longer_built_ahead_are_removed() {
    let dir = dir("remove");
    let files = KeptReadings::new(dir.clone());
    let readings = made("US");
    for tenant in [1, 2, 3] {
        files.write(tenant, "US", &readings);
    }
    std::fs::write(
        dir.join(".directory-readings-4.bin.1.tmp0"),
        b"left by a crash",
    )
    .unwrap();
    let ours = dir.join(format!(
        ".directory-readings-5.bin.{}.tmp9",
        std::process::id()
    ));
    std::fs::write(&ours, b"being written").unwrap();
    std::fs::write(dir.join("node.snapshot"), b"not ours").unwrap();
    files.remove_except(|tenant| tenant == 2);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort_unstable();
    let ours = ours.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        left,
        [
            ours,
            "directory-readings-2.bin".into(),
            "node.snapshot".into()
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A phonenumber upgrade brings new metadata, and readings made with the
/// old one must not be taken: the normalizer's name changes with it.
#[test]
fn normalizer_names_the_locked_phonenumber() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .expect("the workspace's Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"phonenumber\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .expect("phonenumber in Cargo.lock");
    assert!(
        NORMALIZER.ends_with(&format!("phonenumber {version}")),
        "{NORMALIZER} against phonenumber {version}: update NORMALIZER"
    );
}

/// A disk with `room` bytes left.
struct FillingDisk {
    written: Vec<u8>,
    room: usize,
}

impl Write for FillingDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written.len() + buf.len() > self.room {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_disk_is_reported_as_one() {
    // Past the format's first bytes, so the readings are what fills it.
    let mut disk = FillingDisk {
        written: Vec::new(),
        room: MAGIC.len() + 4,
    };
    let error = encode(&mut disk, "GB", &made("GB")).unwrap_err();
    assert!(error.contains("No space left on device"), "{error}");
}

#[test]
fn the_readings_are_postcards_own_encoding() {
    let readings = made("GB");
    let mut disk = FillingDisk {
        written: Vec::new(),
        room: usize::MAX,
    };
    encode(&mut disk, "GB", &readings).unwrap();
    let out = Out {
        header: Header {
            normalizer: NORMALIZER.into(),
            region: "GB".into(),
        },
        readings: &readings,
    };
    let payload = postcard::to_allocvec(&out).unwrap();
    let sum = dialtone_sync::crc32c(&payload).to_le_bytes();
    let expected = [MAGIC.as_slice(), &payload, &sum].concat();
    assert_eq!(disk.written, expected);
}

/// More readings than the spot checks see, so that only the checksum can
/// find a flipped digit in most of them.
fn many(region: &str) -> (Vec<String>, ReadingMap) {
    let spellings: Vec<String> = (0..200).map(|i| format!("01632 960{i:03}")).collect();
    let mut readings = Readings::new(region, spellings.len());
    for spelling in &spellings {
        readings.read(spelling);
    }
    (spellings, readings.into_map())
}

/// One flipped bit in a reading decodes to another number, which the spot
/// checks see only if it is among the 16 they make again: the checksum
/// refuses it wherever it is.
#[test]
fn a_flipped_bit_is_refused_as_a_checksum_mismatch() {
    let dir = dir("flipped");
    let files = KeptReadings::new(dir.clone());
    let (spellings, readings) = many("GB");
    let bound = Bound::of(spellings.iter().map(String::as_str));
    files.write(1, "GB", &readings);
    let path = files.path(1);
    let whole = std::fs::read(&path).unwrap();
    let reading = b"+441632960100";
    let at = whole
        .windows(reading.len())
        .position(|w| w == reading)
        .expect("the reading is in the file")
        + reading.len()
        - 1;
    let mut damaged = whole.clone();
    damaged[at] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    let refused = read_file(&path, "GB", bound).map(|read| read.map(|r| r.len()));
    assert_eq!(refused, Err("checksum mismatch".to_string()));
    assert!(files.read(1, "GB", bound).is_empty());

    let mut middle = whole.clone();
    middle[whole.len() / 2] ^= 1;
    std::fs::write(&path, &middle).unwrap();
    assert!(files.read(1, "GB", bound).is_empty(), "the middle byte");

    std::fs::write(&path, &whole).unwrap();
    assert_eq!(files.read(1, "GB", bound), readings);
    let _ = std::fs::remove_dir_all(dir);
}

/// A file of the format before checksums (version 1: the magic, then
/// postcard's encoding alone) is still read.
#[test]
fn a_file_without_a_checksum_is_still_read() {
    let dir = dir("unsummed");
    let files = KeptReadings::new(dir.clone());
    let (spellings, readings) = many("GB");
    let out = Out {
        header: Header {
            normalizer: NORMALIZER.into(),
            region: "GB".into(),
        },
        readings: &readings,
    };
    let unsummed = [
        b"DTREADS\x01".as_slice(),
        &postcard::to_allocvec(&out).unwrap(),
    ]
    .concat();
    std::fs::write(files.path(1), unsummed).unwrap();
    let bound = Bound::of(spellings.iter().map(String::as_str));
    assert_eq!(files.read(1, "GB", bound), readings);
    let _ = std::fs::remove_dir_all(dir);
}

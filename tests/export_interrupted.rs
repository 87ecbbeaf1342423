//! `dialtone export FILE` stopped partway: its file holds every line
//! password in clear, so a SIGTERM or Ctrl-C mid-export must leave nothing
//! behind, and the named temporary files older exports left are swept.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use dialtone_sync::testing::TestDb;

const TEMP_PREFIX: &str = ".dialtone-export-";

fn import(dir: &Path, url: &str, files: &[PathBuf]) {
    let mut cmd = dialtone(dir, url);
    cmd.arg("import").args(files);
    let out = run(cmd);
    assert!(out.status.success(), "import: {}", text(&out.stderr));
}

fn temporaries_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(TEMP_PREFIX))
        .collect()
}

/// Whether process `pid` holds a file open in `dir`: the export's file
/// while it is written, named or not ("#123 (deleted)" for O_TMPFILE).
fn writes_in(pid: u32, dir: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.parent() == Some(dir)))
}

#[test]
fn an_export_stopped_partway_leaves_no_file_with_the_passwords() {
    let db = TestDb::sqlite();
    let work = tempfile::tempdir().unwrap();
    // Big enough that writing the file takes a good part of a second in a
    // debug build: the signal lands while it is written.
    let files = [
        write_file(work.path(), "tenants.csv", TENANTS_CSV),
        write_file(work.path(), "phones.csv", &phones_csv(1, 40_000)),
    ];
    import(work.path(), &db.url, &files);
    std::fs::create_dir(work.path().join("out")).unwrap();
    // As /proc names the files the export holds open.
    let out_dir = work.path().join("out").canonicalize().unwrap();
    let target = out_dir.join("fleet.json");

    let mut cmd = dialtone(work.path(), &db.url);
    cmd.args(["export", target.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !writes_in(child.id(), &out_dir) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before it was seen writing"
        );
        assert!(
            Instant::now() < deadline,
            "the export never started writing"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: kill(2) on our own child, which has not been waited for.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.wait_with_output().unwrap().status;

    assert!(
        !target.exists(),
        "the export finished before the signal ({status}): make the fleet bigger"
    );
    assert_eq!(
        temporaries_in(&out_dir),
        Vec::<String>::new(),
        "a SIGTERM mid-export left its temporary file, line passwords in clear"
    );
}

#[test]
fn an_export_removes_the_temporary_files_stopped_exports_left() {
    let db = TestDb::sqlite();
    let work = tempfile::tempdir().unwrap();
    import(
        work.path(),
        &db.url,
        &[
            write_file(work.path(), "tenants.csv", TENANTS_CSV),
            write_file(work.path(), "phones.csv", &phones_csv(1, 3)),
        ],
    );
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 60 * 60);
    let aged = |name: &str| {
        let path = work.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_modified(two_days_ago).unwrap();
        path
    };
    let stale = aged(".dialtone-export-a1B2c3");
    // Not the export's: another prefix, no dot, a folder, a recent file.
    let others = [
        aged(".dialtone-exported-notes"),
        aged("dialtone-export-a1B2c3"),
        work.path().join(".dialtone-export-folder"),
        work.path().join(".dialtone-export-now123"),
    ];
    std::fs::create_dir(&others[2]).unwrap();
    std::fs::write(&others[3], "an export running now").unwrap();

    let mut cmd = dialtone(work.path(), &db.url);
    cmd.args(["export", "fleet.csv"]);
    let out = run(cmd);
    let said = text(&out.stderr);
    assert!(out.status.success(), "export: {said}");
    assert!(work.path().join("fleet.csv").is_file());

    assert!(!stale.exists(), "a day-old temporary export was kept");
    assert!(said.contains(".dialtone-export-a1B2c3"), "{said}");
    for other in &others {
        assert!(other.exists(), "{} was removed", other.display());
    }
}

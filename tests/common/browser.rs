//! Browser scripts (tests/ui/*.mjs) run with node, each from a temp dir of
//! its own beside a link to the playwright-core that scripts/test installs
//! (DIALTONE_TEST_UI_DIR): concurrent runs, of one checkout or several,
//! never run or overwrite each other's script. Screenshots go to a folder
//! of the run's own, so a test checks only the files its run wrote.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A copy of tests/ui/NAME ready to run; removed when dropped.
pub struct BrowserScript {
    dir: tempfile::TempDir,
    script: PathBuf,
}

impl BrowserScript {
    pub fn new(name: &str) -> BrowserScript {
        let ui_dir = PathBuf::from(std::env::var("DIALTONE_TEST_UI_DIR").expect(
            "DIALTONE_TEST_UI_DIR is not set: run the tests through scripts/test \
             (it installs Chromium and playwright-core)",
        ));
        let dir = tempfile::Builder::new()
            .prefix("dialtone-ui.")
            .tempdir()
            .unwrap();
        std::os::unix::fs::symlink(ui_dir.join("node_modules"), dir.path().join("node_modules"))
            .unwrap();
        let script = dir.path().join(name);
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/ui")
                .join(name),
            &script,
        )
        .unwrap();
        BrowserScript { dir, script }
    }

    /// `node SCRIPT`, run from the script's own dir.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("node");
        cmd.arg(&self.script).current_dir(self.dir.path());
        cmd
    }
}

/// A fresh folder for one run's screenshots, kept for a person to look at:
/// target/ui-artifacts/NAME.XXXXXX. The same test's folders from runs over
/// a day old are removed, so they do not pile up.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../ui-artifacts");
    std::fs::create_dir_all(&root).unwrap();
    let prefix = format!("{name}.");
    let day = Duration::from_secs(24 * 3600);
    for old in std::fs::read_dir(&root).unwrap().flatten() {
        let stale = old
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > day));
        if stale && old.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&root)
        .unwrap()
        .keep()
}

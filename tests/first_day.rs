//! What an operator meets in the first commands on a node: what `migrate`
//! says it did, and a key file that is missing where it cannot be made or
//! must not be made anew.

mod common;

use common::*;

/// `migrate` says whether it migrated: "current" after creating every
/// table told an operator upgrading that nothing had been done.
#[test]
fn migrate_says_whether_it_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut said = Vec::new();
    for _ in 0..2 {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.arg("migrate");
        let out = run(cmd);
        assert!(out.status.success(), "{}", text(&out.stderr));
        said.push(text(&out.stdout).trim().to_string());
    }
    assert_eq!(
        said,
        [
            "database migrated to this version's schema",
            "database schema is current; nothing to migrate"
        ]
    );
}

/// A command given a key file in a folder that is not there (a stopped
/// unit's credentials, a state folder before the first start) names the
/// folder, once, without the temporary file's name; a credential's path
/// says what to use outside the unit.
#[test]
fn a_key_file_in_a_missing_folder_names_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let folder = dir.path().join("not-made");
    for (key_file, folder, credential) in [
        (folder.join("key"), folder.clone(), false),
        (
            "/run/credentials/dialtone-first-day-test.service/key".into(),
            std::path::PathBuf::from("/run/credentials/dialtone-first-day-test.service"),
            true,
        ),
    ] {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.env_remove("DIALTONE_SECRETS__KEY")
            .env("DIALTONE_SECRETS__KEY_FILE", &key_file)
            .args(["token", "list"]);
        let out = run(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("the folder {} does not exist", folder.display())),
            "{err}"
        );
        // The temporary file's name is `.key.PID-RANDOM.tmp`.
        assert!(!err.contains(".key.") && !err.contains("os error"), "{err}");
        assert_eq!(err.matches("secret key file").count(), 1, "{err}");
        assert_eq!(
            err.contains("DIALTONE_SECRETS__KEY_FILE") && err.contains("only while its unit runs"),
            credential,
            "{err}"
        );
    }
}

/// A missing key file beside a database whose secrets another key sealed
/// is no first start: the new key made there is refused, named, and
/// removed, not left to be taken for the database's key.
#[test]
fn a_new_key_the_database_refuses_is_not_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let key_file = dir.path().join("node.key");
    let with_key_file = || {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.env_remove("DIALTONE_SECRETS__KEY")
            .env("DIALTONE_SECRETS__KEY_FILE", &key_file);
        cmd
    };
    // The demo's lines have passwords: sealed with the key made here.
    let mut demo = with_key_file();
    demo.arg("demo");
    let out = run(demo);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::rename(&key_file, dir.path().join("kept.key")).unwrap();

    let mut list = with_key_file();
    list.args(["token", "list"]);
    let out = run(list);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("secret key file {}", key_file.display()))
            && err.contains("sealed with another key")
            && err.contains("removed it again"),
        "{err}"
    );
    assert!(!key_file.exists(), "the refused key was left: {err}");
}

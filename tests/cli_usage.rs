//! Exit 2 for a command line that asks for what cannot be done, whether
//! clap finds it or the command does; exit 1 for work that failed.

mod common;

use common::*;

/// A database nothing listens for: a command that opened it before
/// checking its arguments would fail with 1, naming the connection.
fn unreachable_database() -> String {
    format!("postgres://dialtone@127.0.0.1:{}/none", free_addr().port())
}

#[test]
fn usage_errors_exit_2_naming_the_problem_before_the_database_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let url = unreachable_database();
    let target = format!("tftp://{}", free_udp_addr());
    let cases: [(&[&str], &[&str]); 9] = [
        (&["render"], &["required", "<MAC|--all>"]),
        (&["render", "zz:zz"], &["\"zz:zz\""]),
        (&["render", "--out", "x"], &["required", "<MAC|--all>"]),
        (
            &["token", "create", "--scope", "global-admin", "--name", ""],
            &["--name must be 1 to 100 characters"],
        ),
        (
            &[
                "token",
                "create",
                "--scope",
                "tenant-admin",
                "--name",
                "ops",
            ],
            &["--scope tenant-admin needs --tenant"],
        ),
        (
            &[
                "token",
                "create",
                "--scope",
                "global-admin",
                "--tenant",
                "acme",
                "--name",
                "ops",
            ],
            &["--scope global-admin", "leave out --tenant"],
        ),
        (
            &[
                "phlem", "run", "--quiet", "--target", &target, "--shard", "3/2",
            ],
            &["--shard \"3/2\"", "1 <= i <= n"],
        ),
        (
            &[
                "phlem",
                "run",
                "--quiet",
                "--target",
                &target,
                "--arrival",
                "nope",
            ],
            &["--arrival \"nope\"", "storm"],
        ),
        (
            &["phlem", "run", "--quiet", "--target", "bogus://x"],
            &["--target \"bogus://x\"", "tftp://HOST:PORT"],
        ),
    ];
    // Every case is run and every wrong one named, not just the first.
    let mut wrong = Vec::new();
    for (args, named) in cases {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.args(args);
        let out = run(cmd);
        let err = text(&out.stderr);
        let right = out.status.code() == Some(2)
            && named.iter().all(|part| err.contains(part))
            && !err.contains("database")
            && text(&out.stdout).trim().is_empty();
        if !right {
            wrong.push(format!("{args:?} exited {:?}: {err}", out.status.code()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The same commands, asked rightly, still fail with 1 when the work
/// cannot be done.
#[test]
fn runtime_errors_still_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let url = unreachable_database();
    for args in [
        &["render", "001565000001"][..],
        &[
            "token",
            "create",
            "--scope",
            "tenant-admin",
            "--tenant",
            "acme",
            "--name",
            "ops",
        ],
    ] {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.args(args);
        let out = run(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot reach database"), "{args:?}: {err}");
    }
}

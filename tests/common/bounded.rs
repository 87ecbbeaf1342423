//! One-shot commands run to their end, but never past a bound: a child that
//! should have exited (a start meant to fail, an import) and instead serves
//! or hangs is killed, and the test fails naming it and showing its stderr,
//! rather than holding the whole run until nextest's own timeout.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Far above any one-shot command these tests run (the slowest whole test
/// takes about 23 s in CI), so only a hang reaches it.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// A `serve` meant to fail does so before or at binding, in well under a
/// second; one that instead comes up is serving and would never exit.
pub const FAILED_START_LIMIT: Duration = Duration::from_secs(30);

pub fn run(cmd: Command) -> Output {
    run_within(cmd, COMMAND_LIMIT)
}

/// `serve` (or any command) that must exit by itself, as a failed start does.
pub fn run_start_meant_to_fail(cmd: Command) -> Output {
    run_within(cmd, FAILED_START_LIMIT)
}

pub fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    wait_within(child, limit, &describe(&cmd))
}

/// The command with `input` on its standard input, bounded like `run`.
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A writer of its own: a child that stops reading must not block the
    // wait below, which is what ends it.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    wait_within(child, COMMAND_LIMIT, &describe(&cmd))
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Waits for `child` to exit, reading its piped stdout and stderr meanwhile
/// (a full pipe would stall it); past `limit` it is killed and the test
/// fails.
pub fn wait_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            // A grandchild may still hold the pipe: take what came, briefly.
            let stderr = stderr
                .recv_timeout(Duration::from_secs(2))
                .unwrap_or_default();
            panic!(
                "`{what}` did not exit within {limit:?} and was killed; its stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest = |pipe: mpsc::Receiver<Vec<u8>>, name: &str| {
        let left = deadline.saturating_duration_since(Instant::now());
        pipe.recv_timeout(left.max(Duration::from_secs(2)))
            .unwrap_or_else(|_| panic!("`{what}` exited but its {name} stayed open"))
    };
    Output {
        status,
        stdout: rest(stdout, "stdout"),
        stderr: rest(stderr, "stderr"),
    }
}

fn read_all(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(bytes);
    });
    rx
}

//! A static file the server cannot read at once never holds up anyone
//! else's transfer. Once, opens and reads ran on the listener's thread: a
//! FIFO put in an indexed file's place kept that thread in its open for
//! good (as a hard NFS mount whose server is gone does), and every
//! tenant's phones timed out. Now it is refused with an error packet, and
//! a phone's config asked for meanwhile is served as ever.

mod common;
#[macro_use]
mod tftp_support;

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use common::*;
use dialtone_tftp::tftp::TftpOptions;
use tftp_support::*;

both_modes!(
    a_fifo_in_a_static_files_place_is_refused_and_others_are_served,
    a_static_file_is_served_whole_from_its_read_ahead,
);

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// At its drop, opens the FIFO for writing and closes it, so an open of
/// it that blocks (the server's, before the fix) returns and the server
/// can be stopped: a failing test fails rather than hangs.
struct Unblock(PathBuf);

impl Drop for Unblock {
    fn drop(&mut self) {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0);
    }
}

/// The first answer to a request for `file`: an ERROR's code and text.
fn refusal(server: SocketAddr, file: &str) -> (u16, String) {
    error_of(server, &request(1, file, &[("tsize", "0")]))
}

fn firmware(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

async fn a_fifo_in_a_static_files_place_is_refused_and_others_are_served(mode: Mode) {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (unwritten, held) = (dir.path().join("fw.bin"), dir.path().join("held.bin"));
    std::fs::write(&unwritten, firmware(100_000)).unwrap();
    std::fs::write(&held, firmware(100_000)).unwrap();
    assert_eq!(f.provisioner.reload_static(dir.path()).unwrap(), 2);
    // Replaced since they were indexed: one FIFO nothing opens for
    // writing (a plain open waits for a writer), one the test holds open
    // for writing and never writes to (a read would wait for data).
    for fifo in [&unwritten, &held] {
        std::fs::remove_file(fifo).unwrap();
        mkfifo(fifo);
    }
    let _writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&held)
        .unwrap();
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let _unblock = (Unblock(unwritten.clone()), Unblock(held.clone()));
    let addr = server.addr;
    let config = expected(&f, "001565000001.cfg");
    let (refused, held_refused, served) = tokio::task::spawn_blocking(move || {
        let asking = client();
        asking
            .send_to(&request(1, "fw.bin", &[("tsize", "0")]), addr)
            .unwrap();
        // Meanwhile, another phone's config.
        let (served, _, _) = fetch_raw(addr, "001565000001.cfg", &[]);
        let (reply, _) = recv(&asking);
        let refused = (
            u16::from_be_bytes([reply[0], reply[1]]),
            String::from_utf8_lossy(&reply[4..])
                .trim_end_matches('\0')
                .to_string(),
        );
        (refused, refusal(addr, "held.bin"), served)
    })
    .await
    .unwrap();
    assert_eq!(served, config, "{mode:?}");
    assert_eq!(refused, (5, "internal error".to_string()), "{mode:?}");
    assert_eq!(held_refused, (0, "internal error".to_string()), "{mode:?}");
}

/// A file several times the read-ahead, in windows: every byte arrives,
/// in order, with the tsize it had when opened.
async fn a_static_file_is_served_whole_from_its_read_ahead(mode: Mode) {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let body = firmware(300_001);
    std::fs::write(dir.path().join("sip.ld"), &body).unwrap();
    assert_eq!(f.provisioner.reload_static(dir.path()).unwrap(), 1);
    let server = Server::start(mode, f.provisioner.clone(), TftpOptions::default());
    let addr = server.addr;
    let fetched = tokio::task::spawn_blocking(move || {
        [
            fetch_raw(addr, "sip.ld", &[]),
            fetch_raw(
                addr,
                "sip.ld",
                &[("blksize", "1428"), ("windowsize", "8"), ("tsize", "0")],
            ),
        ]
    })
    .await
    .unwrap();
    for (data, oack, _) in fetched {
        assert!(
            data == body,
            "{mode:?}: {} bytes of {}",
            data.len(),
            body.len()
        );
        if !oack.is_empty() {
            assert!(
                oack.contains(&("tsize".into(), "300001".into())),
                "{oack:?}"
            );
        }
    }
}

//! The TFTP server's shutdown: during the grace period every request is
//! answered (a write as ever, a read with "shutting down"), and a transfer
//! still running when it ends is told so, so the phone tries elsewhere at
//! once instead of waiting out its timeouts.

mod common;
#[macro_use]
mod tftp_support;

use std::time::{Duration, Instant};

use common::*;
use dialtone_tftp::tftp::TftpOptions;
use tftp_support::*;

both_modes!(the_drain_answers_every_request_and_tells_the_transfers_it_cuts);

async fn the_drain_answers_every_request_and_tells_the_transfers_it_cuts(mode: Mode) {
    let f = Fixture::new().await;
    let grace = Duration::from_millis(1500);
    let server = Server::start(
        mode,
        f.provisioner.clone(),
        TftpOptions {
            shutdown_grace: grace,
            ..Default::default()
        },
    );
    let addr = server.addr;
    // A phone whose transfer outlasts the grace: it acknowledged a block
    // (so it is resent to for ~10 s) and then went quiet.
    let phone = client();
    phone
        .send_to(&request(1, "001565000001.cfg", &[("blksize", "8")]), addr)
        .unwrap();
    let (oack, peer) = recv(&phone);
    assert_eq!(oack[1], 6);
    ack(&phone, peer, 0);
    let (block, _) = recv(&phone);
    assert_eq!(block[..4], [0, 3, 0, 1]);
    let cut_by = Instant::now();
    let thread = server.shut_down();
    // Single-port, the listener without a transfer has ended by now: what
    // arrives meanwhile goes to the one that drains.
    std::thread::sleep(Duration::from_millis(300));

    let (code, text) = error_of(addr, &request(2, "001565000001.cfg", &[]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("Read-only server"), "{text}");
    let (code, text) = error_of(addr, &request(1, "001565000002.cfg", &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("shutting down"), "{text}");

    let told = loop {
        let (p, from) = recv(&phone);
        if p[1] == 5 {
            assert_eq!(from, peer, "the error comes from the transfer's port");
            break String::from_utf8_lossy(&p[4..]).into_owned();
        }
        assert_eq!(p[1], 3, "{p:?}");
    };
    assert!(told.contains("shutting down"), "{told}");
    let waited = cut_by.elapsed();
    assert!(waited >= grace, "cut before the grace was over: {waited:?}");
    let ended = tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap();
    assert!(matches!(ended, Ok(Ok(()))), "a clean stop: {ended:?}");
}

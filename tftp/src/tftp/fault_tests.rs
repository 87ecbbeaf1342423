//! A panic while a request is provisioned costs that request, never the
//! listener: the client gets an error packet and the next request, from
//! it or anyone else, is served. Both modes, both places a panic can
//! happen (the first poll, on the listener, and a render continued as a
//! task). The panics are injected by file name, in test builds only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::{Mirror, SecretKey};
use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::{bind, spawn, TftpOptions};
use crate::{ProvisionOptions, Provisioner, Shipped};

/// Panics on the first poll.
const PANIC_AT_ONCE: &str = "fault-injection-panic-at-once.cfg";
/// Panics after yielding once, so that the single-port listener has
/// handed it to a task of its own by then.
const PANIC_LATER: &str = "fault-injection-panic-later.cfg";

pub(super) async fn inject(file: &str) {
    if file == PANIC_AT_ONCE {
        panic!("injected by a test: {file}");
    }
    if file == PANIC_LATER {
        tokio::task::yield_now().await;
        panic!("injected by a test: {file}");
    }
}

fn rrq(file: &str) -> Vec<u8> {
    let mut packet = vec![0, 1];
    packet.extend_from_slice(file.as_bytes());
    packet.push(0);
    packet.extend_from_slice(b"octet\0");
    packet
}

/// The first answer to `file`: its opcode, and an error packet's code
/// and message.
async fn ask(server: SocketAddr, from: &str, file: &str) -> (u16, u16, String) {
    let client = UdpSocket::bind(format!("{from}:0")).await.unwrap();
    client.send_to(&rrq(file), server).await.unwrap();
    let mut buf = [0u8; 1024];
    let (len, _) = timeout(Duration::from_secs(10), client.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer to {file} from {from}"))
        .unwrap();
    assert!(len >= 4, "{:?}", &buf[..len]);
    let opcode = u16::from_be_bytes([buf[0], buf[1]]);
    let code = u16::from_be_bytes([buf[2], buf[3]]);
    let message = String::from_utf8_lossy(&buf[4..len])
        .trim_end_matches('\0')
        .to_string();
    (opcode, code, message)
}

async fn panics_cost_one_request(single_port: bool) {
    let options = TftpOptions {
        single_port,
        listeners: 1,
        ..TftpOptions::default()
    };
    let bound = bind("127.0.0.1:0".parse().unwrap(), &options).unwrap();
    let server = bound.local_addr().unwrap();
    let key = SecretKey::parse(&"11".repeat(32)).unwrap();
    let provisioner = Arc::new(Provisioner::new(
        Arc::new(Mirror::new()),
        key,
        Shipped::built_in(1),
        ProvisionOptions::default(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = spawn(bound, provisioner, options, async {
        let _ = stopped.await;
    })
    .unwrap();

    for (i, file) in [PANIC_AT_ONCE, PANIC_LATER, PANIC_AT_ONCE]
        .into_iter()
        .enumerate()
    {
        let from = format!("127.0.0.{}", 10 + i);
        let (opcode, code, message) = ask(server, &from, file).await;
        assert_eq!(
            (opcode, code, message.as_str()),
            (5, 0, "internal error"),
            "{file} in single_port={single_port}"
        );
        // The same client, and another, are answered next.
        for from in [from.as_str(), "127.0.0.99"] {
            let (opcode, _, _) = ask(server, from, "no-such-file.cfg").await;
            assert_eq!(opcode, 5, "an answer after the panic, from {from}");
        }
    }
    assert!(!thread.is_finished(), "the listener is still running");
    let _ = stop.send(());
    let ended = tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap();
    assert!(matches!(ended, Ok(Ok(()))), "a clean stop: {ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioning_panic_costs_one_request_on_ported_tftp() {
    panics_cost_one_request(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioning_panic_costs_one_request_on_single_port_tftp() {
    panics_cost_one_request(true).await;
}

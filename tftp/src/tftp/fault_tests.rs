//! A panic while a request is provisioned, or while its transfer runs,
//! costs that request, never the listener: the client gets an error packet
//! and the next request, from it or anyone else, is served. Both modes,
//! every place a panic can happen: the first poll (on the listener), a
//! render continued as a task, and the transfer's state machine as it
//! starts and on an acknowledgement. The panics are injected in test
//! builds only, by file name and by the bytes sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::{Mirror, SecretKey};
use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::transfer::Source;
use super::{bind, spawn, TftpOptions};
use crate::{ProvisionOptions, Provisioner, Shipped};

/// Panics on the first poll.
const PANIC_AT_ONCE: &str = "fault-injection-panic-at-once.cfg";
/// Panics after yielding once, so that the single-port listener has
/// handed it to a task of its own by then.
const PANIC_LATER: &str = "fault-injection-panic-later.cfg";
/// Is served [`PANIC_ON_START`], whose transfer panics as it starts.
const PANIC_AT_START: &str = "fault-injection-panic-at-start.cfg";
const PANIC_ON_START: &[u8] = b"fault injection: the transfer panics when it starts";
/// Is served [`PANIC_ON_ACK`], whose transfer panics on its first
/// acknowledgement.
const PANIC_IN_TRANSFER: &str = "fault-injection-panic-in-transfer.cfg";
const PANIC_ON_ACK: &[u8] = b"fault injection: the transfer panics when this is acknowledged";

/// Called before provisioning: panics, or serves a file of its own.
pub(super) async fn inject(file: &str) -> Option<Source> {
    if file == PANIC_AT_ONCE {
        panic!("injected by a test: {file}");
    }
    if file == PANIC_LATER {
        tokio::task::yield_now().await;
        panic!("injected by a test: {file}");
    }
    match file {
        PANIC_AT_START => Some(Source::Memory(PANIC_ON_START.into())),
        PANIC_IN_TRANSFER => Some(Source::Memory(PANIC_ON_ACK.into())),
        _ => None,
    }
}

/// Called as a transfer starts, with what it is to send.
pub(super) fn on_start(source: &Source) {
    if matches!(source, Source::Memory(body) if **body == *PANIC_ON_START) {
        panic!("injected by a test: the start of {PANIC_AT_START}");
    }
}

/// Called by a transfer on each acknowledgement, with the oldest packet
/// not yet acknowledged.
pub(super) fn on_ack(oldest: Option<&[u8]>) {
    if oldest.is_some_and(|packet| packet.get(4..) == Some(PANIC_ON_ACK)) {
        panic!("injected by a test: an acknowledgement of {PANIC_IN_TRANSFER}");
    }
}

fn rrq(file: &str) -> Vec<u8> {
    let mut packet = vec![0, 1];
    packet.extend_from_slice(file.as_bytes());
    packet.push(0);
    packet.extend_from_slice(b"octet\0");
    packet
}

/// An opcode, and an error packet's code and message.
fn parse(packet: &[u8]) -> (u16, u16, String) {
    assert!(packet.len() >= 4, "{packet:?}");
    let opcode = u16::from_be_bytes([packet[0], packet[1]]);
    let code = u16::from_be_bytes([packet[2], packet[3]]);
    let message = String::from_utf8_lossy(&packet[4..])
        .trim_end_matches('\0')
        .to_string();
    (opcode, code, message)
}

async fn receive(client: &UdpSocket, what: &str) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 1024];
    let (len, from) = timeout(Duration::from_secs(10), client.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer: {what}"))
        .unwrap();
    (buf[..len].to_vec(), from)
}

/// The first answer to `file`.
async fn ask(server: SocketAddr, from: &str, file: &str) -> (u16, u16, String) {
    let client = UdpSocket::bind(format!("{from}:0")).await.unwrap();
    client.send_to(&rrq(file), server).await.unwrap();
    let (packet, _) = receive(&client, &format!("{file} from {from}")).await;
    parse(&packet)
}

/// Asks for [`PANIC_IN_TRANSFER`], acknowledges its first block, and
/// returns the answer to that acknowledgement.
async fn acknowledge(server: SocketAddr, from: &str) -> (u16, u16, String) {
    let client = UdpSocket::bind(format!("{from}:0")).await.unwrap();
    client
        .send_to(&rrq(PANIC_IN_TRANSFER), server)
        .await
        .unwrap();
    let (data, transfer) = receive(&client, "the first block").await;
    assert_eq!(&data[..4], [0, 3, 0, 1], "block 1 first");
    assert_eq!(&data[4..], PANIC_ON_ACK);
    client.send_to(&[0, 4, 0, 1], transfer).await.unwrap();
    let (answer, answered_from) = receive(&client, "the acknowledgement").await;
    assert_eq!(answered_from, transfer, "answered by the transfer");
    parse(&answer)
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

    for (i, file) in [
        PANIC_AT_ONCE,
        PANIC_LATER,
        PANIC_AT_START,
        PANIC_IN_TRANSFER,
        PANIC_AT_ONCE,
    ]
    .into_iter()
    .enumerate()
    {
        let from = format!("127.0.0.{}", 10 + i);
        let (opcode, code, message) = if file == PANIC_IN_TRANSFER {
            acknowledge(server, &from).await
        } else {
            ask(server, &from, file).await
        };
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
async fn a_panic_costs_one_request_on_ported_tftp() {
    panics_cost_one_request(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_costs_one_request_on_single_port_tftp() {
    panics_cost_one_request(true).await;
}

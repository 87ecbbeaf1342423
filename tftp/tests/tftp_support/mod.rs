//! A TFTP server in either mode and a raw client, shared by the TFTP tests.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::Fixture;
use dialtone_tftp::tftp::{self, TftpOptions};
use dialtone_tftp::{Provisioner, Request};

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// Every test runs in both modes (see `both_modes!`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    /// A port per transfer, the default.
    Ported,
    /// Every transfer from the listening port; two listeners share it.
    SinglePort,
}

/// `name::ported` and `name::single_port` for each test `name(mode)`.
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn ported() {
                super::$name(super::Mode::Ported).await
            }
            #[tokio::test]
            async fn single_port() {
                super::$name(super::Mode::SinglePort).await
            }
        }
    )*};
}

impl Server {
    pub fn start(mode: Mode, provisioner: Arc<Provisioner>, options: TftpOptions) -> Server {
        Server::start_on("127.0.0.1:0", mode, provisioner, options)
    }

    pub fn start_on(
        addr: &str,
        mode: Mode,
        provisioner: Arc<Provisioner>,
        options: TftpOptions,
    ) -> Server {
        let options = TftpOptions {
            single_port: mode == Mode::SinglePort,
            listeners: 2,
            ..options
        };
        let socket = tftp::bind(addr.parse().unwrap(), &options).unwrap();
        let addr = socket.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = tftp::spawn(socket, provisioner, options, async move {
            let _ = stopped.await;
        })
        .unwrap();
        Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Server {
    /// Begins the shutdown (the drain) without waiting for it to end: the
    /// server's thread, to join when it has.
    pub fn shut_down(mut self) -> std::thread::JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().expect("running").send(());
        self.thread.take().expect("running")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn expected(f: &Fixture, file: &str) -> Vec<u8> {
    f.provisioner
        .provision(&Request {
            path: file,
            user_agent: None,
            ..Default::default()
        })
        .unwrap()
        .body
        .to_vec()
}

// ---- a raw client ----

pub fn request(opcode: u8, file: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, opcode];
    for part in [file, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
    {
        p.extend_from_slice(part.as_bytes());
        p.push(0);
    }
    p
}

pub fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

pub fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = s.recv_from(&mut buf).expect("server answered in time");
    buf.truncate(n);
    (buf, from)
}

pub fn ack(s: &UdpSocket, to: SocketAddr, block: u16) {
    let b = block.to_be_bytes();
    s.send_to(&[0, 4, b[0], b[1]], to).unwrap();
}

/// Reads a file with the given options; returns the bytes, the OACK options
/// and how many DATA packets arrived.
pub fn fetch_raw(
    server: SocketAddr,
    file: &str,
    options: &[(&str, &str)],
) -> (Vec<u8>, Vec<(String, String)>, usize) {
    let s = client();
    s.send_to(&request(1, file, options), server).unwrap();
    let blksize: usize = options
        .iter()
        .find(|(k, _)| *k == "blksize")
        .map_or(512, |(_, v)| v.parse().unwrap());
    let window: u16 = options
        .iter()
        .find(|(k, _)| *k == "windowsize")
        .map_or(1, |(_, v)| v.parse().unwrap());
    let (mut packet, peer) = recv(&s);
    let mut oack = Vec::new();
    if packet[1] == 6 {
        let fields: Vec<String> = packet[2..]
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| String::from_utf8_lossy(f).into())
            .collect();
        oack = fields
            .chunks(2)
            .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
            .collect();
        ack(&s, peer, 0);
        packet = recv(&s).0;
    }
    let (mut data, mut expected_block, mut packets) = (Vec::new(), 1u16, 0usize);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "transfer did not finish");
        assert_eq!(packet[1], 3, "expected DATA, got {packet:?}");
        let block = u16::from_be_bytes([packet[2], packet[3]]);
        packets += 1;
        let last = packet.len() - 4 < blksize;
        if block == expected_block {
            data.extend_from_slice(&packet[4..]);
            if last || block % window == 0 {
                ack(&s, peer, block);
            }
            expected_block = expected_block.wrapping_add(1);
        }
        if last && block == expected_block.wrapping_sub(1) {
            return (data, oack, packets);
        }
        packet = recv(&s).0;
    }
}

pub fn error_of(server: SocketAddr, packet: &[u8]) -> (u16, String) {
    let s = client();
    s.send_to(packet, server).unwrap();
    let (reply, _) = recv(&s);
    assert_eq!(reply[1], 5, "expected an ERROR packet, got {reply:?}");
    let code = u16::from_be_bytes([reply[2], reply[3]]);
    (
        code,
        String::from_utf8_lossy(&reply[4..])
            .trim_end_matches('\0')
            .to_string(),
    )
}

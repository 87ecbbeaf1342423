//! phlem's TFTP client, on tokio: RFC 1350 reads with the option extension
//! (RFC 2347), blksize (2348), tsize (2349) and windowsize (7440),
//! retransmission on timeout, and at most one re-ACK per stall so that
//! duplicates never start a Sorcerer's Apprentice storm. One port and one
//! buffer per transfer; nothing is allocated per packet.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// The TFTP flags `phlem run` and `phlem fetch` share.
#[derive(clap::Args, Clone, Debug)]
pub struct TftpArgs {
    /// Block size to ask for (RFC 2348).
    #[arg(long)]
    pub blksize: Option<u16>,
    /// Window size to ask for (RFC 7440).
    #[arg(long)]
    pub windowsize: Option<u16>,
    /// Ask for the transfer size and check it (RFC 2349).
    #[arg(long)]
    pub tsize: bool,
    /// Retransmission timeout in milliseconds (for HTTP, the request
    /// timeout is five times this).
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Retransmissions before a transfer fails.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

impl TftpArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    pub fn options(&self) -> TftpOptions {
        TftpOptions {
            blksize: self.blksize,
            windowsize: self.windowsize,
            tsize: self.tsize,
            timeout: self.timeout(),
            retries: self.retries,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TftpOptions {
    /// Requested block size; `None` asks for nothing (512).
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    /// Ask the server for the file size and check it.
    pub tsize: bool,
    pub timeout: Duration,
    pub retries: u32,
}

impl Default for TftpOptions {
    fn default() -> Self {
        TftpOptions {
            blksize: None,
            windowsize: None,
            tsize: false,
            timeout: Duration::from_secs(1),
            retries: 5,
        }
    }
}

#[derive(Debug)]
pub struct Transfer {
    pub bytes: Vec<u8>,
    pub retransmits: u32,
    pub elapsed: Duration,
    /// Block size and window the transfer ran with.
    pub blksize: u16,
    pub windowsize: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("server error {code}: {message}")]
    Server { code: u16, message: String },
    #[error("timed out after {0} retransmissions")]
    Timeout(u32),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

fn request(file: &str, options: &TftpOptions) -> Vec<u8> {
    let mut packet = Vec::with_capacity(64 + file.len());
    packet.extend_from_slice(&RRQ.to_be_bytes());
    for part in [file, "octet"] {
        packet.extend_from_slice(part.as_bytes());
        packet.push(0);
    }
    let mut option = |name: &str, value: String| {
        packet.extend_from_slice(name.as_bytes());
        packet.push(0);
        packet.extend_from_slice(value.as_bytes());
        packet.push(0);
    };
    if let Some(b) = options.blksize {
        option("blksize", b.to_string());
    }
    if let Some(w) = options.windowsize {
        option("windowsize", w.to_string());
    }
    if options.tsize {
        option("tsize", "0".into());
    }
    packet
}

fn ack(block: u16) -> [u8; 4] {
    let mut packet = [0u8; 4];
    packet[..2].copy_from_slice(&ACK.to_be_bytes());
    packet[2..].copy_from_slice(&block.to_be_bytes());
    packet
}

fn error_packet(code: u16, message: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(5 + message.len());
    packet.extend_from_slice(&ERROR.to_be_bytes());
    packet.extend_from_slice(&code.to_be_bytes());
    packet.extend_from_slice(message.as_bytes());
    packet.push(0);
    packet
}

/// The options an OACK acknowledged, as (name lower-cased, value).
fn parse_oack(body: &[u8]) -> Result<Vec<(String, String)>, TftpError> {
    let parts: Vec<&[u8]> = body.split(|b| *b == 0).collect();
    // A trailing NUL leaves one empty part at the end.
    let parts = match parts.split_last() {
        Some((&[], rest)) => rest,
        _ => return Err(TftpError::Protocol("OACK not NUL-terminated".into())),
    };
    if parts.len() % 2 != 0 {
        return Err(TftpError::Protocol(
            "OACK with an odd number of fields".into(),
        ));
    }
    Ok(parts
        .chunks(2)
        .map(|kv| {
            (
                String::from_utf8_lossy(kv[0]).to_ascii_lowercase(),
                String::from_utf8_lossy(kv[1]).into_owned(),
            )
        })
        .collect())
}

/// Emulated phones share one IP address, so a port one of them just used
/// must not serve the next one while the server may still be closing that
/// transfer (a real phone's address would differ). Each socket rests this
/// long after its transfer.
const PORT_QUARANTINE: Duration = Duration::from_millis(500);

/// Rested sockets kept for reuse, at most.
const POOL_LIMIT: usize = 8192;

/// Sockets that finished a transfer, oldest first. Reusing one after its
/// quarantine saves the `socket`, `bind`, `close` and the two `epoll_ctl`
/// calls a fresh one costs: a third of phlem's system calls per transfer.
/// Each entry: when it was released, whether it is IPv4, the socket.
static POOL: std::sync::Mutex<std::collections::VecDeque<(Instant, bool, UdpSocket)>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// A socket for talking to `server` from a fresh ephemeral port.
pub async fn socket_for(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("valid wildcard");
    UdpSocket::bind(local).await
}

/// A rested socket of `server`'s address family with nothing left queued,
/// or a fresh one.
async fn pooled_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let rested = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        match pool.front() {
            Some((since, ipv4, _))
                if since.elapsed() >= PORT_QUARANTINE && *ipv4 == server.is_ipv4() =>
            {
                pool.pop_front().map(|(_, _, socket)| socket)
            }
            _ => None,
        }
    };
    match rested {
        Some(socket) => {
            // Late duplicates of its last transfer must not start the next.
            let mut sink = [0u8; 4];
            while socket.try_recv_from(&mut sink).is_ok() {}
            Ok(socket)
        }
        None => socket_for(server).await,
    }
}

fn rest(socket: UdpSocket, ipv4: bool) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_LIMIT {
        pool.push_back((Instant::now(), ipv4, socket));
    }
}

/// Reads `file` from `server` from a port of its own for this transfer.
pub async fn get(
    server: SocketAddr,
    file: &str,
    options: &TftpOptions,
) -> Result<Transfer, TftpError> {
    let socket = pooled_socket(server).await?;
    let result = get_on(&socket, server, file, options).await;
    rest(socket, server.is_ipv4());
    result
}

/// Reads `file` from `server` on `socket`: a phone that keeps its source
/// port for every file of its boot.
pub async fn get_on(
    socket: &UdpSocket,
    server: SocketAddr,
    file: &str,
    options: &TftpOptions,
) -> Result<Transfer, TftpError> {
    let started = Instant::now();
    let rrq = request(file, options);
    socket.send_to(&rrq, server).await?;

    let mut blksize: u16 = 512;
    let mut windowsize: u16 = 1;
    let mut expected_size: Option<u64> = None;
    let mut peer: Option<SocketAddr> = None;
    let mut bytes = Vec::new();
    // The last block received in order, and how many of the current window.
    let mut last: u16 = 0;
    let mut in_window: u16 = 0;
    let mut retransmits = 0u32;
    let mut tries = 0u32;
    // When we last re-ACKed `last` because of an unexpected block.
    let mut reacked: Option<(u16, Instant)> = None;
    // Room for the largest block we asked for, plus one byte to notice a
    // server that sends more.
    let mut buf = vec![0u8; usize::from(options.blksize.unwrap_or(512).max(512)) + 5];

    loop {
        let received = tokio::time::timeout(options.timeout, socket.recv_from(&mut buf)).await;
        let (len, from) = match received {
            Ok(result) => result?,
            Err(_) => {
                tries += 1;
                if tries > options.retries {
                    return Err(TftpError::Timeout(retransmits));
                }
                retransmits += 1;
                match peer {
                    None => socket.send_to(&rrq, server).await?,
                    Some(peer) => socket.send_to(&ack(last), peer).await?,
                };
                in_window = 0;
                continue;
            }
        };
        if len < 4 {
            continue;
        }
        match peer {
            None if from.ip() == server.ip() => peer = Some(from),
            Some(p) if p == from => {}
            _ => {
                // Another transfer's packet (RFC 1350: unknown TID).
                let _ = socket
                    .send_to(&error_packet(5, "unknown transfer ID"), from)
                    .await;
                continue;
            }
        }
        let peer_addr = from;
        let opcode = u16::from_be_bytes([buf[0], buf[1]]);
        match opcode {
            ERROR => {
                let code = u16::from_be_bytes([buf[2], buf[3]]);
                let message = String::from_utf8_lossy(&buf[4..len])
                    .trim_end_matches('\0')
                    .to_string();
                return Err(TftpError::Server { code, message });
            }
            OACK if bytes.is_empty() && last == 0 => {
                for (name, value) in parse_oack(&buf[2..len])? {
                    let bad = || TftpError::Protocol(format!("OACK {name}={value:?}"));
                    match name.as_str() {
                        "blksize" => blksize = value.parse().map_err(|_| bad())?,
                        "windowsize" => windowsize = value.parse().map_err(|_| bad())?,
                        "tsize" => expected_size = Some(value.parse().map_err(|_| bad())?),
                        _ => {}
                    }
                }
                // A server may lower the block size, never raise it (RFC 2348).
                let asked = options.blksize.unwrap_or(512).max(512);
                if !(8..=asked).contains(&blksize) || windowsize == 0 {
                    return Err(TftpError::Protocol("OACK values out of range".into()));
                }
                tries = 0;
                socket.send_to(&ack(0), peer_addr).await?;
            }
            DATA => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                let payload = &buf[4..len];
                if block == last.wrapping_add(1) {
                    tries = 0;
                    if payload.len() > blksize as usize {
                        return Err(TftpError::Protocol(format!(
                            "block of {} bytes with blksize {blksize}",
                            payload.len()
                        )));
                    }
                    bytes.extend_from_slice(payload);
                    last = block;
                    in_window += 1;
                    let done = payload.len() < blksize as usize;
                    if done || in_window >= windowsize {
                        socket.send_to(&ack(last), peer_addr).await?;
                        in_window = 0;
                    }
                    if done {
                        if let Some(size) = expected_size {
                            if size != bytes.len() as u64 {
                                return Err(TftpError::Protocol(format!(
                                    "tsize said {size} bytes, got {}",
                                    bytes.len()
                                )));
                            }
                        }
                        return Ok(Transfer {
                            bytes,
                            retransmits,
                            elapsed: started.elapsed(),
                            blksize,
                            windowsize,
                        });
                    }
                } else {
                    // A duplicate or a gap: say once where we are, then wait
                    // for the server to resend from there.
                    let now = Instant::now();
                    let recent =
                        reacked.is_some_and(|(b, at)| b == last && now - at < options.timeout / 2);
                    if !recent {
                        socket.send_to(&ack(last), peer_addr).await?;
                        reacked = Some((last, now));
                        in_window = 0;
                    }
                }
            }
            OACK => {} // a duplicate OACK; our ACK 0 is on its way or will be resent
            _ => return Err(TftpError::Protocol(format!("unexpected opcode {opcode}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_options() {
        let options = TftpOptions {
            blksize: Some(1428),
            windowsize: Some(8),
            tsize: true,
            ..Default::default()
        };
        assert_eq!(
            request("a.cfg", &options),
            b"\0\x01a.cfg\0octet\0blksize\x001428\0windowsize\x008\0tsize\x000\0"
        );
        assert_eq!(request("a", &TftpOptions::default()), b"\0\x01a\0octet\0");
    }

    #[test]
    fn oacks_parse() {
        let parsed = parse_oack(b"blksize\x001428\0TSIZE\x004500\0").unwrap();
        assert_eq!(
            parsed,
            [
                ("blksize".into(), "1428".into()),
                ("tsize".into(), "4500".into())
            ]
        );
        assert!(parse_oack(b"blksize\x001428").is_err());
        assert!(parse_oack(b"blksize\0").is_err());
    }
}

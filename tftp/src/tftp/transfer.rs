//! One read transfer on a port of its own: option negotiation, the file's
//! blocks (converted to netascii when asked), windows, retransmission, and
//! the bound on how long a transfer may go without progress.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::limits::Slot;
use super::packet::{error_packet, oack_packet, ReadRequest, OP_ACK, OP_DATA, OP_ERROR};
use super::TftpOptions;

pub(super) enum Source {
    Memory(Arc<[u8]>),
    File { path: std::path::PathBuf, len: u64 },
}

/// The stored bytes, read in order.
enum Raw {
    Memory { body: Arc<[u8]>, position: usize },
    File(tokio::io::BufReader<tokio::fs::File>),
}

impl Raw {
    /// Like `read`: 0 only at the end.
    async fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Raw::Memory { body, position } => {
                let n = out.len().min(body.len() - *position);
                out[..n].copy_from_slice(&body[*position..*position + n]);
                *position += n;
                Ok(n)
            }
            Raw::File(file) => tokio::io::AsyncReadExt::read(file, out).await,
        }
    }
}

/// Netascii (RFC 1350, after Telnet): LF goes out as CR LF and CR as
/// CR NUL, which the client turns back into the stored bytes. The second
/// byte of a pair may have to wait for the next block.
struct Netascii {
    pending: Option<u8>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// The size of `body` once converted to netascii, for tsize.
fn netascii_len(body: &[u8]) -> u64 {
    let expanded = body.iter().filter(|b| matches!(b, b'\n' | b'\r')).count();
    (body.len() + expanded) as u64
}

struct Reader {
    raw: Raw,
    netascii: Option<Netascii>,
}

impl Reader {
    /// Appends the next block to `out`: `size` bytes, fewer only at the end.
    async fn block(&mut self, out: &mut Vec<u8>, size: usize) -> io::Result<()> {
        let Some(ascii) = &mut self.netascii else {
            let start = out.len();
            out.resize(start + size, 0);
            let mut filled = 0;
            while filled < size {
                let n = self.raw.read(&mut out[start + filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            out.truncate(start + filled);
            return Ok(());
        };
        let target = out.len() + size;
        while out.len() < target {
            if let Some(b) = ascii.pending.take() {
                out.push(b);
                continue;
            }
            if ascii.start == ascii.end {
                ascii.start = 0;
                ascii.end = self.raw.read(&mut ascii.buf).await?;
                if ascii.end == 0 {
                    break;
                }
            }
            let b = ascii.buf[ascii.start];
            ascii.start += 1;
            match b {
                b'\n' => {
                    out.push(b'\r');
                    ascii.pending = Some(b'\n');
                }
                b'\r' => {
                    out.push(b'\r');
                    ascii.pending = Some(0);
                }
                b => out.push(b),
            }
        }
        Ok(())
    }
}

/// Negotiates, then sends windows of blocks until the last is
/// acknowledged. A transfer that stops making progress ends with an ERROR
/// to the client, so its slot is free again after `stall` at most.
pub(super) async fn transfer(
    options: &TftpOptions,
    local_ip: IpAddr,
    peer: SocketAddr,
    request: ReadRequest,
    source: Source,
    slot: &Slot,
) -> io::Result<()> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    socket.connect(peer).await?;
    let result = send(&socket, options, request, source, slot).await;
    if let Err(e) = &result {
        if e.kind() == io::ErrorKind::TimedOut {
            metrics::counter!("dialtone_tftp_stalled_total").increment(1);
            // A client that is merely slow learns the transfer is over
            // instead of waiting out its own timeouts.
            let _ = socket
                .send(&error_packet(0, "timed out waiting for an acknowledgement"))
                .await;
        }
    }
    result
}

async fn send(
    socket: &tokio::net::UdpSocket,
    options: &TftpOptions,
    request: ReadRequest,
    source: Source,
    slot: &Slot,
) -> io::Result<()> {
    let (raw, tsize) = match source {
        Source::Memory(body) => {
            let len = if request.netascii {
                netascii_len(&body)
            } else {
                body.len() as u64
            };
            (Raw::Memory { body, position: 0 }, Some(len))
        }
        Source::File { path, len } => (
            Raw::File(tokio::io::BufReader::new(
                tokio::fs::File::open(&path).await?,
            )),
            // The converted size of a file would cost reading it twice;
            // tsize is optional, so a netascii client goes without.
            (!request.netascii).then_some(len),
        ),
    };
    let mut reader = Reader {
        raw,
        netascii: request.netascii.then(|| Netascii {
            pending: None,
            buf: vec![0; 4096].into(),
            start: 0,
            end: 0,
        }),
    };
    let mut oack: Vec<(&str, String)> = Vec::new();
    let blksize = match request.blksize {
        Some(b) => {
            let b = b.min(options.blksize_limit.max(8));
            oack.push(("blksize", b.to_string()));
            b as usize
        }
        None => 512,
    };
    let windowsize = match request.windowsize {
        Some(w) => {
            let w = w.min(options.windowsize_limit.max(1));
            oack.push(("windowsize", w.to_string()));
            w
        }
        None => 1,
    };
    let mut pace = Pace {
        timeout: options.timeout,
        retries: options.max_send_retries,
        stall: options.stall,
    };
    if let Some(t) = request.timeout {
        // RFC 2349 lets the server only accept the client's timeout as it
        // is or decline it: past our cap it is left out of the OACK and
        // our own applies.
        let asked = Duration::from_secs(t.into());
        if asked <= options.max_timeout {
            pace.timeout = asked;
            oack.push(("timeout", t.to_string()));
        }
    }
    if let (true, Some(size)) = (request.tsize, tsize) {
        oack.push(("tsize", size.to_string()));
    }
    let mut ack_buf = [0u8; 516];
    if !oack.is_empty() {
        exchange(socket, &[oack_packet(&oack)], 0, 1, &pace, &mut ack_buf).await?;
        slot.acknowledged();
    }
    // The window: blocks sent and not yet acknowledged, oldest first.
    let mut window: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let mut base: u16 = 1;
    let mut read_all = false;
    loop {
        while !read_all && window.len() < windowsize as usize {
            let number = base.wrapping_add(window.len() as u16);
            let mut packet = Vec::with_capacity(4 + blksize);
            packet.extend_from_slice(&OP_DATA.to_be_bytes());
            packet.extend_from_slice(&number.to_be_bytes());
            reader.block(&mut packet, blksize).await?;
            read_all = packet.len() - 4 < blksize;
            window.push_back(packet);
        }
        let count = window.len() as u16;
        let acked = exchange(
            socket,
            window.make_contiguous(),
            base,
            count,
            &pace,
            &mut ack_buf,
        )
        .await?;
        slot.acknowledged();
        window.drain(..acked as usize);
        base = base.wrapping_add(acked);
        if read_all && window.is_empty() {
            return Ok(());
        }
    }
}

/// How long to wait for an ACK, how often to resend, and how long a
/// transfer may go without a new ACK at all, whatever the first two say.
struct Pace {
    timeout: Duration,
    retries: u32,
    stall: Duration,
}

/// Sends `packets` (blocks `base..base+count`; an OACK is "block 0") and
/// waits for an ACK inside that range; returns how many were acknowledged.
/// Duplicate ACKs are ignored (no Sorcerer's Apprentice); silence is
/// answered by resending, within `pace`; an ERROR from the client ends the
/// transfer at once.
async fn exchange(
    socket: &tokio::net::UdpSocket,
    packets: &[Vec<u8>],
    base: u16,
    count: u16,
    pace: &Pace,
    buf: &mut [u8],
) -> io::Result<u16> {
    let give_up = tokio::time::Instant::now() + pace.stall;
    for _ in 0..=pace.retries {
        if tokio::time::Instant::now() >= give_up {
            break;
        }
        for packet in packets {
            socket.send(packet).await?;
        }
        let deadline = (tokio::time::Instant::now() + pace.timeout).min(give_up);
        loop {
            let received = match tokio::time::timeout_at(deadline, socket.recv(buf)).await {
                Err(_) => break, // resend
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(io::Error::new(e.kind(), "client went away"))
                }
                Ok(received) => received?,
            };
            if received < 4 {
                continue;
            }
            match u16::from_be_bytes([buf[0], buf[1]]) {
                OP_ACK => {
                    let block = u16::from_be_bytes([buf[2], buf[3]]);
                    // How far into this window the ACK reaches (1..=count),
                    // with block numbers wrapping past 65535.
                    let reach = block.wrapping_sub(base).wrapping_add(1);
                    if (1..=count).contains(&reach) {
                        return Ok(reach);
                    }
                    // An old or duplicate ACK: never answered with a resend.
                }
                OP_ERROR => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "client sent an error",
                    ))
                }
                _ => {}
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "no acknowledgement",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn convert(body: &[u8], size: usize) -> Vec<Vec<u8>> {
        let mut reader = Reader {
            raw: Raw::Memory {
                body: body.into(),
                position: 0,
            },
            netascii: Some(Netascii {
                pending: None,
                buf: vec![0; 3].into(),
                start: 0,
                end: 0,
            }),
        };
        let mut blocks = Vec::new();
        loop {
            let mut block = Vec::new();
            reader.block(&mut block, size).await.unwrap();
            let last = block.len() < size;
            blocks.push(block);
            if last {
                return blocks;
            }
        }
    }

    #[tokio::test]
    async fn netascii_pairs_split_across_blocks() {
        let body = b"a\nb\rc\r\n\n";
        let blocks = convert(body, 2).await;
        let joined: Vec<u8> = blocks.concat();
        assert_eq!(joined, b"a\r\nb\r\0c\r\0\r\n\r\n");
        assert_eq!(netascii_len(body), joined.len() as u64);
        // 13 bytes in blocks of 2: six full ones, and CR's pair LF last.
        assert_eq!(blocks.len(), 7);
        assert_eq!(blocks[6], b"\n");
        // Converted to a whole number of blocks: an empty one ends it.
        assert_eq!(convert(b"ab\n", 2).await, [&b"ab"[..], b"\r\n", b""]);
    }
}

//! The TFTP front end: RFC 1350 reads with options (RFC 2347), blksize
//! (2348), tsize and timeout (2349) and windowsize (7440), on tokio. Each
//! request calls the same `provision()` core HTTP uses, which answers from
//! memory, so the listener never waits; each transfer then runs as a task
//! of its own with its own port. Transfers are capped ("busy" past the cap),
//! a client's ERROR ends its transfer at once, and duplicate ACKs never
//! trigger resends.
//!
//! It replaced async-tftp, which ignores a request from an address whose
//! previous transfer it has not wound down yet. Phones that keep one source
//! port for all their files (many do) lost most of their second and third
//! files to that, a retry timeout each (see BENCHMARKS.md).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::ProvisionError;
use crate::provision::{Protocol, Provisioner, Request};

#[derive(Clone, Debug)]
pub struct TftpOptions {
    /// Transfers in flight at once; past it, new requests get "busy".
    pub max_transfers: usize,
    /// Largest block size a client may negotiate (RFC 2348).
    pub blksize_limit: u16,
    /// Largest window a client may negotiate (RFC 7440).
    pub windowsize_limit: u16,
    /// Retransmission timeout; a client may ask for another (RFC 2349).
    pub timeout: Duration,
    /// With `timeout`, how long a vanished client holds its slot.
    pub max_send_retries: u32,
    /// SO_RCVBUF of the listening socket: a boot storm's burst of requests
    /// must queue in the kernel, not be dropped.
    pub recv_buffer: usize,
    /// At shutdown, how long running transfers get to finish; requests
    /// that arrive meanwhile are answered with an error.
    pub shutdown_grace: Duration,
}

impl Default for TftpOptions {
    fn default() -> Self {
        TftpOptions {
            max_transfers: 4096,
            blksize_limit: 1468,
            windowsize_limit: 16,
            // 2 s x (1 + 4 retries) = a dead client frees its slot in ~10 s.
            timeout: Duration::from_secs(2),
            max_send_retries: 4,
            recv_buffer: 4 << 20,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Binds the UDP socket with a large receive buffer (and SO_REUSEPORT when
/// asked, for several server instances on one port). Permission errors on
/// privileged ports say what to do about them.
pub fn bind(addr: SocketAddr, recv_buffer: usize, reuse_port: bool) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // The kernel may cap this (net.core.rmem_max); a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024 {
            io::Error::new(
                e.kind(),
                format!(
                    "port {} is privileged: run with CAP_NET_BIND_SERVICE \
                     (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE) or use a port above 1023",
                    addr.port()
                ),
            )
        } else {
            e
        }
    })?;
    Ok(socket.into())
}

/// Serves TFTP on `socket` until `shutdown` completes, on a thread of its
/// own with its own single-threaded runtime: a storm of phones never
/// competes with the HTTP side for workers, and the other way round.
pub fn spawn(
    socket: UdpSocket,
    provisioner: Arc<Provisioner>,
    options: TftpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    socket.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tftp".into())
        .spawn(move || runtime.block_on(serve(socket, provisioner, options, shutdown)))
}

/// What every transfer task shares.
struct Shared {
    provisioner: Arc<Provisioner>,
    options: TftpOptions,
    local_ip: IpAddr,
    active: AtomicUsize,
    /// Transfers by client address, with the file each is for. A second
    /// request from the same address and port for the same file is a
    /// retransmitted request and is ignored; for another file it is the
    /// phone's next file (phones often keep one source port), and it is
    /// served even if the previous transfer is still being wound down.
    in_progress: Mutex<HashMap<SocketAddr, (u64, String)>>,
    next_id: AtomicU64,
}

async fn serve(
    socket: UdpSocket,
    provisioner: Arc<Provisioner>,
    options: TftpOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let local_ip = socket.local_addr()?.ip();
    let shared = Arc::new(Shared {
        provisioner,
        options,
        local_ip,
        active: AtomicUsize::new(0),
        in_progress: Mutex::default(),
        next_id: AtomicU64::new(0),
    });
    let mut buf = vec![0u8; MAX_REQUEST];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => handle_request(&shared, &buf[..len], peer),
                // ICMP port-unreachable from an earlier send and the like:
                // about some other peer, never fatal for the listener.
                Err(e) => tracing::debug!(error = %e, "TFTP receive error"),
            },
        }
    }
    // Draining: running transfers finish within the grace period; a new
    // request gets an error at once, so the phone tries another server
    // instead of waiting out its timeout on one that will not answer.
    let deadline = tokio::time::Instant::now() + shared.options.shutdown_grace;
    let mut refused = 0u64;
    while shared.active.load(Ordering::Acquire) > 0 {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    transfers = shared.active.load(Ordering::Acquire),
                    "TFTP transfers still running at the end of the grace period"
                );
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            received = socket.recv_from(&mut buf) => if let Ok((len, peer)) = received {
                if len >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == OP_RRQ {
                    refused += 1;
                    send_error(&shared, peer, 0, "server shutting down, try again");
                }
            },
        }
    }
    if refused > 0 {
        tracing::info!(refused, "TFTP requests refused while draining");
    }
    Ok(())
}

/// The largest request we read; RRQs are a file name and a few options.
const MAX_REQUEST: usize = 2048;

/// A parsed RRQ.
struct ReadRequest {
    file: String,
    blksize: Option<u16>,
    windowsize: Option<u16>,
    tsize: bool,
    timeout: Option<u8>,
}

fn parse_request(packet: &[u8]) -> Result<ReadRequest, (u16, &'static str)> {
    let fields: Vec<&[u8]> = packet[2..].split(|b| *b == 0).collect();
    // The last field is empty: every field ends with a NUL.
    if fields.len() < 3 || !fields[fields.len() - 1].is_empty() {
        return Err((ERR_ILLEGAL, "malformed request"));
    }
    let file = std::str::from_utf8(fields[0]).map_err(|_| (ERR_NOT_FOUND, "File not found"))?;
    let mode = String::from_utf8_lossy(fields[1]).to_ascii_lowercase();
    if mode != "octet" && mode != "netascii" {
        return Err((ERR_ILLEGAL, "only octet mode is supported"));
    }
    let mut request = ReadRequest {
        file: file.to_string(),
        blksize: None,
        windowsize: None,
        tsize: false,
        timeout: None,
    };
    for pair in fields[2..fields.len() - 1].chunks(2) {
        let [name, value] = pair else { break };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = std::str::from_utf8(value).unwrap_or_default();
        // Unknown or malformed options are left out of the OACK (RFC 2347).
        match name.as_str() {
            "blksize" => {
                request.blksize = value
                    .parse()
                    .ok()
                    .filter(|b: &u16| (8..=65_464).contains(b))
            }
            "windowsize" => request.windowsize = value.parse().ok().filter(|w: &u16| *w >= 1),
            "tsize" => request.tsize = true,
            "timeout" => request.timeout = value.parse().ok().filter(|t: &u8| *t >= 1),
            _ => {}
        }
    }
    Ok(request)
}

fn handle_request(shared: &Arc<Shared>, packet: &[u8], peer: SocketAddr) {
    if packet.len() < 4 {
        return;
    }
    match u16::from_be_bytes([packet[0], packet[1]]) {
        OP_RRQ => {}
        OP_WRQ => {
            tracing::info!(client = %peer, "TFTP write refused (read-only server)");
            send_error(shared, peer, ERR_ACCESS, "Access violation");
            return;
        }
        // DATA, ACK or ERROR on the listening port belong to no transfer.
        _ => return,
    }
    let request = match parse_request(packet) {
        Ok(r) => r,
        Err((code, message)) => return send_error(shared, peer, code, message),
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut in_progress = shared.in_progress.lock().unwrap_or_else(|e| e.into_inner());
        if in_progress
            .get(&peer)
            .is_some_and(|(_, file)| *file == request.file)
        {
            return; // a retransmitted request; its transfer is running
        }
        in_progress.insert(peer, (id, request.file.clone()));
    }
    let done = Done {
        shared: shared.clone(),
        peer,
        id,
    };
    if shared.active.fetch_add(1, Ordering::AcqRel) >= shared.options.max_transfers.max(1) {
        metrics::counter!("dialtone_tftp_refused_total", "reason" => "busy").increment(1);
        // An overload refuses thousands a second: one line a second says it.
        let now = dialtone_sync::now_millis();
        if LAST_BUSY_WARNING.swap(now, Ordering::Relaxed) < now - 1000 {
            tracing::warn!(client = %peer, path = request.file, "TFTP transfer cap reached; refusing (logged once a second)");
        }
        send_error(shared, peer, 0, "server busy, try again");
        return; // `done` releases the slot and the entry
    }
    // Provisioning runs in the transfer's own task: a render (a cache miss)
    // waits for the render pool there, never on this listener.
    let shared = shared.clone();
    tokio::spawn(async move {
        let _done = done;
        let provisioned = shared
            .provisioner
            .provision_async(&Request {
                path: &request.file,
                user_agent: None,
                remote: Some(peer.ip()),
                protocol: Protocol::Tftp,
                query: None,
                auth: None,
            })
            .await;
        let source = match provisioned {
            Ok(rendered) => match &rendered.file {
                Some(file) => Source::File {
                    path: file.path.clone(),
                    len: file.len,
                },
                None => Source::Memory(rendered.body.clone()),
            },
            // A banned source learns nothing: it looks like any unknown file.
            Err(ProvisionError::NotFound | ProvisionError::Banned) => {
                return send_error(&shared, peer, ERR_NOT_FOUND, "File not found")
            }
            Err(ProvisionError::BadPath(why)) => {
                tracing::info!(client = %peer, path = request.file, reason = why, "refused TFTP path");
                return send_error(&shared, peer, ERR_ACCESS, "Access violation");
            }
            Err(ProvisionError::Busy) => {
                return send_error(&shared, peer, 0, "server busy, try again")
            }
            Err(e) => {
                tracing::error!(client = %peer, path = request.file, error = %e, "TFTP provisioning failed");
                return send_error(&shared, peer, 0, "internal error");
            }
        };
        let _active = ActiveTransfer::start();
        let started = std::time::Instant::now();
        let file = request.file.clone();
        let running = std::panic::AssertUnwindSafe(transfer(&shared, peer, request, source));
        // A panic costs this phone its transfer (the guards free its slot),
        // never the server; it is logged and counted.
        let outcome = match futures::FutureExt::catch_unwind(running).await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "TFTP transfer ended early");
                "incomplete"
            }
            Err(_) => {
                metrics::counter!("dialtone_tftp_transfer_panics_total").increment(1);
                tracing::error!(client = %peer, file, "TFTP transfer panicked");
                "panic"
            }
        };
        metrics::histogram!("dialtone_transfer_duration_seconds", "protocol" => "tftp", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
    });
}

static LAST_BUSY_WARNING: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Counts a running transfer in `dialtone_tftp_active_transfers` until
/// dropped, however the transfer ends (a panic included).
struct ActiveTransfer;

impl ActiveTransfer {
    fn start() -> ActiveTransfer {
        metrics::gauge!("dialtone_tftp_active_transfers").increment(1.0);
        ActiveTransfer
    }
}

impl Drop for ActiveTransfer {
    fn drop(&mut self) {
        metrics::gauge!("dialtone_tftp_active_transfers").decrement(1.0);
    }
}

/// Releases a transfer's slot and its in-progress entry however it ends.
struct Done {
    shared: Arc<Shared>,
    peer: SocketAddr,
    id: u64,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        let mut in_progress = self
            .shared
            .in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if in_progress
            .get(&self.peer)
            .is_some_and(|(id, _)| *id == self.id)
        {
            in_progress.remove(&self.peer);
        }
    }
}

fn error_packet(code: u16, message: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(5 + message.len());
    packet.extend_from_slice(&OP_ERROR.to_be_bytes());
    packet.extend_from_slice(&code.to_be_bytes());
    packet.extend_from_slice(message.as_bytes());
    packet.push(0);
    packet
}

/// Errors go out from a new port (a TID of their own, RFC 1350) and are
/// never retransmitted.
fn send_error(shared: &Shared, peer: SocketAddr, code: u16, message: &str) {
    let packet = error_packet(code, message);
    let local = SocketAddr::new(shared.local_ip, 0);
    tokio::spawn(async move {
        if let Ok(socket) = tokio::net::UdpSocket::bind(local).await {
            let _ = socket.send_to(&packet, peer).await;
        }
    });
}

enum Source {
    Memory(Arc<[u8]>),
    File { path: std::path::PathBuf, len: u64 },
}

/// Reads the blocks of a transfer in order.
enum Reader {
    Memory { body: Arc<[u8]>, position: usize },
    File(tokio::io::BufReader<tokio::fs::File>),
}

impl Reader {
    async fn block(&mut self, out: &mut Vec<u8>, size: usize) -> io::Result<()> {
        match self {
            Reader::Memory { body, position } => {
                let end = (*position + size).min(body.len());
                out.extend_from_slice(&body[*position..end]);
                *position = end;
            }
            Reader::File(file) => {
                use tokio::io::AsyncReadExt;
                let start = out.len();
                out.resize(start + size, 0);
                let mut filled = 0;
                while filled < size {
                    let n = file.read(&mut out[start + filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                out.truncate(start + filled);
            }
        }
        Ok(())
    }
}

/// One read transfer: negotiate, then send windows of blocks until the
/// last is acknowledged. Duplicate ACKs are ignored (no Sorcerer's
/// Apprentice); silence is answered by resending the window, a bounded
/// number of times; an ERROR from the client ends the transfer at once.
async fn transfer(
    shared: &Shared,
    peer: SocketAddr,
    request: ReadRequest,
    source: Source,
) -> io::Result<()> {
    let options = &shared.options;
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(shared.local_ip, 0)).await?;
    socket.connect(peer).await?;
    let (mut reader, size) = match source {
        Source::Memory(body) => {
            let len = body.len() as u64;
            (Reader::Memory { body, position: 0 }, len)
        }
        Source::File { path, len } => (
            Reader::File(tokio::io::BufReader::new(
                tokio::fs::File::open(&path).await?,
            )),
            len,
        ),
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
    let mut timeout = options.timeout;
    if let Some(t) = request.timeout {
        timeout = Duration::from_secs(t.into());
        oack.push(("timeout", t.to_string()));
    }
    if request.tsize {
        oack.push(("tsize", size.to_string()));
    }
    let mut ack_buf = [0u8; 516];
    if !oack.is_empty() {
        let mut packet = OP_OACK.to_be_bytes().to_vec();
        for (name, value) in &oack {
            packet.extend_from_slice(name.as_bytes());
            packet.push(0);
            packet.extend_from_slice(value.as_bytes());
            packet.push(0);
        }
        exchange(
            &socket,
            &[packet],
            0,
            1,
            timeout,
            options.max_send_retries,
            &mut ack_buf,
        )
        .await?;
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
            &socket,
            window.make_contiguous(),
            base,
            count,
            timeout,
            options.max_send_retries,
            &mut ack_buf,
        )
        .await?;
        window.drain(..acked as usize);
        base = base.wrapping_add(acked);
        if read_all && window.is_empty() {
            return Ok(());
        }
    }
}

/// Sends `packets` (blocks `base..base+count`; an OACK is "block 0") and
/// waits for an ACK inside that range; returns how many were acknowledged.
async fn exchange(
    socket: &tokio::net::UdpSocket,
    packets: &[Vec<u8>],
    base: u16,
    count: u16,
    timeout: Duration,
    retries: u32,
    buf: &mut [u8],
) -> io::Result<u16> {
    for _ in 0..=retries {
        for packet in packets {
            socket.send(packet).await?;
        }
        let deadline = tokio::time::Instant::now() + timeout;
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

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;
const ERR_NOT_FOUND: u16 = 1;
const ERR_ACCESS: u16 = 2;
const ERR_ILLEGAL: u16 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_their_options() {
        let r =
            parse_request(b"\0\x01a.cfg\0OCTET\0BLKSIZE\x001428\0tsize\x000\0windowsize\x000\0x\0")
                .unwrap();
        assert_eq!(
            (r.file.as_str(), r.blksize, r.tsize),
            ("a.cfg", Some(1428), true)
        );
        // windowsize 0 is invalid and left out; a dangling name is ignored.
        assert_eq!(r.windowsize, None);
        assert!(parse_request(b"\0\x01a.cfg\0mail\0").is_err());
        assert!(parse_request(b"\0\x01a.cfg\0octet").is_err());
        assert!(parse_request(b"\0\x01a.cfg\0").is_err());
        let r = parse_request(b"\0\x01b\0netascii\0blksize\x004\0timeout\x00300\0").unwrap();
        assert_eq!((r.blksize, r.timeout), (None, None));
    }
}

//! The TFTP front end: RFC 1350 reads with options (RFC 2347), blksize
//! (2348), tsize and timeout (2349) and windowsize (7440), in octet or
//! netascii mode, on tokio. Each request calls the same `provision()` core
//! HTTP uses, which answers from memory, so the listener never waits; each
//! transfer then runs as a task of its own with its own port. Transfers are
//! capped per source and overall, a transfer without progress ends after
//! `stall`, a client's ERROR ends its transfer at once, and duplicate ACKs
//! never trigger resends. Refusals are answered from the listening socket:
//! a flood of bad requests costs a packet each, not a socket and a task.
//!
//! It replaced async-tftp, which ignores a request from an address whose
//! previous transfer it has not wound down yet. Phones that keep one source
//! port for all their files (many do) lost most of their second and third
//! files to that, a retry timeout each (see BENCHMARKS.md).

mod limits;
mod packet;
mod transfer;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::error::ProvisionError;
use crate::provision::{Protocol, Provisioner, Request};
use limits::{ActiveTransfer, Admission, LogLimit, Slots};
use packet::{error_packet, parse_request, ERR_ACCESS, ERR_NOT_FOUND, MAX_REQUEST, OP_RRQ, OP_WRQ};
use transfer::{transfer, Source};

#[derive(Clone, Debug)]
pub struct TftpOptions {
    /// Transfers in flight at once; past it, new requests get "busy".
    pub max_transfers: usize,
    /// Transfers one source (an IPv4 address, an IPv6 /64) may have at
    /// once; past it, its new requests get an error.
    pub max_per_source: usize,
    /// Transfers one source may have that its client has not acknowledged
    /// yet; past that, requests are dropped without a reply.
    pub max_unacked_per_source: usize,
    /// Sources without a per-source cap (they still count globally).
    pub per_source_exempt: Vec<IpNet>,
    /// Largest block size a client may negotiate (RFC 2348).
    pub blksize_limit: u16,
    /// Largest window a client may negotiate (RFC 7440).
    pub windowsize_limit: u16,
    /// Retransmission timeout, unless the client negotiates another.
    pub timeout: Duration,
    /// Largest timeout a client may negotiate (RFC 2349); a larger one is
    /// declined and `timeout` used.
    pub max_timeout: Duration,
    /// With `timeout`, how long a vanished client holds its slot.
    pub max_send_retries: u32,
    /// Longest a transfer may go without a new ACK, whatever its timeout
    /// and retries; then it ends with an error packet.
    pub stall: Duration,
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
            max_per_source: 64,
            max_unacked_per_source: 8,
            per_source_exempt: default_exempt(),
            blksize_limit: 1468,
            windowsize_limit: 16,
            // 2 s x (1 + 4 retries) = a dead client frees its slot in ~10 s.
            timeout: Duration::from_secs(2),
            max_timeout: Duration::from_secs(5),
            max_send_retries: 4,
            // A client that negotiated the largest timeout still gets each
            // packet sent three times.
            stall: Duration::from_secs(15),
            recv_buffer: 4 << 20,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Loopback: this host's own tools (phlem, probes). The kernel drops
/// packets from the wire that claim a loopback source, so it cannot be
/// forged from outside.
pub fn default_exempt() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|n| n.parse().expect("valid network"))
        .collect()
}

/// Parses networks for `per_source_exempt` (`192.0.2.0/24`, `2001:db8::/32`,
/// or a bare address); the error names the one that is not.
pub fn parse_networks(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a network or an address"))
        })
        .collect()
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
    /// Refusals go out from here too.
    listener: tokio::net::UdpSocket,
    local_ip: IpAddr,
    slots: Arc<Slots>,
}

async fn serve(
    socket: UdpSocket,
    provisioner: Arc<Provisioner>,
    options: TftpOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let listener = tokio::net::UdpSocket::from_std(socket)?;
    let local_ip = listener.local_addr()?.ip();
    let slots = Arc::new(Slots::new(
        options.max_transfers,
        options.max_per_source,
        options.max_unacked_per_source,
        options.per_source_exempt.clone(),
    ));
    let shared = Arc::new(Shared {
        provisioner,
        options,
        listener,
        local_ip,
        slots,
    });
    let mut buf = vec![0u8; MAX_REQUEST];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            received = shared.listener.recv_from(&mut buf) => match received {
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
    while shared.slots.active() > 0 {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    transfers = shared.slots.active(),
                    "TFTP transfers still running at the end of the grace period"
                );
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            received = shared.listener.recv_from(&mut buf) => if let Ok((len, peer)) = received {
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

// One line a second for each kind of refusal, however many packets.
static WRITE_LOG: LogLimit = LogLimit::new();
static MALFORMED_LOG: LogLimit = LogLimit::new();
static BAD_PATH_LOG: LogLimit = LogLimit::new();
static PER_SOURCE_LOG: LogLimit = LogLimit::new();
static UNACKED_LOG: LogLimit = LogLimit::new();
static BUSY_LOG: LogLimit = LogLimit::new();

fn handle_request(shared: &Arc<Shared>, packet: &[u8], peer: SocketAddr) {
    if packet.len() < 4 {
        return;
    }
    match u16::from_be_bytes([packet[0], packet[1]]) {
        OP_RRQ => {}
        OP_WRQ => {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "write").increment(1);
            if let Some(skipped) = WRITE_LOG.allow() {
                tracing::info!(client = %peer, skipped, "TFTP write refused (read-only server; logged at most once a second)");
            }
            return send_error(shared, peer, ERR_ACCESS, "Access violation");
        }
        // DATA, ACK or ERROR on the listening port belong to no transfer.
        _ => return,
    }
    let request = match parse_request(packet) {
        Ok(r) => r,
        Err((code, message)) => {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "malformed").increment(1);
            if let Some(skipped) = MALFORMED_LOG.allow() {
                tracing::info!(client = %peer, reason = message, skipped, "TFTP request refused (logged at most once a second)");
            }
            return send_error(shared, peer, code, message);
        }
    };
    let slot = match shared.slots.admit(peer, &request.file) {
        Admission::Granted(slot) => slot,
        Admission::Retransmission => return, // its transfer is running
        Admission::Unacked => {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "unacked").increment(1);
            if let Some(skipped) = UNACKED_LOG.allow() {
                tracing::warn!(
                    client = %peer,
                    limit = shared.options.max_unacked_per_source,
                    skipped,
                    "TFTP source has too many unacknowledged transfers (forged?); dropping its requests (logged at most once a second)"
                );
            }
            return;
        }
        Admission::PerSource => {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "per_source").increment(1);
            if let Some(skipped) = PER_SOURCE_LOG.allow() {
                tracing::warn!(
                    client = %peer,
                    limit = shared.options.max_per_source,
                    skipped,
                    "TFTP source has too many transfers; refusing (logged at most once a second)"
                );
            }
            return send_error(
                shared,
                peer,
                0,
                "too many transfers from your address, try again",
            );
        }
        Admission::Busy => {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "busy").increment(1);
            if let Some(skipped) = BUSY_LOG.allow() {
                tracing::warn!(client = %peer, path = request.file, skipped, "TFTP transfer cap reached; refusing (logged at most once a second)");
            }
            return send_error(shared, peer, 0, "server busy, try again");
        }
    };
    // Provisioning runs in the transfer's own task: a render (a cache miss)
    // waits for the render pool there, never on this listener.
    let shared = shared.clone();
    tokio::spawn(async move {
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
                if let Some(skipped) = BAD_PATH_LOG.allow() {
                    tracing::info!(client = %peer, path = request.file, reason = why, skipped, "refused TFTP path (logged at most once a second)");
                }
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
        let running = std::panic::AssertUnwindSafe(transfer(
            &shared.options,
            shared.local_ip,
            peer,
            request,
            source,
            &slot,
        ));
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

/// Errors to requests go out from the listening socket and are never
/// retransmitted: no socket, no task, no wait. When the socket's send
/// buffer is full the error is dropped; the client's retry asks again.
fn send_error(shared: &Shared, peer: SocketAddr, code: u16, message: &str) {
    let _ = shared
        .listener
        .try_send_to(&error_packet(code, message), peer);
}

//! The TFTP server: RFC 1350 reads with options (RFC 2347), blksize
//! (2348), tsize and timeout (2349) and windowsize (7440), in octet or
//! netascii mode. Each request calls the same `provision()` core HTTP
//! uses, which answers from memory, so a listener never waits on a render.
//! Two front ends drive one transfer state machine (`transfer.rs`):
//! by default (`ported.rs`) each transfer runs as a task with a port of its
//! own; in single-port mode (`single.rs`) every transfer is answered from
//! the listening port, demultiplexed by the client's address and port, on
//! `listeners` sockets sharing the port (SO_REUSEPORT) that read and write
//! in batches. Transfers are capped per source and overall, a transfer
//! without progress ends after `stall`, a client's ERROR ends its transfer
//! at once, and duplicate ACKs never trigger resends. How a transfer ended
//! is what its phone's history line says (`ending.rs`). Refusals are answered
//! from the listening socket: a flood of bad requests costs a packet each,
//! not a socket and a task.
//!
//! It replaced async-tftp, which ignores a request from an address whose
//! previous transfer it has not wound down yet. Phones that keep one source
//! port for all their files (many do) lost most of their second and third
//! files to that, a retry timeout each (see BENCHMARKS.md).

mod ending;
pub(crate) mod limits;
pub use limits::source_of;
mod mmsg;
mod packet;
mod pktinfo;
mod ported;
mod read_ahead;
// The reader threads and their budget live with the static files: HTTP
// downloads read on them too, under the same budget.
use crate::statics::read_pool;
mod replies;
mod single;
mod transfer;
mod wheel;

#[cfg(test)]
mod fault_tests;

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::error::ProvisionError;
use crate::provision::{Protocol, Provisioner, Request};
use dialtone_sync::log_text;
use ending::{PhoneFetch, Witness};
pub use limits::LogLimit;
use limits::{Admission, Slot, Slots};
use packet::{parse_request, ReadRequest, ERR_ACCESS, ERR_NOT_FOUND, OP_RRQ, OP_WRQ};
use replies::ErrorReplies;
use transfer::Source;

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
    /// Bytes a second a transfer's client must acknowledge on average from
    /// the transfer's start; more than `min_rate_slack` behind that, the
    /// transfer ends with an error packet. So a transfer of N bytes holds
    /// its slot at most `min_rate_slack` + N / `min_rate`, however its
    /// client paces its ACKs.
    pub min_rate: u32,
    /// How far behind `min_rate` a client may fall.
    pub min_rate_slack: Duration,
    /// SO_RCVBUF of the listening socket: a boot storm's burst of requests
    /// must queue in the kernel, not be dropped.
    pub recv_buffer: usize,
    /// At shutdown, how long running transfers get to finish; requests
    /// that arrive meanwhile are answered with an error, and so are the
    /// clients of transfers still running at its end.
    pub shutdown_grace: Duration,
    /// Serve every transfer from the listening port (like dnsmasq's
    /// `--tftp-single-port`), so clients behind a NAT or firewall that only
    /// lets answers in from the port they asked work too.
    pub single_port: bool,
    /// Single-port mode: sockets sharing the port (SO_REUSEPORT), a thread
    /// each; 0 is one per core.
    pub listeners: usize,
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
            // Half what a client gets with 512-byte blocks one at a time
            // (the RFC 1350 default, still many phones') over a 500 ms
            // round trip, a poor satellite or intercontinental VPN link:
            // such a link losing packets still keeps above it. Below it a
            // firmware image takes most of a day anyway.
            min_rate: 512,
            // Retransmission timeouts, or a slow start, never count.
            min_rate_slack: Duration::from_secs(120),
            recv_buffer: 4 << 20,
            shutdown_grace: Duration::from_secs(10),
            single_port: false,
            listeners: 0,
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
    crate::guard::source_networks(list)
}

/// A network (`10.1.0.0/16`) or a bare address (a network of one), as
/// the operator's config and tenants' `provisioning_networks` write them.
pub fn parse_network(text: &str) -> Option<IpNet> {
    crate::guard::source_network(text).ok()
}
/// The bound listening sockets: one, or in single-port mode one per
/// listener, all on the same address and port.
pub struct Bound {
    sockets: Vec<UdpSocket>,
}

impl Bound {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sockets[0].local_addr()
    }
}

/// Binds the listening socket(s) with a large receive buffer. In
/// single-port mode that is `options.listeners` sockets sharing the port
/// with SO_REUSEPORT: the kernel spreads clients over them by a hash of
/// their address and port, so each client's packets always reach the same
/// socket, and the port is bound before anything is served. Permission
/// errors on privileged ports say what to do about them.
pub fn bind(addr: SocketAddr, options: &TftpOptions) -> io::Result<Bound> {
    if !options.single_port {
        return Ok(Bound {
            sockets: vec![bind_one(addr, options.recv_buffer, false)?],
        });
    }
    let first = bind_one(addr, options.recv_buffer, true)?;
    // Port 0 picks one port for the first; the others join it.
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..listener_count(options) {
        sockets.push(bind_one(addr, options.recv_buffer, true)?);
    }
    Ok(Bound { sockets })
}

fn listener_count(options: &TftpOptions) -> usize {
    match options.listeners {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn bind_one(addr: SocketAddr, recv_buffer: usize, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = crate::dual_stack::udp_socket(addr)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
        // Every answer leaves from here: a window burst of a thousand
        // transfers must not hit a full send buffer.
        let _ = socket.set_send_buffer_size(recv_buffer);
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
    pktinfo::enable(&socket, addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serves TFTP on `bound` until `shutdown` completes, on threads of its
/// own, each with its own single-threaded runtime: a storm of phones never
/// competes with the HTTP side for workers, and the other way round.
pub fn spawn(
    bound: Bound,
    provisioner: Arc<Provisioner>,
    options: TftpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared {
        error_replies: ErrorReplies::new(options.per_source_exempt.clone()),
        slots: Arc::new(Slots::new(
            options.max_transfers,
            options.max_per_source,
            options.max_unacked_per_source,
            options.per_source_exempt.clone(),
        )),
        provisioner,
        options,
    });
    let mut sockets = bound.sockets;
    if !shared.options.single_port {
        let socket = sockets.remove(0);
        return std::thread::Builder::new()
            .name("tftp".into())
            .spawn(move || runtime.block_on(ported::serve(socket, shared, shutdown)));
    }
    // Listener 0 runs on this thread and passes the shutdown on to the rest.
    // The caller watches this thread alone, so a listener that ends before
    // the shutdown (an error, a panic) stops them all and this thread
    // reports it: otherwise its port share would go quiet unseen until the
    // shutdown joined it.
    let cancel = tokio_util::sync::CancellationToken::new();
    let died = tokio_util::sync::CancellationToken::new();
    let first = sockets.remove(0);
    let mut others = Vec::new();
    for (n, socket) in sockets.into_iter().enumerate() {
        let (shared, cancel, died) = (shared.clone(), cancel.clone(), died.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        others.push(
            std::thread::Builder::new()
                .name(format!("tftp-{}", n + 1))
                .spawn(move || {
                    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        runtime.block_on(single::serve(socket, shared, cancel.clone()))
                    }));
                    if !cancel.is_cancelled() {
                        died.cancel();
                    }
                    served.unwrap_or_else(|_| Err(io::Error::other("a TFTP listener panicked")))
                })?,
        );
    }
    std::thread::Builder::new()
        .name("tftp-0".into())
        .spawn(move || {
            let result = runtime.block_on(async {
                let watch = cancel.clone();
                tokio::spawn(async move {
                    shutdown.await;
                    watch.cancel();
                });
                let serving = single::serve(first, shared, cancel.clone());
                tokio::pin!(serving);
                let served = tokio::select! {
                    served = &mut serving => served,
                    _ = died.cancelled() => {
                        cancel.cancel();
                        let _ = (&mut serving).await;
                        Err(io::Error::other("a TFTP listener stopped before the shutdown; the others were stopped with it"))
                    }
                };
                // However listener 0 ended (the shutdown, or an error of
                // its own), the others end too before they are joined.
                cancel.cancel();
                served
            });
            for other in others {
                match other.join() {
                    Ok(r) => r?,
                    Err(_) => return Err(io::Error::other("a TFTP listener panicked")),
                }
            }
            result
        })
}

/// What every listener and transfer shares.
struct Shared {
    provisioner: Arc<Provisioner>,
    options: TftpOptions,
    slots: Arc<Slots>,
    /// Every error packet that answers a request goes through it.
    error_replies: ErrorReplies,
}

/// Why a request gets an error packet instead of a file: code and text.
type Refusal = (u16, &'static str);

const SHUTTING_DOWN: Refusal = (0, "server shutting down, try again");

// One line a second for each kind of refusal, however many packets.
static WRITE_LOG: LogLimit = LogLimit::new();
static MALFORMED_LOG: LogLimit = LogLimit::new();
static BAD_PATH_LOG: LogLimit = LogLimit::new();
static PER_SOURCE_LOG: LogLimit = LogLimit::new();
static UNACKED_LOG: LogLimit = LogLimit::new();
static BUSY_LOG: LogLimit = LogLimit::new();
static READ_FAILED_LOG: LogLimit = LogLimit::new();
// Per tenant where the file names its phone (`FailureLog`).
static FAILED_LOG: crate::http::FailureLog = crate::http::FailureLog::new();

/// A packet on a listening socket that is not part of a running
/// transfer's exchange: a read request gets its slot, or is refused
/// through `refuse` (WRQ, malformed, over a cap) or dropped (DATA and the
/// like, a retransmitted request, a source with too many unacknowledged
/// transfers). Both front ends decide admission here.
fn admit(
    shared: &Shared,
    packet: &[u8],
    peer: SocketAddr,
    refuse: &mut dyn FnMut(SocketAddr, Refusal),
) -> Result<(ReadRequest, Slot), NotAdmitted> {
    if packet.len() < 4 {
        return Err(NotAdmitted::Otherwise);
    }
    match u16::from_be_bytes([packet[0], packet[1]]) {
        OP_RRQ => {}
        OP_WRQ => {
            refuse_write(peer, refuse);
            return Err(NotAdmitted::Otherwise);
        }
        // DATA, ACK or ERROR on the listening port belong to no transfer.
        _ => return Err(NotAdmitted::Otherwise),
    }
    let request = match parse_request(packet) {
        Ok(r) => r,
        Err(refusal) => {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "malformed").increment(1);
            if let Some(skipped) = MALFORMED_LOG.allow() {
                tracing::info!(client = %peer, reason = refusal.1, skipped, "TFTP request refused (logged at most once a second)");
            }
            refuse(peer, refusal);
            return Err(NotAdmitted::Otherwise);
        }
    };
    match shared.slots.admit(peer, packet) {
        Admission::Granted(slot) => Ok((request, slot)),
        // Its transfer is running, its client not heard from yet.
        Admission::Retransmission => Err(NotAdmitted::Retransmission),
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
            Err(NotAdmitted::Otherwise)
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
            refuse(peer, (0, "too many transfers from your address, try again"));
            Err(NotAdmitted::Otherwise)
        }
        Admission::Busy => {
            metrics::counter!("dialtone_tftp_refused_total", "reason" => "busy").increment(1);
            if let Some(skipped) = BUSY_LOG.allow() {
                tracing::warn!(client = %peer, path = &*log_text(&request.file), skipped, "TFTP transfer cap reached; refusing (logged at most once a second)");
            }
            refuse(peer, (0, "server busy, try again"));
            Err(NotAdmitted::Otherwise)
        }
    }
}

/// Why `admit` started no transfer.
#[derive(Debug, PartialEq, Eq)]
enum NotAdmitted {
    /// A repeat of the running transfer's request, none of whose packets
    /// its client has acknowledged (as far as we have read).
    Retransmission,
    /// Refused, or not a request.
    Otherwise,
}

fn refuse_write(peer: SocketAddr, refuse: &mut dyn FnMut(SocketAddr, Refusal)) {
    metrics::counter!("dialtone_tftp_refused_total", "reason" => "write").increment(1);
    if let Some(skipped) = WRITE_LOG.allow() {
        tracing::info!(client = %peer, skipped, "TFTP write refused (read-only server; logged at most once a second)");
    }
    // Poly phones upload their boot and app logs at every boot: the words
    // say why in their logs.
    refuse(
        peer,
        (ERR_ACCESS, "Read-only server: uploads are not accepted"),
    );
}

/// A packet on a listening socket while the server drains: a write is
/// refused as ever (no other server would take it either), a read is
/// told the server is going away, so the phone tries another at once.
/// Whether it was a request.
fn refuse_draining(
    packet: &[u8],
    peer: SocketAddr,
    refuse: &mut dyn FnMut(SocketAddr, Refusal),
) -> bool {
    if packet.len() < 4 {
        return false;
    }
    match u16::from_be_bytes([packet[0], packet[1]]) {
        OP_RRQ => refuse(peer, SHUTTING_DOWN),
        OP_WRQ => refuse_write(peer, refuse),
        _ => return false,
    }
    true
}

/// Panics of requests and transfers, at most a line a second: a phone or
/// forged source can ask for the same failing work as fast as it likes.
pub(crate) fn log_panic(peer: SocketAddr, file: Option<&str>, what: &'static str) {
    static PANICS: dialtone_sync::LogLimit = dialtone_sync::LogLimit::new();
    if let Some(skipped) = PANICS.allow() {
        let file = file.map(dialtone_sync::log_text);
        tracing::error!(client = %peer, file = file.as_deref(), skipped, "TFTP {what} panicked");
    }
}

/// A provisioning call that panicked: logged, and answered like any other
/// failure on our side. Both front ends catch it, so a panic costs the
/// phone its request, never the listener, and the phone is told at once.
fn provisioning_panicked(peer: SocketAddr) -> Refusal {
    log_panic(peer, None, "provisioning");
    transfer::record_outcome(std::time::Instant::now(), "panic");
    (0, "internal error")
}

/// The provisioning core's answer to a request, as a transfer's source or
/// the error packet it gets instead. A render waits for the render pool
/// here, in whatever task the front end runs this in, never on a listener.
async fn provision(
    provisioner: &Arc<Provisioner>,
    file: &str,
    peer: SocketAddr,
) -> Result<(Source, Option<Box<dyn Witness>>), Refusal> {
    #[cfg(test)]
    if let Some(source) = fault_tests::inject(file).await {
        return Ok((source, None));
    }
    let provisioned = provisioner
        .provision_async(&Request {
            path: file,
            user_agent: None,
            remote: Some(peer.ip()),
            protocol: Protocol::Tftp,
            query: None,
            auth: None,
        })
        .await;
    match provisioned {
        Ok(rendered) => {
            let source = match &rendered.file {
                Some(file) => Source::File {
                    path: file.path.clone(),
                },
                None => Source::Memory(rendered.body.clone()),
            };
            let witness = rendered.unproven.map(|unproven| {
                Box::new(PhoneFetch {
                    provisioner: provisioner.clone(),
                    unproven,
                }) as Box<dyn Witness>
            });
            Ok((source, witness))
        }
        // A banned source learns nothing: it looks like any unknown file.
        Err(ProvisionError::NotFound | ProvisionError::Banned) => {
            Err((ERR_NOT_FOUND, "File not found"))
        }
        Err(ProvisionError::BadPath(why)) => {
            if let Some(skipped) = BAD_PATH_LOG.allow() {
                tracing::info!(client = %peer, path = &*log_text(file), reason = why, skipped, "refused TFTP path (logged at most once a second)");
            }
            Err((ERR_ACCESS, access_violation(why)))
        }
        Err(ProvisionError::Busy) => Err((0, "server busy, try again")),
        Err(e) => {
            // Per request, from a source UDP lets anyone forge.
            if let Some((tenant, skipped)) = FAILED_LOG.allow(provisioner, file, None) {
                tracing::error!(client = %peer, path = &*log_text(file), tenant = tenant.as_deref(), error = &*e.to_string(), skipped, "TFTP provisioning failed (logged at most once a second per tenant)");
            }
            Err((0, "internal error"))
        }
    }
}

/// The error text for a refused path: which rule it broke, in words of
/// our own (the path itself is never echoed back), so whoever reads a
/// phone's log sees what to fix.
fn access_violation(why: &str) -> &'static str {
    match why {
        "too long" => "Access violation: path too long",
        "control character" => "Access violation: control character in path",
        "backslash" => "Access violation: backslash in path",
        "colon" => "Access violation: colon in path",
        "percent sign" => "Access violation: percent sign in path",
        "parent directory" => "Access violation: parent directory in path",
        "home directory" => "Access violation: home directory in path",
        _ => "Access violation",
    }
}

/// The error packet for a transfer that could not start (its static file
/// gone since it was indexed, no file descriptor or socket left) or could
/// not read on. Without one the phone waits out its own retries on a
/// server that has already given up. A vanished file is "not found" like
/// any other; anything else gets a generic text, the detail is the
/// operator's (a stale index or an exhausted host is worth a log line).
fn transfer_failed(peer: SocketAddr, file: Option<&str>, e: &io::Error) -> Refusal {
    metrics::counter!("dialtone_tftp_transfer_failed_total").increment(1);
    if let Some(skipped) = READ_FAILED_LOG.allow() {
        let file = &*log_text(file.unwrap_or("-"));
        tracing::warn!(client = %peer, file, error = %e, skipped, "TFTP transfer failed on our side (logged at most once a second)");
    }
    if matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) {
        (ERR_NOT_FOUND, "File not found")
    } else if e.kind() == read_ahead::CHANGED {
        // Not our failure to hide: the client fetches again and gets
        // the file as it is now.
        (0, "file changed while being sent")
    } else {
        (0, "internal error")
    }
}

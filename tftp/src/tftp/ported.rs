//! The default front end: one listener, and each transfer a task with a
//! port of its own (RFC 1350's transfer identifier). A blind forger cannot
//! see that random port, so an ACK on it proves the client is real; a
//! client behind a NAT that only lets answers in from the port it asked
//! cannot use it (single-port mode is for those).

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio_util::sync::CancellationToken;

use super::ending::TransferEnd;
use super::limits::Slot;
use super::packet::{error_packet, ReadRequest, MAX_REQUEST};
use super::pktinfo::{self, Local};
use super::transfer::{record_outcome, Step, Timer, Transfer};
use super::{
    admit, provision, provisioning_panicked, refuse_draining, transfer_failed, NotAdmitted,
    Refusal, Shared, SHUTTING_DOWN,
};

pub(super) async fn serve(
    socket: UdpSocket,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let listener = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut control = pktinfo::control_buffer();
    let fd = listener.as_raw_fd();
    tokio::pin!(shutdown);
    // Cancelled when the grace period is over: what still runs tells its
    // client, who then tries another server instead of waiting out its
    // timeouts on one that is gone.
    let cut = CancellationToken::new();
    loop {
        let received = listener.async_io(Interest::READABLE, || {
            pktinfo::recv(fd, &mut buf, &mut control)
        });
        tokio::select! {
            _ = &mut shutdown => break,
            received = received => match received {
                Ok((len, Some(peer), local)) => {
                    let mut refuse = |peer, refusal| send_error(&shared, &listener, peer, local, refusal);
                    let mut admitted = admit(&shared, &buf[..len], peer, &mut refuse);
                    if admitted.as_ref().err() == Some(&NotAdmitted::Retransmission) {
                        // The client's ACK to that transfer may be waiting
                        // on the transfer's own port, sent before this
                        // request (a one-block file fetched again at once):
                        // the yield lets this thread read it first, and
                        // then the request is a new one.
                        tokio::task::yield_now().await;
                        admitted = admit(&shared, &buf[..len], peer, &mut refuse);
                    }
                    if let Ok((request, slot)) = admitted {
                        let to = Client { peer, local };
                        let (shared, listener, cut) = (shared.clone(), listener.clone(), cut.clone());
                        tokio::spawn(run(shared, listener, to, request, slot, cut));
                    }
                }
                Ok((_, None, _)) => {}
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
                cut.cancel();
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            received = listener.async_io(Interest::READABLE, || pktinfo::recv(fd, &mut buf, &mut control)) => {
                if let Ok((len, Some(peer), local)) = received {
                    let mut refuse = |peer, refusal| send_error(&shared, &listener, peer, local, refusal);
                    if refuse_draining(&buf[..len], peer, &mut refuse) {
                        refused += 1;
                    }
                }
            },
        }
    }
    // The transfers run on this thread: they send their error only while
    // it waits for them.
    let sent_by = tokio::time::Instant::now() + Duration::from_secs(1);
    while shared.slots.active() > 0 && tokio::time::Instant::now() < sent_by {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if refused > 0 {
        tracing::info!(refused, "TFTP requests refused while draining");
    }
    Ok(())
}

/// Who asked: the client, and which of our addresses it asked (on a
/// wildcard listener), which every answer leaves from.
#[derive(Clone, Copy)]
struct Client {
    peer: SocketAddr,
    local: Option<Local>,
}

/// One admitted request: provisioning (a render waits for the pool here,
/// in this task, never on the listener), then the transfer on its port.
async fn run(
    shared: Arc<Shared>,
    listener: Arc<tokio::net::UdpSocket>,
    client: Client,
    request: ReadRequest,
    slot: Slot,
    cut: CancellationToken,
) {
    let Client { peer, local } = client;
    // A panic costs this phone its request, never the server (tokio would
    // end only this task, but the phone would hear nothing until its
    // timeout, and nothing would count it).
    let provisioning =
        std::panic::AssertUnwindSafe(provision(&shared.provisioner, &request.file, peer));
    let provisioned = tokio::select! {
        provisioned = futures::FutureExt::catch_unwind(provisioning) => provisioned,
        _ = cut.cancelled() => return send_error(&shared, &listener, peer, local, SHUTTING_DOWN),
    };
    let provisioned = match provisioned {
        Ok(Ok(provisioned)) => provisioned,
        Ok(Err(refusal)) => return send_error(&shared, &listener, peer, local, refusal),
        Err(_) => return send_error(&shared, &listener, peer, local, provisioning_panicked(peer)),
    };
    let started = Instant::now();
    let socket = match transfer_socket(&listener, client).await {
        Ok(socket) => socket,
        Err(e) => {
            // Nothing can go out from a port of this transfer: the error
            // comes from the one the client asked.
            let refusal = transfer_failed(peer, Some(&request.file), &e);
            send_error(&shared, &listener, peer, local, refusal);
            return record_outcome(started, "incomplete");
        }
    };
    let (source, witness) = provisioned;
    // A panic costs this phone its transfer (the guards free its slot),
    // never the server; it is logged and counted, and the phone told.
    let starting = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Transfer::start(&shared.options, &request, source, slot, Instant::now())
    }));
    let mut transfer = match starting {
        Ok(Ok(transfer)) => transfer,
        Ok(Err(e)) => {
            // Nothing went out from the transfer's port yet: the error
            // comes from the one the client asked.
            let refusal = transfer_failed(peer, Some(&request.file), &e);
            send_error(&shared, &listener, peer, local, refusal);
            return record_outcome(started, "incomplete");
        }
        Err(_) => return panicked(&socket, peer, &request, started).await,
    };
    transfer.witnessed_by(witness);
    // Owned here rather than by `drive`: a cut drops `drive` mid-wait, and
    // the transfer must still learn it was the shutdown before it goes
    // (its end is its phone's history line).
    let ended = {
        let running = std::panic::AssertUnwindSafe(drive(&socket, peer, &request, &mut transfer));
        let running = futures::FutureExt::catch_unwind(running);
        tokio::pin!(running);
        tokio::select! {
            ended = &mut running => Some(ended),
            _ = cut.cancelled() => None,
        }
    };
    let Some(ended) = ended else {
        // The transfer keeps its slot until this has gone out: the drain
        // waits for the slots.
        transfer.end(TransferEnd::ShutDown);
        let (code, message) = SHUTTING_DOWN;
        let _ = socket.send(&error_packet(code, message)).await;
        return record_outcome(started, "incomplete");
    };
    match ended {
        Ok(Ok(())) => record_outcome(started, "ok"),
        Ok(Err(e)) => {
            tracing::debug!(client = %peer, error = %e, "TFTP transfer ended early");
            record_outcome(started, "incomplete");
        }
        Err(_) => panicked(&socket, peer, &request, started).await,
    }
}

/// A transfer that panicked: logged, counted, and its client told.
async fn panicked(
    socket: &tokio::net::UdpSocket,
    peer: SocketAddr,
    request: &ReadRequest,
    started: Instant,
) {
    super::log_panic(peer, Some(&request.file), "transfer");
    // Awaited: a socket that has sent nothing yet (a panic as the
    // transfer starts) is not known to be writable, and `try_send`
    // would drop the packet.
    let _ = socket.send(&error_packet(0, "internal error")).await;
    record_outcome(started, "panic");
}

/// A port of the transfer's own, on the address the client asked,
/// connected to the client.
async fn transfer_socket(
    listener: &tokio::net::UdpSocket,
    Client { peer, local }: Client,
) -> io::Result<tokio::net::UdpSocket> {
    let bind = match local {
        Some(local) => local.bind_addr(),
        None => SocketAddr::new(listener.local_addr()?.ip(), 0),
    };
    // An IPv4 client of a `[::]` listener is answered from the mapped
    // address it asked, which only a dual-stack socket may bind.
    let socket = crate::dual_stack::bind_udp(bind)?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    socket.connect(peer).await?;
    Ok(socket)
}

/// Runs the state machine on the transfer's own socket.
async fn drive(
    socket: &tokio::net::UdpSocket,
    peer: SocketAddr,
    request: &ReadRequest,
    transfer: &mut Transfer,
) -> io::Result<()> {
    let mut buf = [0u8; 516];
    loop {
        // Evicted while its file was being provisioned (nothing goes
        // out), or between two windows.
        if transfer.is_evicted() {
            return Err(evicted(socket, transfer).await);
        }
        let mut refused = None;
        for packet in transfer.outgoing() {
            if let Err(e) = socket.send(packet).await {
                refused = Some(e);
                break;
            }
        }
        if let Some(e) = refused {
            // The client's port refusing (ICMP) may be reported on a send
            // as well as on a receive: the client went away either way.
            if e.kind() == io::ErrorKind::ConnectionRefused {
                transfer.end(TransferEnd::ClientGone);
            }
            return Err(e);
        }
        loop {
            let deadline = tokio::time::Instant::from_std(transfer.deadline());
            let waited = tokio::select! {
                // Its slot went to a newer request.
                _ = transfer.evicted() => return Err(evicted(socket, transfer).await),
                waited = tokio::time::timeout_at(deadline, socket.recv(&mut buf)) => waited,
            };
            let received = match waited {
                Err(_) => match transfer.on_timer(Instant::now()) {
                    Timer::Wait => continue,
                    Timer::Resend => break,
                    Timer::Stalled => {
                        if let Some(packet) = transfer.stalled_packet() {
                            let _ = socket.send(&packet).await;
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no acknowledgement",
                        ));
                    }
                    Timer::TooSlow => {
                        if let Some(packet) = transfer.too_slow_packet() {
                            let _ = socket.send(&packet).await;
                        }
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "too slow"));
                    }
                    Timer::Evicted => return Err(evicted(socket, transfer).await),
                },
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    transfer.end(TransferEnd::ClientGone);
                    return Err(io::Error::new(e.kind(), "client went away"));
                }
                Ok(received) => received?,
            };
            let step = match transfer.on_packet(&buf[..received], Instant::now()) {
                Ok(step) => step,
                Err(e) => {
                    let (code, message) = transfer_failed(peer, Some(&request.file), &e);
                    let _ = socket.send(&error_packet(code, message)).await;
                    return Err(e);
                }
            };
            match step {
                Step::Ignored => {}
                Step::Advanced => break,
                Step::Done => return Ok(()),
                Step::Aborted => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "client sent an error",
                    ))
                }
            }
        }
    }
}

/// Errors to requests go out from the listening socket (from the address
/// the client asked) and are never retransmitted: no socket, no task, no
/// wait. When the socket's send buffer is full, or the source has had
/// its share of errors (`ErrorReplies`), the error is dropped; the
/// client's retry asks again.
fn send_error(
    shared: &Shared,
    listener: &tokio::net::UdpSocket,
    peer: SocketAddr,
    local: Option<Local>,
    (code, message): Refusal,
) {
    if !shared.error_replies.allow(peer) {
        return;
    }
    pktinfo::try_send(listener, &error_packet(code, message), peer, local);
}

/// How a transfer told to give way ends: "busy" if its client has
/// acknowledged something, else without a packet, as it is most likely a
/// forged source's.
async fn evicted(socket: &tokio::net::UdpSocket, transfer: &mut Transfer) -> io::Error {
    transfer.end(TransferEnd::Evicted);
    if let Some(packet) = transfer.evicted_packet() {
        let _ = socket.send(&packet).await;
    }
    io::Error::new(io::ErrorKind::TimedOut, "evicted")
}

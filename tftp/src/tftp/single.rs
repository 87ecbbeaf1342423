//! Single-port mode: every transfer is answered from the listening port
//! and told apart by the client's address and port, so a client behind a
//! NAT or firewall that only lets answers in from the port it asked gets
//! its files. Each listener (one of several sockets sharing the port) owns
//! a demux table of its transfers, reads with `recvmmsg` and answers with
//! `sendmmsg` in batches, and drives every retransmission and stall bound
//! from one timer wheel: no socket, task or timer per transfer.
//!
//! Provisioning is tried inline once: a cache hit answers at once; a miss
//! (a render waiting for the pool) continues as a task of its own and hands
//! its answer back, so a slow render never holds up the listener.
//!
//! What an ACK proves here is less than with a port per transfer: the
//! listening port is public, so a forger who sends requests from a forged
//! address and port can send that transfer's ACKs too (block 0 or 1 is
//! predictable). `tftp_max_unacked_per_source` then stops only forgers
//! that do not bother; the per-source and global caps and `tftp_stall_s`
//! still bound what a forged source holds. An ACK still makes a source
//! known for a phone here, forgeable as it is (see `start`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ending::{TransferEnd, Witness};
use super::limits::Slot;
use super::mmsg::{self, Outgoing, Receiver, BATCH};
use super::packet::{error_packet, ReadRequest, OP_RRQ, OP_WRQ};
use super::pktinfo::Local;
use super::transfer::{record_outcome, Source, Step, Timer, Transfer};
use super::wheel::Wheel;
use super::{
    admit, provision, provisioning_panicked, refuse_draining, transfer_failed, Refusal, Shared,
    SHUTTING_DOWN,
};

pub(super) async fn serve(
    socket: UdpSocket,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let listener = Listener {
        socket: tokio::net::UdpSocket::from_std(socket)?,
        shared,
        table: HashMap::default(),
        wheel: Wheel::new(Instant::now()),
        due: Vec::new(),
        errors: Vec::new(),
        dirty: Vec::new(),
        done_tx,
        draining: false,
        refused: 0,
    };
    listener.run(done_rx, cancel).await
}

/// A transfer's source, and what it owes the phone whose file it is.
type Answer = Result<(Source, Option<Box<dyn Witness>>), Refusal>;

type Provisioning = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A client address and port's transfer on this listener.
enum Entry {
    /// Admitted; its provisioning runs as a task (a render).
    Pending {
        request: ReadRequest,
        slot: Slot,
        local: Option<Local>,
        /// The provisioning task: stopped when the entry goes (the client
        /// moved on), so a client switching files cannot pile renders up
        /// behind its one slot.
        task: tokio::task::AbortHandle,
    },
    Running {
        transfer: Box<Transfer>,
        /// Which of our addresses the client asked (a wildcard listener):
        /// every packet of the transfer leaves from it.
        local: Option<Local>,
        /// Already in `dirty`: its window goes out at the next flush.
        queued: bool,
        /// When its timer is set for in the wheel. An ACK can bring the
        /// deadline forward (a window waiting for its file's first read
        /// once the client is proven looks again within a millisecond), and
        /// a wheel entry for a time no longer this is left to fire unheeded.
        armed: Instant,
    },
}

/// A provisioning task's answer.
struct Provisioned {
    peer: SocketAddr,
    id: u64,
    result: Answer,
}

struct Listener {
    socket: tokio::net::UdpSocket,
    shared: Arc<Shared>,
    /// Bounded: every entry holds a transfer slot.
    table: HashMap<SocketAddr, Entry, foldhash::fast::RandomState>,
    /// (client, transfer id): an entry of a transfer that has ended since
    /// is dropped when it fires.
    /// Running transfers' timers: client, transfer id and the time set.
    wheel: Wheel<(SocketAddr, u64, Instant)>,
    due: Vec<(SocketAddr, u64, Instant)>,
    /// Error packets to send at the next flush (bounded by one batch of
    /// received packets and the transfers ending in one tick), each with
    /// the address it leaves from.
    errors: Vec<(SocketAddr, Option<Local>, Vec<u8>)>,
    /// Transfers whose window goes out at the next flush.
    dirty: Vec<(SocketAddr, u64)>,
    done_tx: mpsc::UnboundedSender<Provisioned>,
    draining: bool,
    refused: u64,
}

impl Listener {
    async fn run(
        mut self,
        mut done_rx: mpsc::UnboundedReceiver<Provisioned>,
        cancel: CancellationToken,
    ) -> io::Result<()> {
        let destinations = self.socket.local_addr()?.ip().is_unspecified();
        let mut rx = Receiver::new(destinations);
        let fd = self.socket.as_raw_fd();
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep_until(far);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut grace = far;
        loop {
            let wake = self.wheel.next_wake();
            if wake != armed {
                timer
                    .as_mut()
                    .reset(wake.map_or(far, tokio::time::Instant::from_std));
                armed = wake;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if !self.draining => {
                    // Draining: running transfers finish within the grace
                    // period; a new request gets an error at once.
                    self.draining = true;
                    grace = tokio::time::Instant::now() + self.shared.options.shutdown_grace;
                }
                // Everything but the socket comes first: `biased` polls in
                // order, and under a flood the socket is always readable,
                // so what came after it was never polled (no resends, no
                // stall bounds, finished renders never sent, a shutdown
                // never ending). Each is ready only when due and takes all
                // that is due at once, so the socket still gets its turn.
                Some(done) = done_rx.recv() => {
                    self.on_provisioned(done);
                    while let Ok(done) = done_rx.try_recv() {
                        self.on_provisioned(done);
                    }
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.on_tick(Instant::now());
                }
                _ = tokio::time::sleep_until(grace), if self.draining => {
                    tracing::warn!(
                        transfers = self.table.len(),
                        "TFTP transfers still running at the end of the grace period"
                    );
                    break;
                }
                ready = self.socket.readable() => {
                    ready?;
                    // A few batches, then the timers and answers above get
                    // their turn again.
                    for _ in 0..8 {
                        match self.socket.try_io(Interest::READABLE, || rx.recv(fd)) {
                            Ok(n) => {
                                let now = Instant::now();
                                for i in 0..n {
                                    if let (packet, Some(peer), local) = rx.packet(i) {
                                        self.on_packet(packet, peer, local, now);
                                    }
                                }
                                if n < BATCH {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            // ICMP errors from earlier sends and the like:
                            // about some peer, never fatal for the listener.
                            Err(e) => {
                                tracing::debug!(error = %e, "TFTP receive error");
                                break;
                            }
                        }
                    }
                }
            }
            self.flush().await;
            if self.draining && self.table.is_empty() {
                break;
            }
        }
        if self.refused > 0 {
            tracing::info!(
                refused = self.refused,
                "TFTP requests refused while draining"
            );
        }
        // Cut at the end of the grace period: each client is told, and
        // tries another server instead of waiting out its timeouts.
        for (peer, entry) in std::mem::take(&mut self.table) {
            let local = match entry {
                Entry::Running {
                    mut transfer,
                    local,
                    ..
                } => {
                    transfer.end(TransferEnd::ShutDown);
                    record_outcome(transfer.started(), "incomplete");
                    local
                }
                Entry::Pending { task, local, .. } => {
                    task.abort();
                    local
                }
            };
            self.refuse(peer, local, SHUTTING_DOWN);
        }
        self.flush().await;
        Ok(())
    }

    fn on_packet(&mut self, packet: &[u8], peer: SocketAddr, local: Option<Local>, now: Instant) {
        if packet.len() < 2 {
            return;
        }
        let opcode = u16::from_be_bytes([packet[0], packet[1]]);
        if opcode == OP_RRQ || opcode == OP_WRQ {
            return self.on_request(packet, peer, local);
        }
        let Some(Entry::Running {
            transfer,
            queued,
            local,
            armed,
        }) = self.table.get_mut(&peer)
        else {
            return; // belongs to no transfer
        };
        let (id, local) = (transfer.id(), *local);
        // Told to give way: it ends now rather than at its next timer.
        if transfer.is_evicted() {
            return self.end_evicted(peer, local);
        }
        // A panic costs this phone its transfer, never the listener.
        let step = std::panic::catch_unwind(AssertUnwindSafe(|| transfer.on_packet(packet, now)));
        match step {
            Ok(Ok(Step::Ignored)) => {}
            Ok(Ok(Step::Advanced)) => {
                if !*queued {
                    *queued = true;
                    self.dirty.push((peer, id));
                }
                let deadline = transfer.deadline();
                if deadline < *armed {
                    *armed = deadline;
                    self.wheel.insert(deadline, (peer, id, deadline));
                }
            }
            Ok(Ok(Step::Done)) => self.end(peer, "ok"),
            Ok(Ok(Step::Aborted)) => self.end(peer, "incomplete"),
            Ok(Err(e)) => {
                self.refuse(peer, local, transfer_failed(peer, None, &e));
                self.end(peer, "incomplete");
            }
            Err(_) => {
                super::log_panic(peer, None, "transfer");
                self.refuse(peer, local, (0, "internal error"));
                self.end(peer, "panic");
            }
        }
    }

    fn on_request(&mut self, packet: &[u8], peer: SocketAddr, local: Option<Local>) {
        let (errors, replies) = (&mut self.errors, &self.shared.error_replies);
        let mut refuse = |peer, (code, message): Refusal| {
            if replies.allow(peer) {
                errors.push((peer, local, error_packet(code, message)));
            }
        };
        if self.draining {
            if refuse_draining(packet, peer, &mut refuse) {
                self.refused += 1;
            }
            return;
        }
        let Ok((request, slot)) = admit(&self.shared, packet, peer, &mut refuse) else {
            return;
        };
        // Not a retransmission (admission said so): the client's next
        // file. Whatever ran on this address and port is over.
        if let Some(Entry::Running { transfer, .. }) = self.table.get_mut(&peer) {
            transfer.end(TransferEnd::Replaced);
        }
        self.end(peer, "incomplete");
        let provisioner = self.shared.provisioner.clone();
        let file = request.file.clone();
        let mut provisioning: Provisioning =
            Box::pin(async move { provision(&provisioner, &file, peer).await });
        // A cache hit is ready at once; a render continues as a task (the
        // noop waker is replaced by the task's own when it polls again).
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // A panic costs this phone its request, never the listener.
        let polled =
            std::panic::catch_unwind(AssertUnwindSafe(|| provisioning.as_mut().poll(&mut cx)));
        match polled {
            Ok(Poll::Ready(result)) => self.start(peer, local, request, slot, result),
            Ok(Poll::Pending) => {
                let (done, id) = (self.done_tx.clone(), slot.id());
                let task = tokio::spawn(async move {
                    let result = futures::FutureExt::catch_unwind(AssertUnwindSafe(provisioning))
                        .await
                        .unwrap_or_else(|_| Err(provisioning_panicked(peer)));
                    let _ = done.send(Provisioned { peer, id, result });
                });
                self.table.insert(
                    peer,
                    Entry::Pending {
                        request,
                        slot,
                        local,
                        task: task.abort_handle(),
                    },
                );
            }
            Err(_) => self.refuse(peer, local, provisioning_panicked(peer)),
        }
    }

    fn on_provisioned(&mut self, done: Provisioned) {
        // Only if the client has not moved on to another file meanwhile.
        let current = matches!(self.table.get(&done.peer),
            Some(Entry::Pending { slot, .. }) if slot.id() == done.id);
        if current {
            if let Some(Entry::Pending {
                request,
                slot,
                local,
                ..
            }) = self.table.remove(&done.peer)
            {
                self.start(done.peer, local, request, slot, done.result);
            }
        }
    }

    fn start(
        &mut self,
        peer: SocketAddr,
        local: Option<Local>,
        request: ReadRequest,
        slot: Slot,
        result: Answer,
    ) {
        // An ACK here can be forged (see the module docs), so a forger who
        // knows a phone's MAC can make addresses known for it before its
        // office is. Kept anyway: without it no office fetching over this
        // mode would ever be known, and forged misses "from" any office
        // would ban it (its phones' files with it); the forger needs the
        // MAC, and a known office keeps its place while it fetches.
        let (source, witness) = match result {
            Ok(provisioned) => provisioned,
            Err(refusal) => return self.refuse_request(peer, local, refusal),
        };
        let now = Instant::now();
        // Evicted while its file was provisioned: most likely a forged
        // source's, so nothing goes out.
        if slot.is_evicted() {
            return record_outcome(now, "incomplete");
        }
        let options = &self.shared.options;
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
            Transfer::start(options, &request, source, slot, now)
        }));
        match started {
            Ok(Ok(mut transfer)) => {
                transfer.witnessed_by(witness);
                let (id, armed) = (transfer.id(), transfer.deadline());
                self.wheel.insert(armed, (peer, id, armed));
                self.dirty.push((peer, id));
                let transfer = Box::new(transfer);
                self.table.insert(
                    peer,
                    Entry::Running {
                        transfer,
                        local,
                        queued: true,
                        armed,
                    },
                );
            }
            Ok(Err(e)) => {
                self.refuse_request(peer, local, transfer_failed(peer, Some(&request.file), &e));
                record_outcome(now, "incomplete");
            }
            Err(_) => {
                super::log_panic(peer, Some(&request.file), "transfer");
                self.refuse(peer, local, (0, "internal error"));
                record_outcome(now, "panic");
            }
        }
    }

    /// Fires the timers due: resends, or the end of a stalled transfer.
    fn on_tick(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.expire(now, &mut due);
        for (peer, id, at) in due.drain(..) {
            let Some(Entry::Running {
                transfer,
                queued,
                local,
                armed,
            }) = self.table.get_mut(&peer)
            else {
                continue;
            };
            if transfer.id() != id {
                continue; // that transfer ended; this one has its own entry
            }
            if at != *armed {
                continue; // set again for an earlier time since
            }
            let mut rearm = |wheel: &mut Wheel<_>, deadline: Instant| {
                *armed = deadline;
                wheel.insert(deadline, (peer, id, deadline));
            };
            match transfer.on_timer(now) {
                Timer::Wait => rearm(&mut self.wheel, transfer.deadline()),
                Timer::Resend => {
                    rearm(&mut self.wheel, transfer.deadline());
                    if !*queued {
                        *queued = true;
                        self.dirty.push((peer, id));
                    }
                }
                Timer::Stalled => {
                    if let Some(packet) = transfer.stalled_packet() {
                        self.errors.push((peer, *local, packet));
                    }
                    self.end(peer, "incomplete");
                }
                Timer::TooSlow => {
                    if let Some(packet) = transfer.too_slow_packet() {
                        self.errors.push((peer, *local, packet));
                    }
                    self.end(peer, "incomplete");
                }
                Timer::Evicted => {
                    let local = *local;
                    self.end_evicted(peer, local);
                }
            }
        }
        self.due = due;
    }

    /// Ends `peer`'s transfer told to give way: "busy" if its client has
    /// acknowledged something, else nothing, as it is most likely a forged
    /// source's.
    fn end_evicted(&mut self, peer: SocketAddr, local: Option<Local>) {
        if let Some(Entry::Running { transfer, .. }) = self.table.get_mut(&peer) {
            transfer.end(TransferEnd::Evicted);
            if let Some(packet) = transfer.evicted_packet() {
                self.errors.push((peer, local, packet));
            }
        }
        self.end(peer, "incomplete");
    }

    /// Ends whatever `peer` has on this listener (its slot is freed).
    fn end(&mut self, peer: SocketAddr, outcome: &'static str) {
        match self.table.remove(&peer) {
            Some(Entry::Running { transfer, .. }) => record_outcome(transfer.started(), outcome),
            Some(Entry::Pending { task, .. }) => task.abort(),
            None => {}
        }
    }

    fn refuse(&mut self, peer: SocketAddr, local: Option<Local>, (code, message): Refusal) {
        self.errors.push((peer, local, error_packet(code, message)));
    }

    /// An error answering a request no ACK has proven: within the source's
    /// share of errors (`ErrorReplies`), else dropped.
    fn refuse_request(&mut self, peer: SocketAddr, local: Option<Local>, refusal: Refusal) {
        if self.shared.error_replies.allow(peer) {
            self.refuse(peer, local, refusal);
        }
    }

    /// Sends what the last events produced, in batches: error packets,
    /// then the window of every transfer that moved or timed out.
    async fn flush(&mut self) {
        if self.errors.is_empty() && self.dirty.is_empty() {
            return;
        }
        for (peer, id) in &self.dirty {
            if let Some(Entry::Running {
                transfer, queued, ..
            }) = self.table.get_mut(peer)
            {
                if transfer.id() == *id {
                    *queued = false;
                }
            }
        }
        let mut batch: Vec<Outgoing<'_>> = Vec::with_capacity(self.errors.len() + self.dirty.len());
        batch.extend(self.errors.iter().map(|(peer, local, p)| Outgoing {
            to: *peer,
            from: *local,
            packet: p,
        }));
        for (peer, id) in &self.dirty {
            if let Some(Entry::Running {
                transfer, local, ..
            }) = self.table.get(peer)
            {
                if transfer.id() == *id {
                    batch.extend(transfer.outgoing().map(|packet| Outgoing {
                        to: *peer,
                        from: *local,
                        packet,
                    }));
                }
            }
        }
        let mut sent = 0;
        while sent < batch.len() {
            let rest = &batch[sent..];
            match self
                .socket
                .try_io(Interest::WRITABLE, || mmsg::send(self.socket.as_fd(), rest))
            {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The send buffer is full: it drains in microseconds.
                    if self.socket.writable().await.is_err() {
                        break;
                    }
                }
                // The first packet could not go (an unreachable address):
                // it is lost like any datagram, the rest still go.
                Err(e) => {
                    tracing::debug!(client = %rest[0].to, error = %e, "TFTP send failed");
                    sent += 1;
                }
            }
        }
        drop(batch);
        self.errors.clear();
        self.dirty.clear();
    }
}

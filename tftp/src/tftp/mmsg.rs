//! Batched datagram I/O for single-port listeners: `recvmmsg` reads up to
//! `BATCH` packets and `sendmmsg` writes up to `BATCH` in one system call
//! each, neither allocating. Receiving goes through nix (rustix has no
//! `recvmmsg`), sending through rustix (nix's `sendmmsg` tells how many
//! went only through an iterator that reads addresses it never wrote).
//! Both are non-blocking; the caller waits for readiness.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use rustix::net::addr::SocketAddrArg;
use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

use super::packet::MAX_REQUEST;

/// Packets per system call: a boot storm's burst of ACKs is read in a few
/// calls, and a batch of buffers is 128 KiB per listener.
pub(super) const BATCH: usize = 64;

pub(super) struct Receiver {
    headers: MultiHeaders<SockaddrStorage>,
    buf: Box<[u8]>,
    /// Length and sender of each packet of the last batch.
    meta: [(usize, Option<SocketAddr>); BATCH],
}

impl Receiver {
    pub fn new() -> Receiver {
        Receiver {
            headers: MultiHeaders::preallocate(BATCH, None),
            buf: vec![0; BATCH * MAX_REQUEST].into(),
            meta: [(0, None); BATCH],
        }
    }

    /// Reads what is queued, up to `BATCH` packets; `WouldBlock` if none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut chunks = self.buf.chunks_mut(MAX_REQUEST);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                chunks.next().expect("BATCH buffers of MAX_REQUEST"),
            )]
        });
        let received = recvmmsg(
            fd,
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for (meta, message) in self.meta.iter_mut().zip(received) {
            *meta = (message.bytes, message.address.as_ref().and_then(to_std));
            n += 1;
        }
        Ok(n)
    }

    /// Packet `i` of the last batch and its sender.
    pub fn packet(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let (len, from) = self.meta[i];
        let start = i * MAX_REQUEST;
        (&self.buf[start..start + len.min(MAX_REQUEST)], from)
    }
}

/// Sends one batch at most: `packets[..BATCH]`; returns how many the
/// socket took (`WouldBlock` if none: its send buffer is full).
pub(super) fn send(fd: BorrowedFd<'_>, packets: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let packets = &packets[..packets.len().min(BATCH)];
    let addrs: [SocketAddrAny; BATCH] = std::array::from_fn(|i| {
        packets
            .get(i)
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |(to, _)| *to)
            .as_any()
    });
    let iovs: [[IoSlice<'_>; 1]; BATCH] =
        std::array::from_fn(|i| [IoSlice::new(packets.get(i).map_or(&[][..], |(_, p)| p))]);
    let mut controls: [SendAncillaryBuffer<'_, '_, '_>; BATCH] =
        std::array::from_fn(|_| SendAncillaryBuffer::default());
    let mut controls = controls.iter_mut();
    let mut headers: [MMsgHdr<'_>; BATCH] = std::array::from_fn(|i| {
        MMsgHdr::new_with_addr(
            &addrs[i],
            &iovs[i],
            controls.next().expect("BATCH controls"),
        )
    });
    Ok(sendmmsg(
        fd,
        &mut headers[..packets.len()],
        SendFlags::DONTWAIT,
    )?)
}

fn to_std(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

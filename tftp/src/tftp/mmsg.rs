//! Batched datagram I/O for single-port listeners: `recvmmsg` reads up to
//! `BATCH` packets and `sendmmsg` writes up to `BATCH` in one system call
//! each, neither allocating. Receiving goes through nix (rustix has no
//! `recvmmsg`). Sending calls libc itself: nix's `sendmmsg` puts one set
//! of control messages on every packet of a batch and tells how many went
//! only through an iterator that reads addresses it never wrote, and
//! rustix's has no IP_PKTINFO; a wildcard listener's answers each carry
//! their own source address (see `pktinfo.rs`). Both are non-blocking;
//! the caller waits for readiness. A ported listener's refusals go out
//! through the same `send`, one packet at a time.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage};

use super::packet::MAX_REQUEST;
use super::pktinfo::{self, Local};

/// Packets per system call: a boot storm's burst of ACKs is read in a few
/// calls, and a batch of buffers is 128 KiB per listener.
pub(super) const BATCH: usize = 64;

pub(super) struct Receiver {
    headers: MultiHeaders<SockaddrStorage>,
    buf: Box<[u8]>,
    /// Length, sender and destination of each packet of the last batch.
    meta: [(usize, Option<SocketAddr>, Option<Local>); BATCH],
}

impl Receiver {
    /// `destinations`: the socket was asked for each packet's destination
    /// (`pktinfo::enable`), so room is made for it.
    pub fn new(destinations: bool) -> Receiver {
        Receiver {
            headers: MultiHeaders::preallocate(BATCH, destinations.then(pktinfo::control_buffer)),
            buf: vec![0; BATCH * MAX_REQUEST].into(),
            meta: [(0, None, None); BATCH],
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
            let local = message.cmsgs().ok().and_then(pktinfo::from_control);
            *meta = (
                message.bytes,
                message.address.as_ref().and_then(to_std),
                local,
            );
            n += 1;
        }
        Ok(n)
    }

    /// Packet `i` of the last batch, its sender and its destination.
    pub fn packet(&self, i: usize) -> (&[u8], Option<SocketAddr>, Option<Local>) {
        let (len, from, local) = self.meta[i];
        let start = i * MAX_REQUEST;
        (&self.buf[start..start + len.min(MAX_REQUEST)], from, local)
    }
}

/// One datagram to send: to whom, from which of our addresses (`None`:
/// the socket's own), and its bytes.
#[derive(Clone, Copy)]
pub(super) struct Outgoing<'a> {
    pub to: SocketAddr,
    pub from: Option<Local>,
    pub packet: &'a [u8],
}

// SAFETY (const): CMSG_SPACE only does arithmetic on its argument.
const CONTROL_LEN: usize =
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) } as usize;

/// One packet's control message, aligned as the kernel reads a `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_LEN]);

/// Sends one batch at most: `packets[..BATCH]`; returns how many the
/// socket took (`WouldBlock` if none: its send buffer is full).
pub(super) fn send(fd: BorrowedFd<'_>, packets: &[Outgoing<'_>]) -> io::Result<usize> {
    let packets = &packets[..packets.len().min(BATCH)];
    let names: [SockaddrStorage; BATCH] = std::array::from_fn(|i| {
        SockaddrStorage::from(
            packets
                .get(i)
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.to),
        )
    });
    let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| {
        let packet = packets.get(i).map_or(&[][..], |p| p.packet);
        libc::iovec {
            iov_base: packet.as_ptr().cast_mut().cast(),
            iov_len: packet.len(),
        }
    });
    let mut controls = [Control([0; CONTROL_LEN]); BATCH];
    // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, packet) in packets.iter().enumerate() {
        let header = &mut headers[i].msg_hdr;
        header.msg_name = names[i].as_ptr().cast_mut().cast();
        header.msg_namelen = names[i].len();
        header.msg_iov = &mut iovs[i];
        header.msg_iovlen = 1;
        if let Some(from) = packet.from {
            header.msg_control = controls[i].0.as_mut_ptr().cast();
            // The whole buffer first: CMSG_FIRSTHDR checks there is room.
            header.msg_controllen = CONTROL_LEN as _;
            // SAFETY: the header points at `controls[i]`, aligned and
            // large enough for one message of either kind.
            header.msg_controllen = unsafe { write_source(header, from, packet.to) } as _;
        }
    }
    // SAFETY: every pointer in `headers[..n]` points into `names`, `iovs`,
    // `controls` or `packets`, all alive until the call returns.
    let sent = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            headers.as_mut_ptr(),
            packets.len() as u32,
            libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Writes the source-address message for a packet to `to` into the
/// header's control buffer; returns the buffer length the kernel should
/// read. An IPv4 source on an IPv6 socket (a mapped peer) goes as its
/// mapped form in IPV6_PKTINFO, which Linux accepts for mapped peers.
///
/// SAFETY: `header.msg_control` points at `header.msg_controllen` (at
/// least `CONTROL_LEN`) writable bytes, aligned for `cmsghdr`.
unsafe fn write_source(header: &libc::msghdr, from: Local, to: SocketAddr) -> usize {
    let cmsg = libc::CMSG_FIRSTHDR(header);
    let data = libc::CMSG_DATA(cmsg);
    match (from.ip, to) {
        (IpAddr::V4(ip), SocketAddr::V4(_)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let len = std::mem::size_of_val(&info) as u32;
            (*cmsg).cmsg_level = libc::IPPROTO_IP;
            (*cmsg).cmsg_type = libc::IP_PKTINFO;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len) as _;
            data.cast::<libc::in_pktinfo>().write_unaligned(info);
            libc::CMSG_SPACE(len) as usize
        }
        (ip, _) => {
            let ip = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: from.ifindex,
            };
            let len = std::mem::size_of_val(&info) as u32;
            (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
            (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len) as _;
            data.cast::<libc::in6_pktinfo>().write_unaligned(info);
            libc::CMSG_SPACE(len) as usize
        }
    }
}

pub(super) fn to_std(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

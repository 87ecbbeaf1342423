//! The address a request was sent to, on a listener bound to a wildcard
//! (`0.0.0.0` or `[::]`). Without it every answer leaves from whatever
//! address the route to the phone prefers. On a host with a floating
//! (VRRP, keepalived) or secondary address that is not the address the
//! phone asked, and phones, NATs and firewalls drop an answer from an
//! address they did not ask. So the kernel tells us each request's
//! destination (IP_PKTINFO, IPV6_PKTINFO), and every answer to it leaves
//! from that address: a transfer's own port is bound there, and packets
//! from the listening port carry it back as their source.
//!
//! A listener bound to one address needs none of this and asks for none.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, RawFd};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};

use tokio::io::Interest;

use super::mmsg::{self, Outgoing};

/// Where the answers to one request leave from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Local {
    pub ip: IpAddr,
    /// The interface the request came in on; kept only for an IPv6
    /// link-local address, which means nothing without it. Any other
    /// answer goes out by the routing table, like a bound socket's would.
    pub ifindex: u32,
}

impl Local {
    /// The address a transfer's own socket binds (port 0: the kernel picks).
    pub fn bind_addr(self) -> SocketAddr {
        match self.ip {
            IpAddr::V6(ip) if self.ifindex != 0 => {
                SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, self.ifindex))
            }
            ip => SocketAddr::new(ip, 0),
        }
    }
}

/// Asks the kernel for each packet's destination, if `addr` is a
/// wildcard; returns whether it did. A dual-stack `[::]` socket gets the
/// IPv4 packets' destinations as IPv4-mapped addresses.
pub(super) fn enable(socket: &impl AsFd, addr: SocketAddr) -> io::Result<bool> {
    if !addr.ip().is_unspecified() {
        return Ok(false);
    }
    match addr {
        SocketAddr::V4(_) => setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?,
        SocketAddr::V6(_) => setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?,
    }
    Ok(true)
}

/// Room for either control message (IPV6_PKTINFO's is the larger).
pub(super) fn control_buffer() -> Vec<u8> {
    nix::cmsg_space!(libc::in6_pktinfo)
}

/// The destination a packet's control messages name, if any.
pub(super) fn from_control(
    messages: impl IntoIterator<Item = ControlMessageOwned>,
) -> Option<Local> {
    messages.into_iter().find_map(|message| match message {
        ControlMessageOwned::Ipv4PacketInfo(info) => Some(Local {
            // The local address the packet was taken for (for a broadcast,
            // the receiving interface's): a valid source, unlike `ipi_addr`.
            ip: IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr))),
            ifindex: 0,
        }),
        ControlMessageOwned::Ipv6PacketInfo(info) => {
            let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
            let link_local = ip.is_unicast_link_local();
            Some(Local {
                ip: IpAddr::V6(ip),
                ifindex: if link_local { info.ipi6_ifindex } else { 0 },
            })
        }
        _ => None,
    })
}

/// One packet from a listener: its length, sender and destination (the
/// last only if [`enable`] asked for it).
pub(super) fn recv(
    fd: RawFd,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, Option<Local>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let message = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(control), MsgFlags::MSG_DONTWAIT)
        .map_err(io::Error::from)?;
    let local = message.cmsgs().ok().and_then(from_control);
    let peer = message.address.as_ref().and_then(mmsg::to_std);
    Ok((message.bytes, peer, local))
}

/// Sends one packet from a listener without waiting: from `local` if
/// given, else from the socket's own address. Dropped if the send buffer
/// is full; the client's retry asks again.
pub(super) fn try_send(
    socket: &tokio::net::UdpSocket,
    packet: &[u8],
    peer: SocketAddr,
    local: Option<Local>,
) {
    let outgoing = [Outgoing {
        to: peer,
        from: local,
        packet,
    }];
    let _ = socket.try_io(Interest::WRITABLE, || mmsg::send(socket.as_fd(), &outgoing));
}

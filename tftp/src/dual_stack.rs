//! Sockets on the IPv6 wildcard that take IPv4 too, on every host. Left
//! alone, whether `[::]` also serves IPv4 is the host's
//! `net.ipv6.bindv6only`: where that is 1, a node listening on `[::]`
//! started and shut out every IPv4 phone without a word, and resync's
//! `[::]:0` could send to no IPv4 phone or proxy. Every listener and
//! sender of this node binds through here.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections a TCP listener's kernel queue holds before they are
/// accepted: what `tokio::net::TcpListener::bind` asked for.
const TCP_BACKLOG: i32 = 128;

/// Clears IPV6_V6ONLY on `socket`, about to bind `addr`, when that is the
/// IPv6 wildcard or an IPv4-mapped address (which a socket bound to the
/// wildcard sees IPv4 packets arrive at, and which only a dual-stack
/// socket may bind). Any other socket is left as it is.
pub fn allow_ipv4(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    match addr.ip() {
        IpAddr::V6(ip) if ip.is_unspecified() || ip.to_ipv4_mapped().is_some() => {
            socket.set_only_v6(false)
        }
        _ => Ok(()),
    }
}

/// A UDP socket for `addr`, dual-stack as [`allow_ipv4`] says, not yet
/// bound: the caller sets what must precede the bind.
pub fn udp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    allow_ipv4(&socket, addr)?;
    Ok(socket)
}

/// A UDP socket bound to `addr` (blocking, as `std::net::UdpSocket::bind`
/// gives it), dual-stack on `[::]`.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = udp_socket(addr)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A TCP listener on `addr` as `tokio::net::TcpListener::bind` makes one
/// (SO_REUSEADDR, so a restart need not wait out the old connections),
/// dual-stack on `[::]`, non-blocking for tokio.
pub fn listen_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    allow_ipv4(&socket, addr)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;

    /// `[::]:0`, bound as this node binds it; a host without IPv6 fails
    /// the test saying so, rather than passing it untested.
    fn wildcard() -> SocketAddr {
        "[::]:0".parse().unwrap()
    }

    fn no_ipv6(e: io::Error) -> ! {
        panic!("cannot bind [::]:0, is IPv6 available on this machine (`ip -6 addr`)? {e}")
    }

    /// IPV6_V6ONLY is read back, not left to the host: at
    /// `net.ipv6.bindv6only = 1` it was on, and no IPv4 client got in.
    #[test]
    fn the_ipv6_wildcard_takes_ipv4_whatever_the_host_default() {
        let udp = bind_udp(wildcard()).unwrap_or_else(|e| no_ipv6(e));
        assert!(!SockRef::from(&udp).only_v6().unwrap());
        let tcp = listen_tcp(wildcard()).unwrap_or_else(|e| no_ipv6(e));
        assert!(!SockRef::from(&tcp).only_v6().unwrap());
        // A mapped address is bound only by a dual-stack socket.
        let mapped = bind_udp("[::ffff:127.0.0.1]:0".parse().unwrap()).unwrap();
        assert!(!SockRef::from(&mapped).only_v6().unwrap());
    }

    /// An IPv4 client reaches `[::]` over TCP and UDP.
    #[test]
    fn an_ipv4_client_reaches_the_ipv6_wildcard() {
        let udp = bind_udp(wildcard()).unwrap_or_else(|e| no_ipv6(e));
        let port = udp.local_addr().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"x", ("127.0.0.1", port)).unwrap();
        udp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4];
        let (n, from) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(
            (n, from.ip().to_canonical()),
            (1, client.local_addr().unwrap().ip())
        );

        let tcp = listen_tcp(wildcard()).unwrap_or_else(|e| no_ipv6(e));
        let port = tcp.local_addr().unwrap().port();
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }
}

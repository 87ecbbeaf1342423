//! The TFTP front end, on async-tftp. async-tftp runs its own executor
//! (async-io, not tokio) and holds one mutex across `read_req_open`, so the
//! handler only looks up and renders from memory (the same `provision()`
//! core HTTP uses) and never waits on anything. It has no limit on
//! concurrent transfers of its own: the handler counts them and answers
//! "busy" past the cap instead of queueing without bound.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use futures_lite::AsyncRead;

use crate::error::ProvisionError;
use crate::provision::{Provisioner, Request};

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
}

impl Default for TftpOptions {
    fn default() -> Self {
        TftpOptions {
            max_transfers: 1024,
            blksize_limit: 1468,
            windowsize_limit: 16,
            // 2 s x (1 + 4 retries) = a dead client frees its slot in ~10 s.
            timeout: Duration::from_secs(2),
            max_send_retries: 4,
            recv_buffer: 4 << 20,
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

/// Serves TFTP on `socket` on a thread of its own until `shutdown` completes.
pub fn spawn(
    socket: UdpSocket,
    provisioner: Arc<Provisioner>,
    options: TftpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    let handler = ProvisionHandler {
        provisioner,
        active: Arc::new(AtomicUsize::new(0)),
        max_transfers: options.max_transfers.max(1),
    };
    std::thread::Builder::new()
        .name("tftp".into())
        .spawn(move || {
            async_io::block_on(async move {
                let server = TftpServerBuilder::with_handler(handler)
                    .std_socket(socket)
                    .map_err(to_io)?
                    .timeout(options.timeout)
                    .max_send_retries(options.max_send_retries)
                    .block_size_limit(options.blksize_limit)
                    .window_size_limit(options.windowsize_limit)
                    .build()
                    .await
                    .map_err(to_io)?;
                futures_lite::future::or(async { server.serve().await.map_err(to_io) }, async {
                    shutdown.await;
                    Ok(())
                })
                .await
            })
        })
}

fn to_io(e: async_tftp::Error) -> io::Error {
    io::Error::other(e.to_string())
}

struct ProvisionHandler {
    provisioner: Arc<Provisioner>,
    active: Arc<AtomicUsize>,
    max_transfers: usize,
}

/// Holds one of the capped transfer slots until the transfer ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a transfer reads from: rendered bytes, or a static file opened on
/// the blocking pool at the first read, after async-tftp released its lock.
enum Source {
    Memory { body: Arc<[u8]>, position: usize },
    Opening(Pin<Box<dyn Future<Output = io::Result<std::fs::File>> + Send>>),
    File(blocking::Unblock<std::fs::File>),
}

pub struct Transfer {
    source: Source,
    _slot: Slot,
}

impl AsyncRead for Transfer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match &mut self.source {
                Source::Memory { body, position } => {
                    let remaining = &body[(*position).min(body.len())..];
                    let n = remaining.len().min(buf.len());
                    buf[..n].copy_from_slice(&remaining[..n]);
                    *position += n;
                    return Poll::Ready(Ok(n));
                }
                Source::Opening(open) => match open.as_mut().poll(cx) {
                    Poll::Ready(Ok(file)) => {
                        self.source = Source::File(blocking::Unblock::new(file))
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                },
                Source::File(file) => return Pin::new(file).poll_read(cx, buf),
            }
        }
    }
}

impl Handler for ProvisionHandler {
    type Reader = Transfer;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let Some(path) = path.to_str() else {
            return Err(packet::Error::FileNotFound);
        };
        if self.active.fetch_add(1, Ordering::AcqRel) >= self.max_transfers {
            self.active.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%client, path, "TFTP transfer cap reached; refusing");
            return Err(packet::Error::Msg("server busy, try again".into()));
        }
        let slot = Slot(self.active.clone());
        match self.provisioner.provision(&Request {
            path,
            user_agent: None,
            remote: Some(client.ip()),
            protocol: "tftp",
            query: None,
        }) {
            Ok(rendered) => {
                let (source, size) = match &rendered.file {
                    Some(file) => {
                        let path = file.path.clone();
                        let open = blocking::unblock(move || std::fs::File::open(path));
                        (Source::Opening(Box::pin(open)), file.len)
                    }
                    None => (
                        Source::Memory {
                            body: rendered.body.clone(),
                            position: 0,
                        },
                        rendered.body.len() as u64,
                    ),
                };
                Ok((
                    Transfer {
                        source,
                        _slot: slot,
                    },
                    Some(size),
                ))
            }
            // A banned source learns nothing: it looks like any unknown file.
            Err(ProvisionError::NotFound | ProvisionError::Banned) => {
                Err(packet::Error::FileNotFound)
            }
            Err(ProvisionError::BadPath(why)) => {
                tracing::info!(%client, path, reason = why, "refused TFTP path");
                Err(packet::Error::PermissionDenied)
            }
            Err(e) => {
                tracing::error!(%client, path, error = %e, "TFTP provisioning failed");
                Err(packet::Error::Msg("internal error".into()))
            }
        }
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::info!(%client, path = %path.display(), "TFTP write refused (read-only server)");
        Err(packet::Error::PermissionDenied)
    }
}

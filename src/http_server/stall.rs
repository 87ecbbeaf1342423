//! A stream whose writes give up when the client stops reading. hyper
//! bounds how long a request's headers may take, not how long a response
//! may wait for the client's window to open: a client that asks for a
//! large file and never reads would hold its connection (and its place
//! under `max_connections`) for good. A slow reader is fine; only a write
//! that makes no progress at all for `stall` ends the connection. How
//! slowly it reads is measured here too (`slow::Meter`): a full listener
//! ends the slowest reader's connection through this stream, whichever
//! path (the first request's, hyper's, TLS's) is writing.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::slow::Meter;

pub(super) struct Stalling<S> {
    inner: S,
    stall: Duration,
    /// Armed while a write is blocked; dropped as soon as one progresses.
    blocked: Option<Pin<Box<Sleep>>>,
    meter: Meter,
}

impl<S: Socket> Stalling<S> {
    pub(super) fn new(inner: S, stall: Duration, meter: Meter) -> Self {
        Stalling {
            inner,
            stall,
            blocked: None,
            meter,
        }
    }

    /// The stream, for hyper to carry on with; `None` once the connection
    /// has been evicted (its place is a newcomer's, and the `Meter` that
    /// knows it goes with this wrapper).
    pub(super) fn into_inner(self) -> Option<S> {
        match self.check() {
            Ok(()) => Some(self.inner),
            Err(_) => None,
        }
    }

    /// Fails once the connection is evicted, and makes its close a reset:
    /// a FIN would wait behind the queued response, which a client this
    /// slow takes for hours, and the kernel would hold the socket and its
    /// buffer that long.
    fn check(&self) -> io::Result<()> {
        let checked = self.meter.check();
        if checked.is_err() {
            let _ = socket2::SockRef::from(&self.inner.socket()).set_linger(Some(Duration::ZERO));
        }
        checked
    }

    /// `accepted`: what a write that went through took of its buffer.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
        accepted: usize,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.blocked = None;
            self.meter.progressed(accepted, self.inner.socket());
            return poll;
        }
        if let Err(e) = self.meter.waits(cx, self.inner.socket()) {
            return Poll::Ready(Err(e));
        }
        let stall = self.stall;
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The socket under a stream (TLS's included).
pub(super) trait Socket {
    fn socket(&self) -> BorrowedFd<'_>;
}

impl Socket for TcpStream {
    fn socket(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn socket(&self) -> BorrowedFd<'_> {
        self.get_ref().0.as_fd()
    }
}

impl<S: AsyncRead + Socket + Unpin> AsyncRead for Stalling<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // An evicted connection may be between writes when woken.
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Socket + Unpin> AsyncWrite for Stalling<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        let accepted = written(&poll);
        self.progress(cx, poll, accepted)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let accepted = written(&poll);
        self.progress(cx, poll, accepted)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, poll, 0)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(cx, poll, 0)
    }
}

fn written(poll: &Poll<io::Result<usize>>) -> usize {
    match poll {
        Poll::Ready(Ok(n)) => *n,
        _ => 0,
    }
}

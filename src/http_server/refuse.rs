//! Telling a refused connection "503".
//!
//! Over plain TCP the answer is written by the accept loop itself, at
//! once: a fresh socket's send buffer always takes its hundred bytes, and
//! our side is shut at once after it. What takes time is the close: closing
//! with the client's request still unread sends a reset, and a client that
//! gets the reset before it has read the answer may never see the answer.
//! So a refusal then waits up to `REFUSAL_TIME` for the client to close,
//! reading what it sends. Those waits are bounded (`MAX_REFUSALS`); past
//! the bound the request already in is read and the socket closed at once.
//! A reset is then possible only for bytes that come later, after the 503.
//!
//! Over TLS the answer needs a handshake first, a few milliseconds of CPU
//! each: it is made only within the bound, and past it the connection is
//! closed without one.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::{BUSY, MAX_HEAD_BYTES};

/// How long a refused connection may take to be told so, and to close.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Answers a plain connection 503 now, and closes it once its client has,
/// or at once if too many refusals wait already.
pub(super) fn plain(
    stream: std::net::TcpStream,
    refusals: &Arc<Semaphore>,
    connections: &TaskTracker,
) {
    let told = tell_at_once(&stream);
    match refusals.clone().try_acquire_owned() {
        Ok(refusal) => {
            connections.spawn(async move {
                let Ok(stream) = TcpStream::from_std(stream) else {
                    return;
                };
                if told {
                    wait_for_close(stream).await;
                } else {
                    refuse(stream).await;
                }
                drop(refusal);
            });
        }
        Err(_) => {
            if told {
                discard_what_has_come(&stream);
            }
        }
    }
}

/// Answers a TLS connection 503 after its handshake, if few enough
/// refusals are under way; else it is closed.
pub(super) fn tls(
    stream: std::net::TcpStream,
    tls: TlsAcceptor,
    refusals: &Arc<Semaphore>,
    connections: &TaskTracker,
) {
    let Ok(refusal) = refusals.clone().try_acquire_owned() else {
        return;
    };
    connections.spawn(async move {
        let Ok(stream) = TcpStream::from_std(stream) else {
            return;
        };
        if let Ok(Ok(stream)) = tokio::time::timeout(REFUSAL_TIME, tls.accept(stream)).await {
            refuse(stream).await;
        }
        drop(refusal);
    });
}

/// Writes the 503 on the non-blocking socket and shuts our side; `false`
/// if the socket did not take it whole at once.
fn tell_at_once(stream: &std::net::TcpStream) -> bool {
    let mut socket = stream;
    matches!(socket.write(BUSY), Ok(written) if written == BUSY.len())
        && stream.shutdown(std::net::Shutdown::Write).is_ok()
}

/// Reads what the client has sent so far (a request head at most), so that
/// the close that follows is a plain one.
fn discard_what_has_come(stream: &std::net::TcpStream) {
    let mut socket = stream;
    let mut sink = [0u8; 4096];
    let mut read = 0;
    while read < MAX_HEAD_BYTES {
        match socket.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

async fn wait_for_close(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Answers 503 and closes gently, on a stream that may have to wait.
async fn refuse<S>(mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

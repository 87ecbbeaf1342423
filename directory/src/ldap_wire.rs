//! The connection between a tenant's LDAP server and ldap3. The server is
//! untrusted, and ldap3 believes it: its decoder buffers a message of any
//! announced length until it is whole (a 4-byte length field announces up
//! to 4 GiB), re-parses the buffer on every read, and parses nesting by
//! recursion, so a message of a few tens of KiB nested deep enough
//! overflows a worker's stack and takes the whole process down. So ldap3
//! never reads the server's socket. We open it (to an address the network
//! check passed), do StartTLS and TLS ourselves, and relay to ldap3 over a
//! socket pair only whole messages of at most `MAX_MESSAGE` bytes, nested
//! at most `MAX_DEPTH` deep; anything else closes the connection, which
//! ldap3 sees as the server hanging up. ldap3 still encodes requests,
//! matches answers and runs searches; requests pass through unchanged.
//! Each search's entries pass only up to the connection's
//! `SearchBounds` (`ldap_searches.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, StdStream};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::DirectoryError;
use crate::ldap_searches::{SearchBounds, Searches};

/// Largest LDAP message passed on to ldap3. An entry carries only the
/// attributes a source asks for (a name and a few numbers), so this is
/// far above any real reply, and what one connection can make ldap3 hold.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// Deepest nesting of elements in a message passed on; LDAP's own replies
/// nest at most 7 deep (an entry's attribute values inside controls).
const MAX_DEPTH: usize = 16;

/// How the session is protected, from the source's URL and settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Security {
    Plain,
    /// `ldaps://`: TLS from the first byte.
    Tls,
    /// `ldap://` with `starttls`: the extended operation, then TLS.
    StartTls,
}

/// An ldap3 connection to the first of `addrs` that accepts, through the
/// relay. `host` is the name the server's certificate must carry. One
/// `timeout` bounds TCP, StartTLS and the TLS handshake together; `bounds`
/// what each search passes on.
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    host: &str,
    security: Security,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    source: &str,
    bounds: SearchBounds,
) -> Result<(LdapConnAsync, Ldap), DirectoryError> {
    let connect = async {
        let mut tcp = first_to_accept(addrs)
            .await
            .map_err(|e| DirectoryError::Ldap(e.to_string()))?;
        let config = || {
            tls.clone()
                .ok_or_else(|| DirectoryError::Ldap("TLS without a configuration".into()))
        };
        let ldap3_end = match security {
            Security::Plain => spawn_relay(tcp, source, bounds)?,
            Security::Tls => spawn_relay(handshake(tcp, host, config()?).await?, source, bounds)?,
            Security::StartTls => {
                start_tls(&mut tcp).await?;
                spawn_relay(handshake(tcp, host, config()?).await?, source, bounds)?
            }
        };
        // ldap3 takes a socket pair's end only under the `ldapi` scheme;
        // the URL names nothing it connects to.
        let settings = LdapConnSettings::new().set_std_stream(StdStream::Unix(ldap3_end));
        LdapConnAsync::with_settings(settings, "ldapi://relay")
            .await
            .map_err(|e| DirectoryError::Ldap(e.to_string()))
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|e| DirectoryError::Ldap(LdapError::from(e).to_string()))?
}

/// Nagle stays on, as on the sockets ldap3 opens itself.
async fn first_to_accept(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, DirectoryError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| DirectoryError::Ldap(format!("TLS server name {host:?}: {e}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| DirectoryError::Ldap(format!("TLS: {e}")))
}

/// RFC 4511's StartTLS OID.
const START_TLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";

/// Sends the StartTLS extended request (message 1) and reads its answer,
/// one checked message, before any TLS byte moves.
async fn start_tls(tcp: &mut TcpStream) -> Result<(), DirectoryError> {
    let failed = |why: String| DirectoryError::Ldap(format!("StartTLS: {why}"));
    let oid_len = START_TLS_OID.len() as u8;
    let mut request = vec![
        0x30,
        oid_len + 7,
        0x02,
        0x01,
        0x01,
        0x77,
        oid_len + 2,
        0x80,
        oid_len,
    ];
    request.extend_from_slice(START_TLS_OID);
    tcp.write_all(&request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut buf = Vec::with_capacity(1024);
    let len = loop {
        match message_len(&buf).map_err(|why| failed(why.into()))? {
            Some(len) if len > 64 * 1024 => return Err(failed("answer over 64 KiB".into())),
            Some(len) if buf.len() >= len => break len,
            _ => {}
        }
        if tcp
            .read_buf(&mut buf)
            .await
            .map_err(|e| failed(e.to_string()))?
            == 0
        {
            return Err(failed("the server closed the connection".into()));
        }
    };
    if buf.len() != len {
        // Nothing may come between the answer and our TLS hello.
        return Err(failed("data after the answer".into()));
    }
    check(&buf).map_err(|why| failed(why.into()))?;
    match extended_result(&buf) {
        Some((1, 0)) => Ok(()),
        Some((1, code)) => Err(failed(format!("refused, result code {code}"))),
        _ => Err(failed("not an answer to the request".into())),
    }
}

/// Message id and result code of an ExtendedResponse, if that is what
/// `message` (already checked) is.
fn extended_result(message: &[u8]) -> Option<(u64, u64)> {
    let (whole, _) = element(message)?;
    let (id, rest) = element(whole.content)?;
    let (op, _) = element(rest)?;
    let (code, _) = element(op.content)?;
    let number = |bytes: &[u8]| bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
    let shape = id.tag == 0x02 && op.tag == 0x78 && code.tag == 0x0a;
    (shape && id.content.len() <= 4 && code.content.len() <= 4)
        .then(|| (number(id.content), number(code.content)))
}

/// One element of a message: its tag byte and its content.
pub(crate) struct Element<'a> {
    pub tag: u8,
    pub content: &'a [u8],
}

/// The element at the start of `bytes`, and what follows it.
pub(crate) fn element(bytes: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (header, len) = header(bytes).ok()??;
    let end = header.checked_add(len)?;
    let content = bytes.get(header..end)?;
    Some((
        Element {
            tag: bytes[0],
            content,
        },
        &bytes[end..],
    ))
}

/// ldap3's end of a socket pair whose other end a task relays to and from
/// `server`.
fn spawn_relay<S>(
    server: S,
    source: &str,
    bounds: SearchBounds,
) -> Result<std::os::unix::net::UnixStream, DirectoryError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let pair = || -> std::io::Result<_> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        Ok((tokio::net::UnixStream::from_std(ours)?, theirs))
    };
    let (ours, theirs) = pair().map_err(|e| DirectoryError::Ldap(format!("relay: {e}")))?;
    let source = source.to_string();
    tokio::spawn(async move {
        let searches = Mutex::new(Searches::new(bounds));
        // A lookup's connection lives as long as its pool keeps it: the
        // first drop is told when it happens, the sum when it closes.
        let first_drop = || {
            tracing::info!(
                source,
                max_entries = bounds.entries,
                max_bytes = bounds.bytes,
                "LDAP server sent a search more results than this node reads; dropping the rest (once per connection)"
            );
        };
        if let Err(why) = relay(server, ours, &searches, first_drop).await {
            tracing::info!(source, reason = %why, "LDAP connection closed: the server broke the protocol's bounds");
        }
        let dropped = lock(&searches).dropped;
        if dropped > 0 {
            tracing::info!(
                source,
                dropped,
                "LDAP connection closed; it dropped this many search results past the bounds"
            );
        }
    });
    Ok(theirs)
}

/// Until either side closes: requests pass as they are, replies only as
/// whole checked messages, each search's results up to the bounds in
/// `searches`. Returns why it closed the connection itself.
async fn relay<S>(
    server: S,
    ldap3: tokio::net::UnixStream,
    searches: &Mutex<Searches>,
    first_drop: impl FnOnce(),
) -> Result<(), &'static str>
where
    S: AsyncRead + AsyncWrite,
{
    let (mut server_rx, mut server_tx) = tokio::io::split(server);
    let (mut ldap3_rx, mut ldap3_tx) = ldap3.into_split();
    // ldap3's own requests, whole, so that a search's count starts with it
    // and ends with its abandon. (The two loops take turns on one task and
    // hold the lock across no await: it is never contended.)
    let requests = async {
        let mut buf = Vec::with_capacity(4 * 1024);
        loop {
            let mut whole = 0;
            while let Ok(Some(len)) = message_len(&buf[whole..]) {
                if buf.len() - whole < len {
                    break;
                }
                lock(searches).request(&buf[whole..whole + len]);
                whole += len;
            }
            if whole > 0 {
                if server_tx.write_all(&buf[..whole]).await.is_err() {
                    return;
                }
                buf.drain(..whole);
            }
            if message_len(&buf).is_err() {
                // Never from ldap3; passed on untracked rather than held.
                if server_tx.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
            }
            match ldap3_rx.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let replies = async {
        let mut buf = Vec::with_capacity(64 * 1024);
        // What goes on when some of the messages read are dropped.
        let mut kept = Vec::new();
        let mut first_drop = Some(first_drop);
        loop {
            // Every whole message read so far goes on in one write: a
            // read of a directory sync holds dozens of entries.
            let (mut whole, mut dropping) = (0, false);
            let dropped_before = lock(searches).dropped;
            kept.clear();
            while let Some(len) = message_len(&buf[whole..])? {
                if buf.len() - whole < len {
                    break;
                }
                let message = &buf[whole..whole + len];
                check(message)?;
                let pass = lock(searches).pass(message)?;
                if !pass && !dropping {
                    dropping = true;
                    kept.extend_from_slice(&buf[..whole]);
                }
                if pass && dropping {
                    kept.extend_from_slice(message);
                }
                whole += len;
            }
            if dropping {
                metrics::counter!("dialtone_directory_ldap_results_dropped_total")
                    .increment(lock(searches).dropped - dropped_before);
                if let Some(tell) = first_drop.take() {
                    tell();
                }
            }
            let out = if dropping { &kept[..] } else { &buf[..whole] };
            if !out.is_empty() && ldap3_tx.write_all(out).await.is_err() {
                return Ok(()); // ldap3 is gone
            }
            buf.drain(..whole);
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
            match server_rx.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = requests => Ok(()),
        closed = replies => closed,
    }
}

fn lock(searches: &Mutex<Searches>) -> std::sync::MutexGuard<'_, Searches> {
    searches.lock().unwrap_or_else(|e| e.into_inner())
}

/// The length of the message at the start of `buf`, header included, once
/// its header is there; an error for what ldap3 must never be handed.
fn message_len(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != 0x30 {
        return Err("a message that is not a SEQUENCE");
    }
    let Some((header, len)) = header(buf)? else {
        return Ok(None);
    };
    if len > MAX_MESSAGE - header {
        return Err("a message over 1 MiB");
    }
    Ok(Some(header + len))
}

/// An element's header as ldap3's decoder reads it (one tag byte; a short
/// length, or a long one of 1 to 4 bytes): its size and the content's
/// length, or `None` if not all there yet. The indefinite form and longer
/// lengths are refused; LDAP uses neither.
fn header(bytes: &[u8]) -> Result<Option<(usize, usize)>, &'static str> {
    let Some(&first) = bytes.get(1) else {
        return Ok(None);
    };
    if first < 0x80 {
        return Ok(Some((2, usize::from(first))));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return Err("a length in a form LDAP does not use");
    }
    let Some(digits) = bytes.get(2..2 + count) else {
        return Ok(None);
    };
    let len = digits
        .iter()
        .fold(0usize, |n, b| (n << 8) | usize::from(*b));
    Ok(Some((2 + count, len)))
}

/// Walks a whole message's elements without recursion: every element
/// fits inside its parent exactly, none nests deeper than `MAX_DEPTH`,
/// and the message holds a message id and an operation (ldap3 panics on
/// a message without them).
fn check(message: &[u8]) -> Result<(), &'static str> {
    let overrun = "an element longer than what holds it";
    let mut open: Vec<usize> = Vec::with_capacity(MAX_DEPTH);
    let (mut pos, mut top_level) = (0, 0);
    while pos < message.len() {
        let limit = open.last().copied().unwrap_or(message.len());
        let (header, len) = header(&message[pos..limit])?.ok_or(overrun)?;
        let end = pos.checked_add(header + len).ok_or(overrun)?;
        if end > limit {
            return Err(overrun);
        }
        if open.len() == 1 {
            top_level += 1;
        }
        if message[pos] & 0x20 != 0 {
            if open.len() == MAX_DEPTH {
                return Err("elements nested too deep");
            }
            open.push(end);
            pos += header;
        } else {
            pos = end;
        }
        while open.last() == Some(&pos) {
            open.pop();
        }
    }
    let (whole, _) = element(message).ok_or(overrun)?;
    let id_first = whole.content.first() == Some(&0x02);
    if top_level < 2 || !id_first {
        return Err("a message without an id and an operation");
    }
    Ok(())
}

#[cfg(test)]
#[path = "ldap_wire_tests.rs"]
mod tests;

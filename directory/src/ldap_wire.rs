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
//! `SearchBounds` (`ldap_searches.rs`); the relay is `ldap_relay.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, StdStream};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::DirectoryError;
use crate::ldap::server_text;
use crate::ldap_relay::spawn_relay;
use crate::ldap_searches::SearchBounds;
use crate::source_label::SourceLabel;

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
    source: &SourceLabel,
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
            Security::Plain => spawn_relay(tcp, source.clone(), bounds)?,
            Security::Tls => spawn_relay(
                handshake(tcp, host, config()?).await?,
                source.clone(),
                bounds,
            )?,
            Security::StartTls => {
                start_tls(&mut tcp).await?;
                spawn_relay(
                    handshake(tcp, host, config()?).await?,
                    source.clone(),
                    bounds,
                )?
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
        // rustls names the certificate's names, which the tenant's server
        // chose (escape sequences, bidi overrides, kilobytes of them).
        .map_err(|e| DirectoryError::Ldap(format!("TLS: {}", server_text(&e.to_string()))))
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

/// The length of the message at the start of `buf`, header included, once
/// its header is there; an error for what ldap3 must never be handed.
pub(crate) fn message_len(buf: &[u8]) -> Result<Option<usize>, &'static str> {
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
/// and the message holds a message id, an operation and well-formed
/// controls if any (ldap3 panics on a message without them).
pub(crate) fn check(message: &[u8]) -> Result<(), &'static str> {
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
    if top_level < 2 {
        return Err("a message without an id and an operation");
    }
    shaped(message)
}

/// The message's top level as ldap3's decoder takes it without panicking:
/// an INTEGER id, an operation (APPLICATION class), and at most the
/// controls (`[0]`), each a type (UTF-8), an optional criticality with a
/// value, and an optional value. The elements are already known to fit.
fn shaped(message: &[u8]) -> Result<(), &'static str> {
    let unshaped = "a message without an id and an operation";
    let (whole, _) = element(message).ok_or(unshaped)?;
    let (id, rest) = element(whole.content).ok_or(unshaped)?;
    let (op, rest) = element(rest).ok_or(unshaped)?;
    if id.tag != 0x02 || op.tag & 0xc0 != 0x40 {
        return Err(unshaped);
    }
    if rest.is_empty() {
        return Ok(());
    }
    let bad = "controls ldap3 cannot read";
    let (controls, rest) = element(rest).ok_or(bad)?;
    if controls.tag != 0xa0 || !rest.is_empty() {
        return Err(bad);
    }
    let mut next = controls.content;
    while let Some((control, after)) = element(next) {
        next = after;
        let (ctype, mut parts) = element(control.content).ok_or(bad)?;
        if control.tag != 0x30 || ctype.tag != 0x04 || std::str::from_utf8(ctype.content).is_err() {
            return Err(bad);
        }
        if let Some((critical, after)) = element(parts).filter(|(e, _)| e.tag == 0x01) {
            if critical.content.is_empty() {
                return Err(bad);
            }
            parts = after;
        }
        if let Some((value, after)) = element(parts) {
            if value.tag != 0x04 || !after.is_empty() {
                return Err(bad);
            }
        } else if !parts.is_empty() {
            return Err(bad);
        }
    }
    if next.is_empty() {
        Ok(())
    } else {
        Err(bad)
    }
}

/// A search result entry as ldap3's `SearchEntry`, or `None` where ldap3's
/// `SearchEntry::construct` would panic: a DN or attribute type that is
/// not UTF-8, or parts missing or of the wrong form. The relay bounds the
/// nesting this walks.
pub(crate) fn search_entry(message: ldap3::ResultEntry) -> Option<ldap3::SearchEntry> {
    use ldap3::asn1::{StructureTag, PL};
    fn text(tag: &StructureTag) -> bool {
        matches!(&tag.payload, PL::P(bytes) if std::str::from_utf8(bytes).is_ok())
    }
    fn parts(tag: &StructureTag) -> Option<&[StructureTag]> {
        match &tag.payload {
            PL::C(parts) => Some(parts),
            PL::P(_) => None,
        }
    }
    let attribute = |attr: &StructureTag| match parts(attr) {
        Some([kind, values, ..]) => {
            text(kind)
                && parts(values).is_some_and(|vs| vs.iter().all(|v| matches!(v.payload, PL::P(_))))
        }
        _ => false,
    };
    let entry = &message.0;
    let well_formed = entry.id == 4
        && match parts(entry) {
            Some([dn, attrs, ..]) => {
                text(dn) && parts(attrs).is_some_and(|attrs| attrs.iter().all(attribute))
            }
            _ => false,
        };
    well_formed.then(|| ldap3::SearchEntry::construct(message))
}

#[cfg(test)]
#[path = "ldap_wire_tests.rs"]
pub(crate) mod tests;

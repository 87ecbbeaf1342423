//! The relay between a tenant's LDAP server and ldap3 (`ldap_wire.rs` says
//! why ldap3 never reads the server's socket): requests pass unchanged,
//! replies only as whole messages `ldap_wire::check` accepts, and each
//! search's results only up to the connection's `SearchBounds`
//! (`ldap_searches.rs`).

use std::sync::Mutex;

use dialtone_sync::TenantLogLimit;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::DirectoryError;
use crate::ldap_searches::{SearchBounds, Searches};
use crate::ldap_wire::{check, message_len};
use crate::source_label::SourceLabel;

/// The relay's own lines, which a tenant's server causes at will: each
/// connection it floods or breaks writes one, and a lookup opens another
/// when the last one fails. One a second per tenant, so that one tenant's
/// server cannot fill the log nor hide another tenant's lines.
static RELAY_LOG: TenantLogLimit = TenantLogLimit::new();

/// ldap3's end of a socket pair whose other end a task relays to and from
/// `server`.
pub(crate) fn spawn_relay<S>(
    server: S,
    source: SourceLabel,
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
    tokio::spawn(async move {
        let searches = Mutex::new(Searches::new(bounds));
        let SourceLabel { tenant, id, name } = &source;
        // A lookup's connection lives as long as its pool keeps it: the
        // first drop is told when it happens, the sum when it closes.
        let first_drop = || {
            if let Some(skipped) = RELAY_LOG.allow(*tenant) {
                tracing::info!(
                    tenant,
                    source_id = id,
                    source = ?name,
                    max_entries = bounds.entries,
                    max_bytes = bounds.bytes,
                    skipped,
                    "LDAP server sent a search more results than this node reads; dropping the rest (once per connection)"
                );
            }
        };
        if let Err(why) = relay(server, ours, &searches, first_drop).await {
            if let Some(skipped) = RELAY_LOG.allow(*tenant) {
                tracing::info!(tenant, source_id = id, source = ?name, reason = %why, skipped, "LDAP connection closed: the server broke the protocol's bounds");
            }
        }
        let dropped = lock(&searches).dropped;
        if dropped > 0 {
            if let Some(skipped) = RELAY_LOG.allow(*tenant) {
                tracing::info!(
                    tenant,
                    source_id = id,
                    source = ?name,
                    dropped,
                    skipped,
                    "LDAP connection closed; it dropped this many search results past the bounds"
                );
            }
        }
    });
    Ok(theirs)
}

/// Until either side closes: requests pass as they are, replies only as
/// whole checked messages, each search's results up to the bounds in
/// `searches`. Returns why it closed the connection itself.
pub(crate) async fn relay<S>(
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
                lock(searches).request(&buf[whole..whole + len])?;
                whole += len;
            }
            if whole > 0 {
                if server_tx.write_all(&buf[..whole]).await.is_err() {
                    return Ok(());
                }
                buf.drain(..whole);
            }
            if message_len(&buf).is_err() {
                // Never from ldap3; passed on untracked rather than held.
                if server_tx.write_all(&buf).await.is_err() {
                    return Ok(());
                }
                buf.clear();
            }
            match ldap3_rx.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
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
        closed = requests => closed,
        closed = replies => closed,
    }
}

pub(crate) fn lock(searches: &Mutex<Searches>) -> std::sync::MutexGuard<'_, Searches> {
    searches.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "ldap_relay_tests.rs"]
mod tests;

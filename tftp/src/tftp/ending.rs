//! How a transfer ended, and what that leaves behind: the phone's
//! history line (written once the transfer is over, and only if its
//! client acknowledged a packet), and for a client's own ERROR a count by
//! code and a log line.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::provision::{Provisioner, Unproven};

use super::limits::LogLimit;

/// How a transfer ended, as its history line says.
#[derive(Debug)]
pub(super) enum TransferEnd {
    /// The client acknowledged the last block.
    Completed,
    /// The client sent an ERROR: its code, and its text as
    /// [`client_text`] leaves it.
    ClientError { code: u16, message: String },
    /// No acknowledgement within the retries or the stall bound.
    Stalled,
    /// The client acknowledged under the minimum rate.
    TooSlow,
    /// Still running at the end of the shutdown's grace period.
    ShutDown,
    /// Gave its slot to a new request (only ever a transfer no ACK had
    /// answered, so in practice never on record).
    Evicted,
    /// The client asked for another file from the same port first.
    Replaced,
    /// The client's host refused our packets (ICMP port unreachable).
    ClientGone,
    /// Ended on our side: the file could not be read, a packet could not
    /// be sent, a panic.
    Failed,
}

impl TransferEnd {
    /// Ended by what the client did or did not do, not by the server.
    pub(super) fn is_the_clients(&self) -> bool {
        matches!(
            self,
            TransferEnd::ClientError { .. } | TransferEnd::Stalled | TransferEnd::ClientGone
        )
    }

    /// The history line's `outcome`. A completed transfer keeps the "ok"
    /// every reader of history takes for a served fetch (the fleet view,
    /// resync's refetch watch, a direct NOTIFY's address); anything else
    /// starts with a short word for how it ended (`client-error` when the
    /// phone itself said no), then says it in words.
    pub(super) fn history_outcome(&self) -> String {
        match self {
            TransferEnd::Completed => "ok".into(),
            TransferEnd::ClientError { code, message } if message.is_empty() => {
                format!("client-error {code} ({})", code_meaning(*code))
            }
            TransferEnd::ClientError { code, message } => {
                format!(
                    "client-error {code} ({}): \"{message}\"",
                    code_meaning(*code)
                )
            }
            TransferEnd::Stalled => "stalled: no acknowledgement within the retries".into(),
            TransferEnd::TooSlow => "too-slow: acknowledged under the minimum rate".into(),
            TransferEnd::ShutDown => "shutdown: cut by the server's shutdown".into(),
            TransferEnd::Evicted => "evicted: gave way to another request".into(),
            TransferEnd::Replaced => "replaced: the client asked for another file".into(),
            TransferEnd::ClientGone => "client-gone: its port refused our packets".into(),
            TransferEnd::Failed => "error: the transfer failed on the server's side".into(),
        }
    }
}

/// What the client's error codes mean (RFC 1350; 8 is RFC 2347's).
fn code_meaning(code: u16) -> &'static str {
    match code {
        0 => "not defined",
        1 => "file not found",
        2 => "access violation",
        3 => "disk full or allocation exceeded",
        4 => "illegal TFTP operation",
        5 => "unknown transfer ID",
        6 => "file already exists",
        7 => "no such user",
        8 => "option negotiation refused",
        _ => "unknown code",
    }
}

/// The `code` label of `dialtone_tftp_client_errors_total`: a fixed set,
/// whatever number a client sends.
const CLIENT_ERROR_CODES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "other"];

fn code_label(code: u16) -> &'static str {
    match code {
        0..=8 => CLIENT_ERROR_CODES[usize::from(code)],
        _ => "other",
    }
}

/// Longest text of a client's ERROR kept: enough for any phone's reason
/// ("Disk full", "File too large", "Checksum mismatch"), and a client's
/// own text in a row and a log line must stay short.
const MAX_CLIENT_TEXT: usize = 64;

/// A client's ERROR text as it may be recorded: control characters (a
/// forged line break in the log, a terminal escape on an admin's screen)
/// made spaces, and cut at [`MAX_CLIENT_TEXT`] bytes.
pub(super) fn client_text(raw: &[u8]) -> String {
    let raw = raw.split(|b| *b == 0).next().unwrap_or_default();
    let cleaned: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    dialtone_sync::model::clip(cleaned.trim(), MAX_CLIENT_TEXT)
        .trim_end()
        .to_string()
}

// A client can send ERRORs as fast as it likes.
static CLIENT_ERROR_LOG: LogLimit = LogLimit::new();

/// An ERROR packet from a transfer's client: counted by code, logged (at
/// most once a second), and how the transfer ended.
pub(super) fn client_error(packet: &[u8], client: SocketAddr, file: &str) -> TransferEnd {
    let code = u16::from_be_bytes([packet[2], packet[3]]);
    let message = client_text(&packet[4..]);
    metrics::counter!("dialtone_tftp_client_errors_total", "code" => code_label(code)).increment(1);
    if let Some(skipped) = CLIENT_ERROR_LOG.allow() {
        tracing::info!(
            client = %client,
            file,
            code,
            message,
            skipped,
            "TFTP client ended its transfer with an error (logged at most once a second)"
        );
    }
    TransferEnd::ClientError { code, message }
}

/// What a transfer owes the phone whose own file it sends. Told of the
/// client's first acknowledgement (until then the source may be forged),
/// and, only if that came, of the transfer's end.
pub(super) trait Witness: Send + Sync {
    fn proven(&mut self);
    fn ended(self: Box<Self>, how: &TransferEnd, acknowledged: u64);
    /// Ended by the client before it acknowledged anything.
    fn unanswered(self: Box<Self>, how: &TransferEnd);
}

/// A phone's fetch: its source made known for the phone at the first
/// acknowledgement, its history line written once the transfer ends.
pub(super) struct PhoneFetch {
    pub provisioner: Arc<Provisioner>,
    pub unproven: Box<Unproven>,
}

impl Witness for PhoneFetch {
    fn proven(&mut self) {
        self.unproven.prove(&self.provisioner);
    }

    fn ended(self: Box<Self>, how: &TransferEnd, acknowledged: u64) {
        self.unproven.ended(how.history_outcome(), acknowledged);
    }

    fn unanswered(self: Box<Self>, how: &TransferEnd) {
        self.unproven.unanswered(&how.history_outcome());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_text_is_cleaned_and_cut() {
        assert_eq!(client_text(b"Disk full\0"), "Disk full");
        assert_eq!(
            client_text(b"bad\r\nFAKE log line\x1b[2J\0"),
            "bad  FAKE log line [2J"
        );
        let long = client_text(&[b'x'; 500]);
        assert_eq!(long.len(), MAX_CLIENT_TEXT);
        // Cut at a character boundary, never inside one.
        let accents = client_text("é".repeat(100).as_bytes());
        assert!(accents.len() <= MAX_CLIENT_TEXT && accents.chars().all(|c| c == 'é'));
        assert_eq!(client_text(b"\xff\xfeoops"), "\u{fffd}\u{fffd}oops");
        assert_eq!(client_text(b""), "");
    }

    #[test]
    fn codes_past_8_share_one_label() {
        assert_eq!(code_label(3), "3");
        assert_eq!(code_label(8), "8");
        assert_eq!(code_label(9), "other");
        assert_eq!(code_label(u16::MAX), "other");
    }

    #[test]
    fn the_outcome_says_whose_error_it_was() {
        let refused = TransferEnd::ClientError {
            code: 3,
            message: "disk full".into(),
        };
        assert_eq!(
            refused.history_outcome(),
            "client-error 3 (disk full or allocation exceeded): \"disk full\""
        );
        let bare = TransferEnd::ClientError {
            code: 8,
            message: String::new(),
        };
        assert_eq!(
            bare.history_outcome(),
            "client-error 8 (option negotiation refused)"
        );
        assert_eq!(TransferEnd::Completed.history_outcome(), "ok");
    }
}

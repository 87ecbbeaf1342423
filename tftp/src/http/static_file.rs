//! Static files over HTTP(S), opened and read on the reader threads TFTP
//! reads on (`statics::read_pool`), under the same budget of reads in
//! flight, never on tokio's blocking pool: there a download of a file on a
//! hung mount kept a thread of the pool renders share for as long as the
//! mount hung, client gone or not, and some 500 of them left no tenant a
//! render. Now a hung mount holds at most the budget's reads; past it a
//! download waits a little for a turn to open its file, then is refused
//! (503), and a read that does not answer within its deadline ends the
//! download.

use std::io::{self, Read as _, Seek as _};
use std::net::IpAddr;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::{log_text, LogLimit};
use ipnet::IpNet;
use tokio::time::Instant;

use crate::guard::{listed_in, source_key};
use crate::statics::read_pool::{self, Busy, ReadBudget, ReadPermit};
use crate::statics::{stamp, Stamp};

/// How long a read (or the open) may take, its wait for a turn included,
/// before the download is given up: a disk that has not answered in that
/// long is hung, not slow.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Bytes a read asks for: each is a trip to a reader thread and back.
const CHUNK: u64 = 64 << 10;

/// How often a download waiting for a turn to read looks again: soon at
/// first, less often the longer it waits.
const FIRST_LOOK: Duration = Duration::from_millis(1);
const LONGEST_LOOK: Duration = Duration::from_millis(50);

/// How long a download waits for a turn to open its file before it is
/// answered 503. Every running download of a source takes a turn per
/// chunk, and a read waiting for a CPU counts as in flight: refused at
/// once, an office's phones booting together behind one NAT address were
/// turned away from a healthy disk. Two seconds of every turn taken is a
/// disk that does not answer.
const OPEN_WAIT: Duration = Duration::from_secs(2);

/// A refused download's `Retry-After`, in seconds.
const RETRY_AFTER: u32 = 5;

static BUSY_LOG: LogLimit = LogLimit::new();
static TIMED_OUT_LOG: LogLimit = LogLimit::new();
static READ_FAILED_LOG: LogLimit = LogLimit::new();
static OPEN_FAILED_LOG: LogLimit = LogLimit::new();

/// A listener's reads: the budget they take turns of, and whose sources
/// go uncapped.
pub(super) struct Reads {
    budget: &'static ReadBudget,
    per_source_exempt: Vec<IpNet>,
    deadline: Duration,
}

impl Reads {
    pub(super) fn new(per_source_exempt: Vec<IpNet>) -> Reads {
        Reads {
            budget: ReadBudget::shared(),
            per_source_exempt,
            deadline: READ_DEADLINE,
        }
    }

    #[cfg(test)]
    pub(super) fn with(budget: &'static ReadBudget, deadline: Duration) -> Reads {
        Reads {
            budget,
            per_source_exempt: Vec::new(),
            deadline,
        }
    }

    /// Whom a read counts against, as for TFTP: the client's source,
    /// unless it is in an exempt network.
    fn source(&self, ip: IpAddr) -> Option<IpAddr> {
        (!listed_in(&self.per_source_exempt, ip)).then(|| source_key(ip))
    }

    /// Opens the indexed file at `path` (asked for as `asked`) for
    /// `remote`; a refusal is the answer to send.
    pub(super) async fn open(
        &self,
        path: &Path,
        asked: &str,
        remote: IpAddr,
    ) -> Result<Opened, Response> {
        let source = self.source(remote);
        let give_up = Instant::now() + self.deadline;
        let wait = OPEN_WAIT.min(self.deadline);
        let permit = match tokio::time::timeout(wait, turn(self.budget, source)).await {
            Ok(permit) => permit,
            // One last look says which share stayed taken.
            Err(_) => match self.budget.take(source) {
                Ok(permit) => permit,
                Err(busy) => return Err(busy_refusal(busy, asked, remote)),
            },
        };
        let opening = {
            let path = path.to_path_buf();
            read_pool::submit(permit, move || crate::statics::open_regular(&path))
        };
        match tokio::time::timeout_at(give_up, opening).await {
            Err(_) => Err(open_timed_out(asked, remote)),
            Ok(Err(_)) => Err(open_failed(asked, &io::Error::other("the open panicked"))),
            Ok(Ok(Err(e))) => Err(open_failed(asked, &e)),
            Ok(Ok(Ok((file, meta)))) => Ok(Opened {
                file: Closing(Some(file)),
                len: meta.len(),
                etag: crate::statics::validator(&meta),
                modified: meta.modified().ok(),
                stamp: stamp(&meta),
                source,
                budget: self.budget,
                deadline: self.deadline,
                #[cfg(test)]
                path: path.to_path_buf(),
            }),
        }
    }
}

/// An indexed file opened for one request: its length and validator are
/// the open file's, not the index's.
pub(super) struct Opened {
    file: Closing,
    pub(super) len: u64,
    pub(super) etag: String,
    pub(super) modified: Option<SystemTime>,
    /// When it was written last, as it was opened.
    stamp: Stamp,
    source: Option<IpAddr>,
    budget: &'static ReadBudget,
    deadline: Duration,
    #[cfg(test)]
    path: PathBuf,
}

impl Opened {
    /// `len` bytes of the file from `start`, read a stretch at a time:
    /// bytes appended while it is sent are not ours to send, the length is
    /// promised. A read that fails or passes its deadline ends the body
    /// short, as a hung disk would leave it anyway.
    pub(super) fn body(self, start: u64, len: u64, asked: &str, remote: IpAddr) -> Body {
        let reader = BodyReader {
            skip: start,
            left: len,
            opened: self,
            asked: asked.to_string(),
            remote,
        };
        Body::from_stream(futures::stream::try_unfold(
            reader,
            |mut reader| async move {
                Ok::<_, io::Error>(reader.next().await?.map(|bytes| (bytes, reader)))
            },
        ))
    }
}

/// A file closed on a reader thread when dropped: a close flushes, and on
/// a mount that stopped answering it can wait like a read.
struct Closing(Option<std::fs::File>);

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(file) = self.0.take() {
            read_pool::close_on_reader(file);
        }
    }
}

struct BodyReader {
    opened: Opened,
    /// Where the first read starts.
    skip: u64,
    /// Bytes of the promised length not read yet.
    left: u64,
    asked: String,
    remote: IpAddr,
}

impl BodyReader {
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        if self.left == 0 {
            return Ok(None);
        }
        let opened = &mut self.opened;
        let give_up = Instant::now() + opened.deadline;
        let Ok(permit) = tokio::time::timeout_at(give_up, turn(opened.budget, opened.source)).await
        else {
            return Err(read_timed_out(&self.asked, self.remote));
        };
        // The file goes with the read and comes back with its answer; a
        // read given up on closes it on its reader thread. None only past
        // an error, which ended the body.
        let Some(mut file) = opened.file.0.take() else {
            return Ok(None);
        };
        let wanted = self.left.min(CHUNK);
        let skip = std::mem::take(&mut self.skip);
        #[cfg(test)]
        let path = opened.path.clone();
        let reading = read_pool::submit(permit, move || {
            #[cfg(test)]
            crate::statics::stalls::wait_while_stalled(&path, crate::statics::stalls::Op::Read);
            let mut bytes = Vec::with_capacity(wanted as usize);
            // The stamp after the bytes: a write that changed any of them
            // moved it by then.
            let read = match skip {
                0 => Ok(0),
                _ => file.seek(io::SeekFrom::Start(skip)),
            }
            .and_then(|_| (&mut file).take(wanted).read_to_end(&mut bytes))
            .and_then(|_| file.metadata())
            .map(|meta| (bytes, stamp(&meta)));
            (file, read)
        });
        let (file, read) = match tokio::time::timeout_at(give_up, reading).await {
            Err(_) => return Err(read_timed_out(&self.asked, self.remote)),
            Ok(Err(_)) => {
                return Err(read_failed(
                    &self.asked,
                    io::Error::other("the read panicked"),
                ))
            }
            Ok(Ok(answer)) => answer,
        };
        let file = Closing(Some(file));
        let (bytes, now) = read.map_err(|e| read_failed(&self.asked, e))?;
        if (bytes.len() as u64) < wanted || now != self.opened.stamp {
            // Shorter than when it was opened (a copy over it in place),
            // or written to: the length sent was a promise, and the bytes
            // sent so far may be another file's.
            return Err(read_failed(
                &self.asked,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the static file changed while it was sent",
                ),
            ));
        }
        self.left -= wanted;
        if self.left > 0 {
            self.opened.file = file;
        }
        Ok(Some(Bytes::from(bytes)))
    }
}

/// A turn of the budget, waiting for one as long as it takes: the caller
/// bounds the wait.
async fn turn(budget: &'static ReadBudget, source: Option<IpAddr>) -> ReadPermit {
    let mut pause = FIRST_LOOK;
    loop {
        if let Ok(permit) = budget.take(source) {
            return permit;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_LOOK);
    }
}

fn unavailable(text: &'static str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER))],
        text,
    )
        .into_response()
}

fn busy_refusal(busy: Busy, asked: &str, remote: IpAddr) -> Response {
    let share = match busy {
        Busy::All => "all",
        Busy::Source => "source",
    };
    metrics::counter!("dialtone_http_static_reads_busy_total", "share" => share).increment(1);
    if let Some(skipped) = BUSY_LOG.allow() {
        tracing::warn!(client = %remote, path = &*log_text(asked), share, skipped, "static-file reads all taken (a slow or hung disk?); refused an HTTP download (logged at most once a second)");
    }
    unavailable(match busy {
        Busy::All => "busy: every static-file read is taken, try again\n",
        Busy::Source => "busy: this address's share of static-file reads is taken, try again\n",
    })
}

fn open_timed_out(asked: &str, remote: IpAddr) -> Response {
    timed_out(asked, remote, "open");
    unavailable("the static file did not open in time, try again\n")
}

fn read_timed_out(asked: &str, remote: IpAddr) -> io::Error {
    timed_out(asked, remote, "body");
    io::Error::new(
        io::ErrorKind::TimedOut,
        "a read of the static file passed its deadline",
    )
}

fn timed_out(asked: &str, remote: IpAddr, at: &'static str) {
    metrics::counter!("dialtone_http_static_read_timeouts_total", "at" => at).increment(1);
    if let Some(skipped) = TIMED_OUT_LOG.allow() {
        tracing::warn!(client = %remote, path = &*log_text(asked), at, skipped, "static file not read within its deadline (a hung disk or mount?); ending the HTTP download (logged at most once a second)");
    }
}

fn read_failed(asked: &str, error: io::Error) -> io::Error {
    if let Some(skipped) = READ_FAILED_LOG.allow() {
        tracing::warn!(path = &*log_text(asked), error = %error, skipped, "static file read failed; the HTTP download was cut short (logged at most once a second)");
    }
    error
}

/// An indexed static file that no longer opens. Anyone may ask for one,
/// at no cost toward a ban: one line a second, however many ask. Gone is
/// "not found" like any unknown file; anything else (permissions, an I/O
/// error) is ours to fix, not the client's, and is not passed off as a
/// missing file.
fn open_failed(asked: &str, error: &io::Error) -> Response {
    // Its folder gone, or made a file: gone, as the next reindex says.
    let not_found = matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    );
    let reason = if not_found { "not_found" } else { "other" };
    metrics::counter!("dialtone_static_open_failed_total", "reason" => reason).increment(1);
    if let Some(skipped) = OPEN_FAILED_LOG.allow() {
        let kind = error.kind().to_string();
        tracing::warn!(path = &*log_text(asked), error = %error, kind, skipped, "indexed static file cannot be opened (logged at most once a second)");
    }
    if not_found {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
    }
}

#[cfg(test)]
#[path = "static_file_tests.rs"]
mod tests;

//! Logging: human-readable text or JSON, to stderr (journald picks it up
//! under systemd) or to a file. SIGHUP changes the filter and reopens the
//! file, so logrotate can move it away without a restart. Lines are written
//! by a thread of their own, never by the task that logs (`queue`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

mod queue;

use queue::{LogQueue, NoteFormat, QUEUE_BYTES};

/// How long an exit waits for the queued lines to be written: enough to
/// write the whole queue to any output that is moving, short enough that a
/// stalled journald does not hold up the stop (and a restart behind it).
const EXIT_FLUSH_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `log.file`, when the log goes there.
    file: Option<PathBuf>,
    queue: LogQueue,
}

impl LogHandle {
    pub fn set_filter(&self, filter: &str) -> Result<(), String> {
        let parsed = EnvFilter::try_new(quiet_ldap3(filter))
            .map_err(|e| format!("bad log filter {filter:?}: {e}"))?;
        self.filter.reload(parsed).map_err(|e| e.to_string())
    }

    /// Opens the log file again by name (after logrotate moved it). Opened
    /// here, so a failure is known to the caller; the lines logged before
    /// this call still go to the old file.
    pub fn reopen(&self) -> io::Result<()> {
        match &self.file {
            Some(path) => {
                self.queue.switch(Box::new(open_append(path)?));
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Writes out every line logged so far when dropped, waiting at most
    /// [`EXIT_FLUSH_WAIT`]: held by `main` until the process exits, which
    /// does not wait for the writer thread.
    pub fn flush_at_exit(&self) -> FlushAtExit {
        FlushAtExit(self.queue.clone())
    }
}

pub struct FlushAtExit(LogQueue);

impl Drop for FlushAtExit {
    fn drop(&mut self) {
        self.0.flush(EXIT_FLUSH_WAIT);
    }
}

/// A file this opens is its owner's alone: the log holds tenants' names,
/// numbers and errors, and the quick start's umask gave it 0644. A file
/// that exists keeps its mode (logrotate's `create`, an operator's choice).
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// `RUST_LOG` wins over the configured filter. Commands other than `serve`
/// log only warnings to stderr unless told otherwise, so their output stays
/// readable; only `serve` writes the configured log file.
pub fn init(config: &LogConfig, serving: bool) -> Result<LogHandle, String> {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        if serving {
            config.filter.clone()
        } else {
            "warn".to_string()
        }
    });
    // `log.filter` was checked with the config; RUST_LOG was not.
    let filter = EnvFilter::try_new(quiet_ldap3(&wanted)).unwrap_or_else(|e| {
        eprintln!("dialtone: ignoring the log filter {wanted:?} (RUST_LOG): {e}; logging at info");
        EnvFilter::new(quiet_ldap3("info"))
    });
    let (filter_layer, handle) = reload::Layer::new(filter);
    let file = match (&config.file, serving) {
        (Some(path), true) => Some(path.clone()),
        _ => None,
    };
    let sink: queue::Sink = match &file {
        // A node that cannot write the log it was told to is not started:
        // logging elsewhere, it would be silent where it is watched, and
        // every SIGHUP's reopen would do nothing.
        Some(path) => Box::new(open_append(path).map_err(|e| {
            format!(
                "cannot open the log file {} (log.file): {e}",
                path.display()
            )
        })?),
        None => Box::new(io::stderr()),
    };
    let json = config.format == LogFormat::Json;
    let note = if json {
        NoteFormat::Json
    } else {
        NoteFormat::Text
    };
    let queue = LogQueue::start(sink, QUEUE_BYTES, note)
        .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
    let output: Box<dyn Layer<_> + Send + Sync> = match (&file, json) {
        (_, true) => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(queue.clone())
            .boxed(),
        (Some(_), false) => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(false)
            .with_writer(OneLineMaker::new(queue.clone(), false))
            .boxed(),
        (None, false) => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt::layer()
                .with_writer(OneLineMaker::new(queue.clone(), ansi))
                .with_ansi(ansi)
                .with_target(false)
                .boxed()
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter_layer)
        .with(output)
        .try_init();
    Ok(LogHandle {
        filter: handle,
        file,
        queue,
    })
}

/// Writes each text event as exactly one line. Fields the text format
/// prints with `%` come out as they are, and some are tenants' text (a
/// source's name, its server's error): a newline in one would start a line
/// of the tenant's choosing, such as the `ban` lines fail2ban reads. Every
/// control character but the event's final newline is escaped, whatever
/// the call site. (The fmt layer writes an event with one `write_all`.)
struct OneLine<W> {
    inner: W,
    /// The terminal's colour sequences (ESC), when the layer writes them.
    keep_escape: bool,
}

impl<W> OneLine<W> {
    fn escaped(byte: u8, keep_escape: bool) -> bool {
        (byte < 0x20 && byte != b'\t' && !(keep_escape && byte == 0x1b)) || byte == 0x7f
    }
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !body.iter().any(|&b| Self::escaped(b, self.keep_escape)) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                b if Self::escaped(b, self.keep_escape) => {
                    let _ = write!(line, "\\x{b:02x}");
                }
                b => line.push(b),
            }
        }
        line.extend_from_slice(end);
        self.inner.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct OneLineMaker<M> {
    inner: M,
    keep_escape: bool,
}

impl<M> OneLineMaker<M> {
    fn new(inner: M, keep_escape: bool) -> OneLineMaker<M> {
        OneLineMaker { inner, keep_escape }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLineMaker<M> {
    type Writer = OneLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLine {
            inner: self.inner.make_writer(),
            keep_escape: self.keep_escape,
        }
    }
}

/// ldap3 logs a warning for every message a server sends that matches no
/// request. The server is a tenant's, so it could fill the operator's logs
/// at its network's rate; our own errors for its sources say what went
/// wrong. Unless a filter names ldap3 itself, only its errors get through.
fn quiet_ldap3(filter: &str) -> String {
    if filter.contains("ldap3") {
        filter.to_string()
    } else if filter.trim().is_empty() {
        "ldap3=error".to_string()
    } else {
        format!("{filter},ldap3=error")
    }
}

#[cfg(test)]
mod tests {
    use super::queue::{LogQueue, NoteFormat};
    use super::{open_append, quiet_ldap3, LogHandle, OneLineMaker};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::{reload, EnvFilter, Registry};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// A tenant's source named with a newline and a fail2ban-shaped line
    /// stays inside its own log line.
    #[test]
    fn a_field_with_a_newline_cannot_start_a_line() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(OneLineMaker::new(captured.clone(), false))
            .finish();
        let name = "x\nprovisioning: ban 198.51.100.7 for 600s\r\x07";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(source = %name, "directory source failed");
            tracing::warn!("second");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains(r"source=x\nprovisioning: ban 198.51.100.7 for 600s\r\x07"),
            "{text}"
        );
        assert!(!lines.iter().any(|l| l.starts_with("provisioning")));
    }

    /// The log holds tenants' data: a file it creates is not left to the
    /// umask (0644 under the quick start's), one that exists keeps its mode.
    #[test]
    fn a_log_file_created_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let created = dir.path().join("created.log");
        super::open_append(&created).unwrap();
        assert_eq!(mode(&created), 0o600);
        let kept = dir.path().join("kept.log");
        std::fs::write(&kept, "").unwrap();
        std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o640)).unwrap();
        super::open_append(&kept).unwrap();
        assert_eq!(mode(&kept), 0o640);
    }

    /// SIGHUP after logrotate moved the file: what was logged before the
    /// reopen is in the moved file, what follows in a new one at the path,
    /// and a reopen that fails says so to its caller.
    #[test]
    fn a_reopen_sends_the_lines_after_it_to_a_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dialtone.log");
        let sink = Box::new(open_append(&path).unwrap());
        let queue = LogQueue::start(sink, 1 << 20, NoteFormat::Text).unwrap();
        let (_, filter) = reload::Layer::<EnvFilter, Registry>::new(EnvFilter::new("info"));
        let log = LogHandle {
            filter,
            file: Some(path.clone()),
            queue: queue.clone(),
        };
        queue.push(b"before\n".to_vec());
        let rotated = dir.path().join("dialtone.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen().unwrap();
        queue.push(b"after\n".to_vec());
        assert!(queue.flush(Duration::from_secs(10)));
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "before\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let unreachable = LogHandle {
            file: Some(dir.path().join("gone").join("dialtone.log")),
            ..log
        };
        assert!(unreachable.reopen().is_err());
    }

    #[test]
    fn ldap3_warnings_stay_out_unless_a_filter_names_ldap3() {
        for (given, used) in [
            ("info", "info,ldap3=error"),
            (
                "warn,dialtone_sync=debug",
                "warn,dialtone_sync=debug,ldap3=error",
            ),
            ("", "ldap3=error"),
            ("info,ldap3=debug", "info,ldap3=debug"),
        ] {
            assert_eq!(quiet_ldap3(given), used);
            assert!(EnvFilter::try_new(quiet_ldap3(given)).is_ok(), "{given:?}");
        }
    }
}

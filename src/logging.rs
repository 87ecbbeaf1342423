//! Logging: human-readable text or JSON, to stderr (journald picks it up
//! under systemd) or to a file. SIGHUP changes the filter and reopens the
//! file, so logrotate can move it away without a restart. Lines are written
//! by a thread of their own, never by the task that logs (`queue`).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

mod one_line;
pub mod panics;
mod queue;

use one_line::OneLineMaker;
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
            .with_writer(OneLineMaker::json(queue.clone()))
            .boxed(),
        (Some(_), false) => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(false)
            .with_writer(OneLineMaker::text(queue.clone(), false))
            .boxed(),
        (None, false) => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt::layer()
                .with_writer(OneLineMaker::text(queue.clone(), ansi))
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
    use super::{open_append, quiet_ldap3, LogHandle};
    use std::time::Duration;
    use tracing_subscriber::{reload, EnvFilter, Registry};

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

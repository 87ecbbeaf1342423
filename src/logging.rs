//! Logging: human-readable text or JSON, to stderr (journald picks it up
//! under systemd) or to a file. SIGHUP changes the filter and reopens the
//! file, so logrotate can move it away without a restart.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    file: Option<LogFile>,
}

impl LogHandle {
    pub fn set_filter(&self, filter: &str) -> Result<(), String> {
        let parsed = EnvFilter::try_new(quiet_ldap3(filter))
            .map_err(|e| format!("bad log filter {filter:?}: {e}"))?;
        self.filter.reload(parsed).map_err(|e| e.to_string())
    }

    /// Opens the log file again by name (after logrotate moved it).
    pub fn reopen(&self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.reopen(),
            None => Ok(()),
        }
    }
}

/// The log file, shared by every writer; swapped on reopen.
#[derive(Clone)]
struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(open_append(path)?)),
        })
    }

    fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
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

struct LogFileWriter(Arc<Mutex<File>>);

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.file.clone())
    }
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
        // A node that cannot write the log it was told to is not started:
        // logging elsewhere, it would be silent where it is watched, and
        // every SIGHUP's reopen would do nothing.
        (Some(path), true) => Some(LogFile::open(path).map_err(|e| {
            format!(
                "cannot open the log file {} (log.file): {e}",
                path.display()
            )
        })?),
        _ => None,
    };
    let json = config.format == LogFormat::Json;
    let output: Box<dyn Layer<_> + Send + Sync> = match (&file, json) {
        (Some(file), true) => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(file.clone())
            .boxed(),
        (Some(file), false) => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(false)
            .with_writer(OneLineMaker::new(file.clone(), false))
            .boxed(),
        (None, true) => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(io::stderr)
            .boxed(),
        (None, false) => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt::layer()
                .with_writer(OneLineMaker::new(io::stderr, ansi))
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
    use super::{quiet_ldap3, OneLineMaker};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::EnvFilter;

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

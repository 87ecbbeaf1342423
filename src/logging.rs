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

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
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
pub fn init(config: &LogConfig, serving: bool) -> LogHandle {
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
        (Some(path), true) => match LogFile::open(path) {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!(
                    "dialtone: cannot open the log file {} (log.file): {e}; logging to stderr",
                    path.display()
                );
                None
            }
        },
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
            .with_writer(file.clone())
            .boxed(),
        (None, true) => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(io::stderr)
            .boxed(),
        (None, false) => tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter_layer)
        .with(output)
        .try_init();
    LogHandle {
        filter: handle,
        file,
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
    use super::quiet_ldap3;
    use tracing_subscriber::EnvFilter;

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

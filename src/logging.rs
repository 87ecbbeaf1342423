//! Logging to stderr (journald picks it up under systemd), with a filter that
//! SIGHUP can change without a restart.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    pub fn set_filter(&self, filter: &str) -> Result<(), String> {
        let parsed =
            EnvFilter::try_new(filter).map_err(|e| format!("bad log filter {filter:?}: {e}"))?;
        self.filter.reload(parsed).map_err(|e| e.to_string())
    }
}

/// `RUST_LOG` wins over the configured filter. Commands other than `serve`
/// log only warnings unless told otherwise, so their output stays readable.
pub fn init(configured: &str, serving: bool) -> LogHandle {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        if serving {
            configured.to_string()
        } else {
            "warn".to_string()
        }
    });
    let filter = EnvFilter::try_new(&wanted).unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(filter);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .try_init();
    LogHandle { filter: handle }
}

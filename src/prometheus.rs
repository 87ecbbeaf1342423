//! `/metrics` in Prometheus text format. Counters and histograms are
//! recorded where things happen (`metrics` macros in every crate); gauges
//! that describe state (mirror lag, staleness, row counts, bans, degraded
//! tasks) are read at scrape time, so they are never stale.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dialtone_sync::{now_millis, Mirror};
use dialtone_tftp::Provisioner;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::supervise::Supervisor;

/// Seconds: from a cached TFTP block to a firmware image over a slow link.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide recorder. Only `serve` does.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)?
        .install_recorder()?;
    crate::metric_help::describe();
    Ok(handle)
}

#[derive(Clone)]
pub struct MetricsState {
    pub handle: PrometheusHandle,
    pub mirror: Arc<Mirror>,
    pub provisioner: Arc<Provisioner>,
    pub supervisor: Supervisor,
}

pub async fn render(State(state): State<MetricsState>) -> Response {
    let health = state.mirror.health();
    let mirror = state.mirror.load();
    let now = now_millis();
    let seconds = |since: Option<i64>| since.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
    metrics::gauge!("dialtone_mirror_loaded").set(if health.loaded_from.is_some() {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("dialtone_mirror_lag_seconds").set(seconds(health.last_sync_at));
    metrics::gauge!("dialtone_mirror_stale_seconds").set(seconds(health.stale_since));
    metrics::gauge!("dialtone_mirror_version").set(mirror.version() as f64);
    metrics::counter!("dialtone_mirror_full_reloads_total").absolute(health.full_reloads);
    let counts = mirror.counts();
    for (table, rows) in [
        ("tenants", counts.tenants),
        ("phones", counts.phones),
        ("lines", counts.lines),
        ("templates", counts.templates),
        ("directory_entries", counts.directory_entries),
        ("directory_sources", counts.directory_sources),
        ("api_tokens", counts.api_tokens),
    ] {
        metrics::gauge!("dialtone_mirror_rows", "table" => table).set(rows as f64);
    }
    metrics::gauge!("dialtone_provisioning_banned_sources")
        .set(state.provisioner.guard().banned_sources() as f64);
    metrics::gauge!("dialtone_render_cache_files").set(state.provisioner.cached_files() as f64);
    let degraded = state.supervisor.degraded();
    metrics::gauge!("dialtone_degraded").set(if degraded.is_empty() { 0.0 } else { 1.0 });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.handle.render(),
    )
        .into_response()
}

/// Histograms are kept in a bounded buffer the exporter drains on upkeep.
pub async fn upkeep(handle: PrometheusHandle, cancel: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => handle.run_upkeep(),
        }
    }
}

//! `/metrics` in Prometheus text format. Counters and histograms are
//! recorded where things happen (`metrics` macros in every crate); gauges
//! that describe state (mirror lag, staleness, row counts, bans, degraded
//! tasks, readiness, mirrored LDAP sources behind) are read at scrape
//! time, so they are never stale.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dialtone_directory::LookupService;
use dialtone_sync::{now_millis, Mirror};
use dialtone_tftp::Provisioner;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::supervise::Supervisor;

/// Seconds, for every histogram without buckets of its own: requests, a
/// lookup, a render's wait, from half a millisecond to half a minute.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Seconds: from a cached file over HTTP to a firmware image over TFTP on
/// a slow link, which runs for many minutes (bounded only by
/// provisioning.tftp_min_rate). Past 30 s every transfer fell in `+Inf`.
const TRANSFER_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Seconds: a mirrored LDAP source's sync, from an incremental read that
/// finds nothing to a full read cut off at 15 minutes (and its merge).
const MIRROR_SYNC_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
    1200.0, 1800.0,
];

/// Histograms whose buckets are their own; a full name wins over the
/// `_seconds` suffix the others share.
pub const OWN_BUCKETS: &[(&str, &[f64])] = &[
    ("dialtone_transfer_duration_seconds", TRANSFER_BUCKETS),
    (
        "dialtone_directory_mirror_sync_seconds",
        MIRROR_SYNC_BUCKETS,
    ),
];

/// The recorder's builder: its buckets.
fn builder() -> Result<PrometheusBuilder, BuildError> {
    let mut builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)?;
    for (name, buckets) in OWN_BUCKETS {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).into()), buckets)?;
    }
    Ok(builder)
}

/// Installs the process-wide recorder. Only `serve` does.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = builder()?.install_recorder()?;
    crate::metric_help::describe();
    Ok(handle)
}

#[derive(Clone)]
pub struct MetricsState {
    pub handle: PrometheusHandle,
    pub mirror: Arc<Mirror>,
    pub provisioner: Arc<Provisioner>,
    pub supervisor: Supervisor,
    /// What `/readyz` answers from: `dialtone_ready` is its answer.
    pub health: crate::http::AppState,
    /// For the mirrored LDAP sources that are behind.
    pub lookups: LookupService,
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
    metrics::gauge!("dialtone_ready").set(if state.health.ready() { 1.0 } else { 0.0 });
    metrics::gauge!("dialtone_directory_mirror_sources_behind")
        .set(state.lookups.mirror_sources_behind() as f64);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dialtone_sync::{Cursor, Dataset, LoadedFrom, Meta, SecretKey};
    use dialtone_tftp::Shipped;
    use http_body_util::BodyExt;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::supervise::Intensity;

    /// A scrape's value of `series` (a name with its labels, if any).
    fn value(scrape: &str, series: &str) -> Option<f64> {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    async fn scrape(state: &MetricsState) -> String {
        let response = render(State(state.clone())).await;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// `dialtone_ready` is `/readyz`'s answer, read when scraped: not
    /// ready before the mirror holds data or once it is stale past
    /// `max_staleness`, ready otherwise; and the mirrored LDAP sources
    /// behind are counted (none here).
    #[tokio::test]
    async fn a_scrape_says_whether_readyz_would_answer_ready() {
        let recorder = builder().unwrap().build_recorder();
        let _local = metrics::set_default_local_recorder(&recorder);
        let mirror = Arc::new(Mirror::new());
        let key = SecretKey::parse(&"11".repeat(32)).unwrap();
        let provisioner = Arc::new(Provisioner::new(
            mirror.clone(),
            key.clone(),
            Shipped::built_in(1),
            Default::default(),
        ));
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let supervisor = Supervisor::new(
            &tracker,
            &cancel,
            Intensity {
                max_restarts: 5,
                window: Duration::from_secs(60),
            },
        );
        let health = crate::http::AppState {
            mirror: mirror.clone(),
            max_staleness: Some(Duration::from_millis(1)),
            degraded: Arc::new(Vec::new),
            details: false,
        };
        let state = MetricsState {
            handle: recorder.handle(),
            mirror: mirror.clone(),
            provisioner,
            supervisor,
            health: health.clone(),
            lookups: LookupService::new(mirror.clone(), Some(key), Default::default()),
        };
        let body = scrape(&state).await;
        assert_eq!(value(&body, "dialtone_ready"), Some(0.0), "{body}");
        assert_eq!(
            value(&body, "dialtone_directory_mirror_sources_behind"),
            Some(0.0)
        );

        mirror.reset(
            Dataset::default(),
            Cursor { txid: 0, seq: 7 },
            Meta::default(),
            LoadedFrom::Snapshot,
        );
        let body = scrape(&state).await;
        assert_eq!(value(&body, "dialtone_ready"), Some(1.0), "{body}");
        assert!(health.ready());

        // Stale past the allowance: /readyz says 503, and so does this.
        mirror.mark_unreachable("connection refused");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let body = scrape(&state).await;
        assert_eq!(value(&body, "dialtone_ready"), Some(0.0), "{body}");
        assert_eq!(value(&body, "dialtone_mirror_loaded"), Some(1.0));
    }

    /// Transfers and mirror syncs have buckets past 30 s (a firmware image
    /// over TFTP, a 15-minute full sync); request latencies keep theirs.
    #[test]
    fn long_histograms_have_buckets_of_their_own() {
        let recorder = builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("dialtone_transfer_duration_seconds", "protocol" => "tftp")
                .record(700.0);
            metrics::histogram!("dialtone_directory_mirror_sync_seconds", "kind" => "full")
                .record(400.0);
            metrics::histogram!("dialtone_lookup_duration_seconds").record(0.002);
        });
        let body = handle.render();
        let bucket = |name: &str, labels: &str, le: &str| {
            value(&body, &format!("{name}_bucket{{{labels}le=\"{le}\"}}"))
        };
        let transfer = "dialtone_transfer_duration_seconds";
        assert_eq!(
            bucket(transfer, "protocol=\"tftp\",", "600"),
            Some(0.0),
            "{body}"
        );
        assert_eq!(bucket(transfer, "protocol=\"tftp\",", "1200"), Some(1.0));
        let sync = "dialtone_directory_mirror_sync_seconds";
        assert_eq!(bucket(sync, "kind=\"full\",", "300"), Some(0.0), "{body}");
        assert_eq!(bucket(sync, "kind=\"full\",", "600"), Some(1.0));
        assert_eq!(bucket(sync, "kind=\"full\",", "1800"), Some(1.0));
        let lookup = "dialtone_lookup_duration_seconds";
        assert_eq!(bucket(lookup, "", "0.0025"), Some(1.0), "{body}");
        assert_eq!(bucket(lookup, "", "30"), Some(1.0));
        assert_eq!(bucket(lookup, "", "60"), None, "{body}");
        for (name, _) in OWN_BUCKETS {
            assert!(
                crate::metric_help::HISTOGRAMS
                    .iter()
                    .any(|(n, _)| n == name),
                "{name}"
            );
        }
    }
}

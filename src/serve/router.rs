//! The routers `serve` listens with: the API listener's, and the
//! monitoring listener's when it has one.

use std::sync::Arc;
use std::time::Duration;

use dialtone_directory::LookupService;
use dialtone_sync::{Mirror, SecretKey, Store};
use dialtone_tftp::Provisioner;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::http::{app, AppState};
use crate::supervise::Supervisor;

/// What the API listener's router is made of.
pub struct ApiParts<'a> {
    pub config: &'a Config,
    pub mirror: &'a Arc<Mirror>,
    pub store: &'a Arc<dyn Store>,
    pub key: &'a SecretKey,
    pub provisioner: &'a Arc<Provisioner>,
    pub lookups: LookupService,
    pub supervisor: &'a Supervisor,
    pub metrics: Option<PrometheusHandle>,
    pub resync: Option<crate::resync::ResyncService>,
}

/// What `serve` listens with: the API listener's router, and the
/// monitoring listener's when `http.monitoring_listen` is set.
pub struct Routers {
    pub api: axum::Router,
    pub monitoring: Option<axum::Router>,
}

/// The API listener's router (health and readiness, `/metrics`, lookups
/// and the admin API with its page) and, when monitoring has a listener of
/// its own, that listener's: then the platform-wide parts (`/metrics`,
/// `/readyz`'s details) are only there.
pub fn api_router(parts: ApiParts<'_>) -> Routers {
    let ApiParts {
        config,
        mirror,
        store,
        key,
        provisioner,
        lookups,
        supervisor,
        metrics,
        resync,
    } = parts;
    let separate = config.http.monitoring_listen.is_some();
    let health_state = |details: bool| {
        let supervisor = supervisor.clone();
        AppState {
            mirror: mirror.clone(),
            max_staleness: config.mirror.max_staleness_s.map(Duration::from_secs),
            degraded: Arc::new(move || supervisor.degraded()),
            details,
        }
    };
    let health = |details: bool| app(health_state(details));
    let metrics_routes = match metrics {
        Some(handle) => axum::Router::new()
            .route("/metrics", axum::routing::get(crate::prometheus::render))
            .with_state(crate::prometheus::MetricsState {
                handle,
                mirror: mirror.clone(),
                provisioner: provisioner.clone(),
                supervisor: supervisor.clone(),
                // `dialtone_ready` is what `/readyz` answers.
                health: health_state(false),
                lookups: lookups.clone(),
            }),
        None => axum::Router::new(),
    };
    let (api_health, monitoring) = if separate {
        let monitoring = health(true)
            .merge(metrics_routes)
            .fallback(crate::admin::error::unknown_monitoring_path);
        (health(false), Some(monitoring))
    } else {
        (health(true).merge(metrics_routes), None)
    };
    let source_networks = lookups.source_networks().clone();
    let admin_lookups = lookups.clone();
    let api = api_health
        .merge(dialtone_directory::http::router(lookups))
        .merge(crate::admin::router(crate::admin::AdminState {
            mirror: mirror.clone(),
            store: store.clone(),
            provisioner: provisioner.clone(),
            key: key.clone(),
            source_networks,
            quotas: Arc::new(config.quotas.clone()),
            resync,
            lookups: Some(admin_lookups),
            region_changes: Default::default(),
            source_tests: crate::admin::running::Running::new(
                crate::admin::SOURCE_TESTS_PER_TENANT,
            ),
            database_share: {
                let share = crate::admin::database_share::DatabaseShare::new(
                    config.database.max_connections,
                );
                share.answer_within(Duration::from_secs(config.database.request_timeout_s));
                share
            },
        }));
    let api = api.fallback(crate::admin::error::unknown_path);
    Routers { api, monitoring }
}

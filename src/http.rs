//! Health and readiness (`/healthz`, `/readyz`), and the readiness rules
//! they report. On the API listener, and with the full body on the
//! monitoring listener when one is configured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dialtone_sync::{now_millis, Mirror, MirrorHealth};
use serde_json::json;

#[derive(Clone)]
pub struct AppState {
    pub mirror: Arc<Mirror>,
    /// Not ready once stale for longer than this; `None`: stale is still ready.
    pub max_staleness: Option<Duration>,
    /// Tasks past their restart intensity (empty: none).
    pub degraded: Arc<dyn Fn() -> Vec<&'static str> + Send + Sync>,
    /// Whether `/readyz` tells where the data came from, how current it
    /// is and how much of it there is (every tenant's rows counted
    /// together), or only whether the node is ready: a listener tenants
    /// and phones reach gets only that once monitoring has its own.
    pub details: bool,
}

impl AppState {
    /// Whether `/readyz` answers ready: the mirror is loaded (from the
    /// database or a snapshot) and not stale for longer than
    /// `max_staleness`. `/metrics` exports it as `dialtone_ready`, so the
    /// alert on readiness follows the same rule as the load balancer.
    pub fn ready(&self) -> bool {
        self.ready_with(&self.mirror.health(), Instant::now())
    }

    /// On the monotonic clock: a wall-clock step while the database is
    /// down moved `stale_since` by the step, keeping a node ready that much
    /// past `max_staleness`, or taking it out of rotation at once.
    fn ready_with(&self, health: &MirrorHealth, now: Instant) -> bool {
        let stale_for = health
            .stale_since_instant
            .map(|since| now.saturating_duration_since(since));
        let too_stale =
            matches!((self.max_staleness, stale_for), (Some(max), Some(stale)) if stale > max);
        health.loaded_from.is_some() && !too_stale
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the mirror is loaded (from the database or a snapshot). The
/// body tells operators where the data came from and how current it is.
async fn readyz(State(state): State<AppState>) -> Response {
    let health = state.mirror.health();
    let mirror = state.mirror.load();
    let ready = state.ready_with(&health, Instant::now());
    let now = now_millis();
    // A degraded node still serves what it has (phones keep booting), so it
    // stays in rotation; the body and /metrics say what is wrong.
    let degraded = (state.degraded)();
    let status = match (ready, degraded.is_empty()) {
        (false, _) => "not_ready",
        (true, true) => "ready",
        (true, false) => "degraded",
    };
    let body = if !state.details {
        json!({ "ready": ready, "status": status })
    } else {
        json!({
        "ready": ready,
        "status": status,
        "degraded_tasks": degraded,
        "loaded_from": health.loaded_from,
        "version": mirror.version(),
        "cursor": mirror.cursor().to_string(),
        "epoch": mirror.meta().epoch,
        "lag_ms": health.last_sync_at.map(|t| (now - t).max(0)),
        "stale_since": health.stale_since,
        "last_error": health.last_error,
        "full_reloads": health.full_reloads,
        "counts": mirror.counts(),
        })
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use dialtone_sync::{Cursor, Dataset, LoadedFrom, Meta};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_json(app: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn readyz_follows_the_mirror() {
        let mirror = Arc::new(Mirror::new());
        let state = AppState {
            mirror: mirror.clone(),
            max_staleness: Some(Duration::from_secs(60)),
            degraded: Arc::new(Vec::new),
            details: true,
        };
        let (status, body) = get_json(app(state.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
        assert!(!state.ready());

        mirror.reset(
            Dataset::default(),
            Cursor { txid: 0, seq: 7 },
            Meta::default(),
            LoadedFrom::Snapshot,
        );
        let (status, body) = get_json(app(state.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["loaded_from"], "snapshot");
        assert_eq!(body["cursor"], "0:7");
        assert!(state.ready());

        // Stale, within the allowance: still ready, and says so.
        mirror.mark_unreachable("connection refused");
        let (status, body) = get_json(app(state.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body["stale_since"].is_number());
        assert_eq!(body["last_error"], "connection refused");

        // Stale for longer than allowed: no longer ready.
        let strict = AppState {
            mirror: mirror.clone(),
            max_staleness: Some(Duration::from_millis(1)),
            degraded: Arc::new(Vec::new),
            details: true,
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (status, body) = get_json(app(strict.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
        assert!(!strict.ready() && state.ready());
    }

    /// Without details, readiness and its status only: no counts, no
    /// error text, nothing about the data behind them.
    #[tokio::test]
    async fn readyz_without_details_says_only_whether_it_is_ready() {
        let mirror = Arc::new(Mirror::new());
        let brief = AppState {
            mirror: mirror.clone(),
            max_staleness: Some(Duration::from_millis(1)),
            degraded: Arc::new(|| vec!["mirror-watcher"]),
            details: false,
        };
        let (status, body) = get_json(app(brief.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"ready": false, "status": "not_ready"}));

        mirror.reset(
            Dataset::default(),
            Cursor { txid: 0, seq: 7 },
            Meta::default(),
            LoadedFrom::Snapshot,
        );
        let (status, body) = get_json(app(brief.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"ready": true, "status": "degraded"}));

        mirror.mark_unreachable("connection refused to tenant-42.example");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (status, body) = get_json(app(brief), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"ready": false, "status": "not_ready"}));
    }

    /// Readiness follows the monotonic clock, not `stale_since`: stale for
    /// two minutes is too stale, whatever the wall clock stepped to since.
    #[test]
    fn staleness_is_measured_on_the_monotonic_clock() {
        let state = AppState {
            mirror: Arc::new(Mirror::new()),
            max_staleness: Some(Duration::from_secs(60)),
            degraded: Arc::new(Vec::new),
            details: true,
        };
        let now = Instant::now();
        let stepped_back = MirrorHealth {
            loaded_from: Some(LoadedFrom::Database),
            stale_since: Some(now_millis() + 86_400_000),
            stale_since_instant: Some(now - Duration::from_secs(120)),
            ..MirrorHealth::default()
        };
        assert!(!state.ready_with(&stepped_back, now));
        let stepped_forward = MirrorHealth {
            stale_since: Some(now_millis() - 86_400_000),
            stale_since_instant: Some(now - Duration::from_secs(10)),
            ..stepped_back
        };
        assert!(state.ready_with(&stepped_forward, now));
    }

    #[tokio::test]
    async fn healthz_answers() {
        let state = AppState {
            mirror: Arc::new(Mirror::new()),
            max_staleness: None,
            degraded: Arc::new(|| vec!["mirror-watcher"]),
            details: true,
        };
        let response = app(state)
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

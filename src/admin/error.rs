//! One error shape for the whole admin API: `{"error": {"code", "message",
//! "details"?}}` with a stable `code`. Clients get a reason they can act on;
//! internal detail goes to the log only.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::SyncError;
use dialtone_tftp::ProvisionError;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

// Handlers name the extractors with the error they answer.
pub(crate) use super::extract::{optional_body, ApiBytes, ApiJson, ApiPath, ApiQuery};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// The error body, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `bad_request`, `conflict`,
    /// `precondition_failed`, `invalid`, `quota_exceeded`,
    /// `template_error`, `busy` (429 or 503: retry later), `rate_limited`
    /// (429: retry after `Retry-After` seconds), `too_soon`, `too_large`,
    /// `timeout`, `unavailable`, `internal`.
    pub code: String,
    pub message: String,
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 413: a request body past the API's 2 MiB cap (the client can only
    /// send less).
    pub fn body_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is over 2 MiB",
        )
    }

    /// Logs `detail`; the client learns only that it failed.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "admin API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            body["details"] = details;
        }
        let mut response = (self.status, axum::Json(json!({ "error": body }))).into_response();
        // Whoever answers `busy` with a better estimate overrides this.
        if self.code == "busy" {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dialtone\""),
            );
        }
        response
    }
}

impl ApiError {
    /// A tenant's request whose database work outlasted its deadline: a
    /// write may still be made when the database answers it.
    pub fn database_did_not_answer(within: std::time::Duration, writes: bool) -> ApiError {
        let within = within.as_secs_f64();
        if writes {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                format!("the database did not answer within {within} s, and the write may still be made when it does: read it back before writing it again"),
            )
        } else {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the database did not answer within {within} s"),
            )
        }
    }
}

/// PostgreSQL's SQLSTATEs for a transaction rolled back in favour of another.
const DEADLOCK_DETECTED: &str = "40P01";
const SERIALIZATION_FAILURE: &str = "40001";

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> ApiError {
        match e {
            SyncError::Conflict(what) => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("{what} changed since you read it (If-Match does not match); reload and edit again"),
            ),
            // Names the key the caller sent, never who holds it.
            SyncError::Taken(what) => ApiError::conflict(format!("{what} already exists")),
            SyncError::NotEmpty(what) => {
                ApiError::conflict(format!("{what}; {}", super::tenants::NOT_EMPTY_HINT))
            }
            SyncError::NotFound(what) => ApiError::not_found(what),
            SyncError::Rejected { reason, .. } => ApiError::invalid(reason),
            SyncError::Invalid(reason) => ApiError::invalid(reason),
            // Every connection stayed taken (or none could be opened) for
            // the pool's acquire timeout: sqlx cannot tell which, and both
            // pass, so the caller is told to come back.
            e if e.is_pool_timeout() => {
                tracing::warn!("admin request: no database connection within the acquire timeout");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the database did not answer in time (busy or unreachable); nothing was changed; try again",
                )
            }
            // Never "nothing was changed": the write may be in the
            // database, and a client writing it again could make it twice.
            SyncError::CommitUnknown(db) => {
                tracing::error!(error = %db, "admin write: the commit's outcome is unknown");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "outcome_unknown",
                    "the database did not confirm the write, so it may or may not have been made: read it back before writing it again",
                )
            }
            // PostgreSQL gave up this transaction for another's (deadlock
            // detected, or a serialization failure): rolled back whole, and
            // the same request again will most likely pass.
            SyncError::Database(db)
                if db
                    .as_database_error()
                    .and_then(|db| db.code())
                    .is_some_and(|c| c == DEADLOCK_DETECTED || c == SERIALIZATION_FAILURE) =>
            {
                tracing::warn!(error = %db, "admin write: rolled back for a concurrent one");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the write met a concurrent one and was rolled back; nothing was changed; try again",
                )
            }
            e if e.is_read_only() => {
                tracing::warn!(error = %e, "admin write: the database takes no writes (a standby, or read-only transactions)");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database takes no writes now (a standby in recovery, or read-only transactions); nothing was changed; writes work again once it is a primary that takes them",
                )
            }
            SyncError::Database(db) => {
                tracing::warn!(error = %db, "admin write: database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; nothing was changed",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<ProvisionError> for ApiError {
    fn from(e: ProvisionError) -> ApiError {
        match e {
            ProvisionError::Render {
                template,
                line,
                column,
                message,
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "template_error",
                match (line, column) {
                    (Some(l), Some(c)) => format!("{template}: line {l}, column {c}: {message}"),
                    _ => format!("{template}: {message}"),
                },
            )
            .with_details(json!({
                "template": template, "line": line, "column": column, "message": message,
            })),
            ProvisionError::NotFound => ApiError::not_found("file"),
            ProvisionError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many renders are waiting; try again",
            ),
            other => ApiError::internal(other),
        }
    }
}

/// What the API answers a path under `/v1` that it does not have: axum's
/// own 404 is an empty body.
pub async fn unknown_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; /openapi.json lists them",
    )
}

/// What the API listener answers a path outside `/v1` that it does not
/// have: axum's own 404 has no body, and bad input is told why.
pub async fn unknown_path() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path on this listener; /openapi.json lists the API's routes",
    )
}

/// [`unknown_path`] for the monitoring listener (`http.monitoring_listen`),
/// which has no `/openapi.json` to point at.
pub async fn unknown_monitoring_path() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path on this listener; this listener serves /healthz, /readyz and /metrics",
    )
}

/// What the API answers a method a route does not take (axum keeps the
/// `Allow` header it sets).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; the Allow header lists those it takes",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_timeout_is_busy_and_says_when_to_retry() {
        let busy = ApiError::from(SyncError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(
            (busy.status, busy.code),
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        );
        let response = busy.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");

        let down = ApiError::from(SyncError::Database(sqlx::Error::PoolClosed));
        assert_eq!(
            (down.status, down.code),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert!(down
            .into_response()
            .headers()
            .get(header::RETRY_AFTER)
            .is_none());
    }

    /// A read-only database (here: a session whose transactions are
    /// read-only, as every one on a standby is) is named, not "unavailable".
    #[tokio::test]
    async fn a_write_a_read_only_database_refuses_says_why() {
        use sqlx::Connection;
        let db = dialtone_sync::testing::TestDb::postgres().await;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("SET default_transaction_read_only = on")
            .execute(&mut conn)
            .await
            .unwrap();
        let refused = sqlx::query("CREATE TABLE t (id int)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        let error = ApiError::from(SyncError::Database(refused));
        assert_eq!(
            (error.status, error.code),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert!(
            error.message.contains("takes no writes now"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("nothing was changed"),
            "{}",
            error.message
        );
    }

    /// A commit the database may have made is never "nothing was
    /// changed", nor an invitation to retry.
    #[test]
    fn a_commit_of_unknown_outcome_says_so() {
        let lost = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed");
        let unknown = ApiError::from(SyncError::CommitUnknown(sqlx::Error::Io(lost)));
        assert_eq!(
            (unknown.status, unknown.code),
            (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown")
        );
        assert!(!unknown.message.contains("nothing was changed"));
        assert!(unknown
            .into_response()
            .headers()
            .get(header::RETRY_AFTER)
            .is_none());
    }
}

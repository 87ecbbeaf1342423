//! A tenant's share of the database pool. The pool is small
//! (`database.max_connections`) and every admin request that awaits the
//! store holds a connection while its statements run; without a share one
//! tenant sending many slow requests at once held every connection, and
//! another tenant's request waited out the pool's acquire timeout and
//! failed as if the database were down.
//!
//! A tenant runs at most [`per_tenant`] such requests at once; one more is
//! refused at once with 429 and `Retry-After` rather than made to wait: a
//! waiting request still holds its HTTP connection and task, and only a
//! refusal tells the client to slow down. The count is per tenant, not per
//! token, so more tokens buy no more. Global-admin tokens are the
//! operator's, trusted, and not counted: an import or a rollout script
//! must not be throttled by the limit that protects tenants from each
//! other.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AdminState, Principal};

/// Database-bound requests one tenant may run at once: a quarter of
/// `database.max_connections`, at least one, so that a tenant at its share
/// leaves the rest of the pool to the other tenants and the watcher.
pub fn per_tenant(max_connections: u32) -> usize {
    (max_connections as usize / 4).max(1)
}

/// Runs a database-bound request under its tenant's share. Requests
/// without a valid token pass through: the handler refuses them before it
/// touches the store.
pub(super) async fn admit(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let tenant = match Principal::from_request_parts(&mut parts, &state).await {
        Ok(principal) if !principal.is_global() => principal.tenant.map(|t| t.id),
        _ => None,
    };
    let request = Request::from_parts(parts, body);
    let Some(tenant) = tenant else {
        return next.run(request).await;
    };
    let Some(_place) = state.database_share.take(tenant) else {
        metrics::counter!("dialtone_admin_database_refused_total").increment(1);
        return refusal(state.database_share.per_tenant());
    };
    next.run(request).await
}

fn refusal(per_tenant: usize) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "busy",
        format!(
            "this tenant already runs {per_tenant} requests that use the database, \
             its share; retry when one ends"
        ),
    )
    .into_response();
    // Such requests take milliseconds; a second is enough for one to end.
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::per_tenant;

    #[test]
    fn a_share_is_a_quarter_of_the_pool_and_never_none() {
        assert_eq!(per_tenant(8), 2);
        assert_eq!(per_tenant(20), 5);
        assert_eq!(per_tenant(3), 1);
        assert_eq!(per_tenant(1), 1);
    }
}

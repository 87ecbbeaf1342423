//! A tenant's share of the database pool. The pool is small
//! (`database.max_connections`) and every admin request that awaits the
//! store holds a connection while its statements run; without a share one
//! tenant sending many slow requests at once held every connection, and
//! another tenant's request waited out the pool's acquire timeout and
//! failed as if the database were down.
//!
//! A tenant runs at most [`per_tenant`] such requests at once, and all
//! tenants together at most [`all_tenants`]: several tenants at their
//! shares (or one customer holding several tenant accounts) would
//! otherwise still fill the pool, and the watcher's catch-up, the history
//! writers and the operator's own requests wait on the same connections.
//! Past either, a request is refused at once with 429 and `Retry-After`
//! rather than made to wait: a waiting request still holds its HTTP
//! connection and task, and only a refusal tells the client to slow down.
//! The count is per tenant, not per token, so more tokens buy no more.
//! Global-admin tokens are the operator's, trusted, and not counted: an
//! import or a rollout script must not be throttled by the limit that
//! protects tenants from each other, and the reserve is theirs to use.
//!
//! Three tenants at a share of two fill the default six places between
//! them, and a fourth would be refused for as long as they keep sending.
//! So once a tenant has been refused for want of room in the tenants'
//! part, every tenant is held to one place for [`CONTENTION_WINDOW`]
//! (longer than the `Retry-After` it was told): the busy tenants' extra
//! requests are refused as they come, their running ones end, and the
//! places they free go to the tenant that waited. A tenant's first place
//! is never taken back, and without contention each keeps its full share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dialtone_sync::{Id, TokenScope};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::auth::Authenticated;
use super::error::ApiError;
use super::running::{Place, Running};
use super::{AdminState, Principal};

/// Database-bound requests one tenant may run at once: a quarter of
/// `database.max_connections`, at least one, so that a tenant at its share
/// leaves the rest of the pool to the other tenants and the watcher.
pub fn per_tenant(max_connections: u32) -> usize {
    (max_connections as usize / 4).max(1)
}

/// Database-bound requests all tenants together may run at once: the pool
/// less a reserve of one tenant's share (a quarter, at least one), kept
/// for the watcher, the background writers and global admins. Never below
/// one, or no tenant could write at all: pools of 1, 2, 3 and 4 leave
/// tenants 1, 1, 2 and 3 (a pool of one keeps no reserve), the default 8
/// leaves 6, and 20 leaves 15.
pub fn all_tenants(max_connections: u32) -> usize {
    let pool = max_connections.max(1) as usize;
    (pool - per_tenant(max_connections).min(pool)).max(1)
}

/// Who was out of places when a request was refused; also the metric's
/// `scope` label, a fixed set so that no tenant becomes a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    AllTenants,
    /// Another tenant was refused for want of room lately, and this one
    /// already runs a request.
    OthersWaiting,
}

impl Scope {
    pub fn label(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::AllTenants => "all_tenants",
            Scope::OthersWaiting => "others_waiting",
        }
    }
}

/// How long after a tenant was refused for want of room every tenant is
/// held to one place: past the `Retry-After: 1` the refused tenant heard,
/// so that its retry finds the places the others gave up.
pub const CONTENTION_WINDOW: Duration = Duration::from_secs(3);

/// How long a tenant's request waits on the database for its answer by
/// default (`database.request_timeout_s`).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// The places of the node's tenants in the database pool.
pub struct DatabaseShare {
    tenants: Arc<Running>,
    /// Tenants' request bodies being read before a place is taken: a few
    /// per tenant, and a bound for the node, so no tenant buffers more
    /// than `BODIES_PER_TENANT` x 2 MiB, and all of them no more than
    /// `BODIES_ALL` x 2 MiB.
    bodies: Arc<Running>,
    bodies_all: Arc<Semaphore>,
    /// Until when tenants read one body each: set when a tenant found no
    /// room, as `contended_until` is for the database places, so that
    /// tenants trickling bodies slowly cannot keep every place.
    bodies_contended_until: Mutex<Option<Instant>>,
    /// Tenants' template checks, previews and source tests, from their
    /// body read to their answer (see [`bounded_body`]).
    checks: Arc<Running>,
    all: Arc<Semaphore>,
    all_places: usize,
    /// Until when tenants are held to one place each (see the module).
    contended_until: Mutex<Option<Instant>>,
    window: Duration,
    /// How long a tenant's request waits on the database before it is
    /// answered 503; its work goes on, holding its places, until it ends
    /// or reaches its ceiling ([`work_ceiling`]).
    answer_within_ms: AtomicU64,
    /// How fast each tenant's writes may come.
    pub write_rates: super::write_rate::WriteRates,
}

/// A request's places, its tenant's and the node's; given back when
/// dropped.
pub struct Admission {
    _tenant: Place,
    _all: OwnedSemaphorePermit,
}

impl DatabaseShare {
    pub fn new(max_connections: u32) -> Arc<DatabaseShare> {
        Self::with_window(max_connections, CONTENTION_WINDOW)
    }

    fn with_window(max_connections: u32, window: Duration) -> Arc<DatabaseShare> {
        let all_places = all_tenants(max_connections);
        Arc::new(DatabaseShare {
            tenants: Running::new(per_tenant(max_connections)),
            bodies: Running::new(BODIES_PER_TENANT),
            bodies_all: Arc::new(Semaphore::new(BODIES_ALL)),
            bodies_contended_until: Mutex::new(None),
            checks: Running::new(CHECKS_PER_TENANT),
            all: Arc::new(Semaphore::new(all_places)),
            all_places,
            contended_until: Mutex::new(None),
            window,
            answer_within_ms: AtomicU64::new(ANSWER_WITHIN.as_millis() as u64),
            write_rates: Default::default(),
        })
    }

    /// Sets how long a tenant's request waits on the database for its
    /// answer (the configuration's `database.request_timeout_s`).
    pub fn answer_within(&self, within: Duration) {
        self.answer_within_ms
            .store(within.as_millis() as u64, Ordering::Relaxed);
    }

    /// Places for one request of `tenant`, or who had none left. The
    /// tenant's own share is asked first, so a tenant past it hears that,
    /// whatever the others run.
    pub fn admit(&self, tenant: Id) -> Result<Admission, Scope> {
        let (place, running) = self.tenants.take_counted(tenant).ok_or(Scope::Tenant)?;
        if running > 1 && self.contended() {
            return Err(Scope::OthersWaiting);
        }
        let Ok(all) = self.all.clone().try_acquire_owned() else {
            let until = Instant::now() + self.window;
            *self
                .contended_until
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(until);
            return Err(Scope::AllTenants);
        };
        Ok(Admission {
            _tenant: place,
            _all: all,
        })
    }

    fn contended(&self) -> bool {
        still_contended(&self.contended_until)
    }

    /// Places to read one body of `tenant`. As for the database places:
    /// once a tenant found none left, for the window after, a tenant
    /// already reading a body gets no second, so the places that free up
    /// go to tenants reading none.
    fn admit_body(&self, tenant: Id) -> Option<(Place, OwnedSemaphorePermit)> {
        let (place, reading) = self.bodies.take_counted(tenant)?;
        if reading > 1 && still_contended(&self.bodies_contended_until) {
            return None;
        }
        let Ok(all) = self.bodies_all.clone().try_acquire_owned() else {
            *self
                .bodies_contended_until
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + self.window);
            return None;
        };
        Some((place, all))
    }

    fn refusal(&self, scope: Scope) -> Response {
        let message = match scope {
            Scope::Tenant => match self.tenants.per_tenant() {
                1 => "this tenant already runs a request that uses the database, \
                      its share; retry when it ends"
                    .to_string(),
                n => format!(
                    "this tenant already runs {n} requests that use the database, \
                     its share; retry when one ends"
                ),
            },
            Scope::AllTenants => format!(
                "this node's share of the database for all tenants together ({} \
                 requests at once) is in use; this tenant is within its own share; \
                 retry in a moment",
                self.all_places
            ),
            Scope::OthersWaiting => "other tenants are waiting for this node's share of the \
                 database, and this tenant already runs a request that uses it; \
                 retry when it ends"
                .to_string(),
        };
        // `busy` carries `Retry-After: 1`: such requests take milliseconds,
        // and a second is enough for one to end.
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", message).into_response()
    }
}

fn still_contended(until: &Mutex<Option<Instant>>) -> bool {
    let until = *until.lock().unwrap_or_else(|e| e.into_inner());
    until.is_some_and(|until| Instant::now() < until)
}

/// Longest a tenant's request body may take to arrive. The body is read
/// whole before a place is taken: read by the handler under the place, a
/// body that never came (headers, then silence) held it for as long as the
/// client kept the connection, and a few such requests held every place.
const BODY_WAIT: Duration = Duration::from_secs(10);
/// The API's request body cap (axum's default, which its extractors apply).
pub(crate) const BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Bodies read at once for one tenant, and for all of them on this node.
const BODIES_PER_TENANT: usize = 8;
const BODIES_ALL: usize = 128;
/// Template checks, previews and source tests one tenant may have running
/// at once, each from its body read to its answer.
const CHECKS_PER_TENANT: usize = 4;

/// The request with its body read (`authenticated_body`), and the tenant
/// of its token: none for requests the handler refuses or a global admin.
async fn tenants_request(
    state: &AdminState,
    request: Request,
) -> Result<(Request, Option<Id>), Response> {
    let (parts, tenant, body) = authenticated_body(state, request).await?;
    Ok((Request::from_parts(parts, body), tenant))
}

/// Runs a database-bound request under its tenant's share and the
/// tenants' part of the pool. Requests without a valid token pass
/// through: the handler refuses them before it touches the store.
pub(super) async fn admit(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let (request, tenant) = match tenants_request(&state, request).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let Some(tenant) = tenant else {
        return next.run(request).await;
    };
    // A read-only token's write is refused by its handler: charged to the
    // tenant's write rate, a dashboard's token looping on one spent the
    // rate its admins write with.
    let may_write = request
        .extensions()
        .get::<Authenticated>()
        .is_some_and(|who| {
            matches!(
                who.0.scope,
                TokenScope::TenantAdmin | TokenScope::GlobalAdmin
            )
        });
    let writes = !request.method().is_safe() && may_write;
    let admission = match state.database_share.admit(tenant) {
        Ok(admission) => admission,
        Err(scope) => {
            metrics::counter!("dialtone_admin_database_refused_total", "scope" => scope.label())
                .increment(1);
            return state.database_share.refusal(scope);
        }
    };
    if writes {
        if let Some(refused) = past_write_rate(&state, tenant) {
            return refused;
        }
    }
    // Read once: the answer's deadline and the work's ceiling agree.
    let within = Duration::from_millis(
        state
            .database_share
            .answer_within_ms
            .load(Ordering::Relaxed),
    );
    // In a task of its own that holds the place until the request's work
    // ends. A client that hangs up drops the request, but not its
    // statements: the connection stays busy until they finish (sqlx waits
    // for them before the pool takes it back). Held by the dropped future,
    // the place was free at once, and a tenant that started slow requests
    // and hung up on each held the whole pool.
    let mirror = state.mirror.clone();
    let mut handled = tokio::spawn(
        async move {
            let _admission = admission;
            let ceiling = work_ceiling(within);
            match tokio::time::timeout(ceiling, next.run(request)).await {
                Ok(response) => response,
                Err(_) => {
                    given_up(&mirror, tenant, ceiling, writes);
                    ApiError::database_did_not_answer(within, writes).into_response()
                }
            }
        }
        .instrument(tracing::Span::current()),
    );
    // A database that takes statements and never answers (a lock held
    // for good, a stopped server) would hold the client for as long; it
    // is answered, and the work keeps its places until the database
    // answers it, as a hung-up client's does, or until its ceiling.
    let Ok(answered) = tokio::time::timeout(within, &mut handled).await else {
        tracing::warn!(
            within_s = within.as_secs_f64(),
            writes,
            ceiling_s = work_ceiling(within).as_secs_f64(),
            "admin request: the database did not answer in time; answered 503, the work goes on \
             until its ceiling"
        );
        return ApiError::database_did_not_answer(within, writes).into_response();
    };
    match answered {
        Ok(response) => response,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down",
        )
        .into_response(),
    }
}

/// How long an admitted request's work may hold its places: twice the
/// answer's deadline. Past its answer the work goes on so that a slow
/// write is made rather than cut off, but a statement on a connection
/// that died without a word (a peer gone, a path that drops packets;
/// the store sets no statement timeout, and no keepalive notices) is
/// never answered, and the places it held were lost until restart: two
/// such requests took a tenant's share for good, six every tenant's.
pub(super) fn work_ceiling(answer_within: Duration) -> Duration {
    answer_within.saturating_mul(2)
}

/// Counts and logs a request's work dropped at its ceiling, its places
/// free again. Dropping it drops its statements' futures: the store closes
/// the connection a dropped call held, so the pool opens another, and
/// PostgreSQL rolls back a transaction left open.
fn given_up(mirror: &dialtone_sync::Mirror, tenant: Id, ceiling: Duration, writes: bool) {
    metrics::counter!("dialtone_admin_database_given_up_total").increment(1);
    let slug = mirror.load().tenant(tenant).map(|row| row.slug.to_string());
    tracing::warn!(
        tenant_id = tenant,
        tenant = slug.as_deref().unwrap_or("(gone)"),
        ceiling_s = ceiling.as_secs_f64(),
        writes,
        "admin request: the database never answered its work; given up and its places freed \
         (a write not yet committed is rolled back)"
    );
}

/// Spends one of `tenant`'s writes; when none is left, the 429 saying
/// when the next one is due. Taken once the request has its database
/// place, so a request the share refuses spends none.
fn past_write_rate(state: &AdminState, tenant: Id) -> Option<Response> {
    let mirror = state.mirror.load();
    let Some(row) = mirror.tenant(tenant) else {
        // A tenant this node no longer has: the handler refuses the token.
        return None;
    };
    let per_minute = state
        .quotas
        .limit(row, super::quotas::Quota::WritesPerMinute);
    let Err(wait) = state
        .database_share
        .write_rates
        .take(tenant, per_minute, Instant::now())
    else {
        return None;
    };
    metrics::counter!("dialtone_admin_database_refused_total", "scope" => "write_rate")
        .increment(1);
    // Rounded up: a client told too early is refused again.
    let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "busy",
        format!(
            "tenant {}: past its {per_minute} writes a minute (quota writes_per_minute); \
             retry in {retry_after} s",
            row.slug
        ),
    )
    .into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    Some(response)
}

/// Reads a tenant's request body as [`admit`] does, for the routes that
/// take a body but no database place (template checks, previews, source
/// tests): read by their handlers, a body trickled in, or never sent,
/// held its connection and buffer for as long as the client liked, and
/// a tenant-read token could hold every API connection that way.
///
/// Once read, the request runs under one of its tenant's
/// `CHECKS_PER_TENANT` places until its answer is made. The body places
/// are given back when the body is in, but the handler then holds what it
/// parsed while it waits, without a deadline, for the render pool, which
/// lets a tenant have a thousand renders waiting: without a place of its
/// own a tenant held that many requests' bodies at once. Past its places a
/// request is refused with 429, as the database share's are. Held by the
/// request's future, not a task of its own as `admit`'s place is: a client
/// that hangs up drops its wait for the pool with it, and a render already
/// running keeps its pool slot until it ends.
pub(super) async fn bounded_body(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let (request, tenant) = match tenants_request(&state, request).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let Some(tenant) = tenant else {
        return next.run(request).await;
    };
    let checks = &state.database_share.checks;
    let Some(_place) = checks.take(tenant) else {
        metrics::counter!("dialtone_admin_database_refused_total", "scope" => "checks")
            .increment(1);
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            format!(
                "this tenant already runs {} template checks, previews and source tests at \
                 once, its share; retry when one ends",
                checks.per_tenant()
            ),
        )
        .into_response();
    };
    next.run(request).await
}

/// The request's token checked once (handlers reuse it), and for a tenant's
/// token its body read whole under the body places and `BODY_WAIT`.
/// Global admins' bodies and requests without a valid token pass as they
/// are: the handler refuses the latter before reading anything.
async fn authenticated_body(
    state: &AdminState,
    request: Request,
) -> Result<
    (
        axum::http::request::Parts,
        Option<dialtone_sync::Id>,
        axum::body::Body,
    ),
    Response,
> {
    let (mut parts, body) = request.into_parts();
    let principal = Principal::from_request_parts(&mut parts, state).await.ok();
    let tenant = match &principal {
        Some(principal) if !principal.is_global() => principal.tenant.as_ref().map(|t| t.id),
        _ => None,
    };
    if let Some(principal) = principal {
        parts.extensions.insert(Authenticated(principal));
    }
    let Some(tenant) = tenant else {
        return Ok((parts, None, body));
    };
    // The import is a global admin's only: its handler refuses a tenant's
    // token before reading the body (up to 256 MiB), so the place it takes
    // is back at once, and the body is not read here.
    let reads_no_body = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|p| p.as_str() == "/v1/import");
    if reads_no_body {
        return Ok((parts, Some(tenant), body));
    }
    // A request without a body takes no place; a safe method's body is
    // not read (no handler of one reads it), so it takes none either: a
    // tenant's GETs, declaring a body they trickled, held places others'
    // writes needed.
    if parts.method.is_safe() || body_is_empty(&body) {
        let body = if parts.method.is_safe() {
            axum::body::Body::empty()
        } else {
            body
        };
        return Ok((parts, Some(tenant), body));
    }
    let Some(_reading) = state.database_share.admit_body(tenant) else {
        metrics::counter!("dialtone_admin_database_refused_total", "scope" => "bodies")
            .increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "too many of this node's request bodies are being received; retry in a moment",
        )
        .into_response());
    };
    match read_body(&parts, body).await {
        Ok(body) => Ok((parts, Some(tenant), body)),
        Err(refused) => Err(refused.into_response()),
    }
}

/// Whether the request has no body, as hyper knows it: a length of 0, or
/// for HTTP/1.1 neither a length nor a chunked transfer.
fn body_is_empty(body: &axum::body::Body) -> bool {
    use axum::body::HttpBody as _;
    body.size_hint().exact() == Some(0)
}

/// A tenant's request body, read whole within `BODY_WAIT`, or the answer
/// that refuses it. A declared length past the cap is refused unread.
async fn read_body(
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<axum::body::Body, ApiError> {
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(ApiError::body_too_large());
    }
    match tokio::time::timeout(BODY_WAIT, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => Ok(axum::body::Body::from(bytes)),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            Err(if inner.is::<http_body_util::LengthLimitError>() {
                ApiError::body_too_large()
            } else {
                ApiError::bad_request("the request body was cut short")
            })
        }
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_WAIT.as_secs()
            ),
        )),
    }
}

#[cfg(test)]
#[path = "tests/database_share_places.rs"]
mod tests;

//! The admin API on the API listener: `/v1/…`, JSON, token-authenticated.
//!
//! Reads come from the mirror (what phones are being served right now);
//! every write is one transaction with its audit row, made through the data
//! layer, so it reaches every node through the change log. After a write
//! this node catches up before answering, so a client reads its own write.
//! Optimistic concurrency: single resources carry an `ETag`; an update or
//! delete with `If-Match` is refused with 412 if the row changed meanwhile.

mod audit;
mod auth;
pub mod database_share;
mod directory;
pub mod error;
mod fleet;
mod mirror_view;
mod openapi;
mod phones;
mod preview;
pub mod quotas;
pub mod region_changes;
mod resync;
pub mod running;
mod sources;
mod templates;
mod tenants;
#[cfg(test)]
mod tests;
mod tokens;
mod ui;
mod unclaimed;
mod versions;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::Router;
use dialtone_sync::{watcher, Audit, Mirror, Mutation, SecretKey, Store, Target, WriteReport};
use dialtone_tftp::Provisioner;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

pub use auth::Principal;
use error::ApiError;

/// Largest bulk import accepted in one request.
const IMPORT_LIMIT: usize = 256 << 20;

#[derive(Clone)]
pub struct AdminState {
    pub mirror: Arc<Mirror>,
    pub store: Arc<dyn Store>,
    pub provisioner: Arc<Provisioner>,
    pub key: SecretKey,
    /// Where sources may connect: the source test obeys it like lookups do.
    pub source_networks: Arc<dialtone_directory::SourceNetworks>,
    /// The operator's per-tenant quota defaults.
    pub quotas: Arc<quotas::QuotaConfig>,
    /// Sends resync NOTIFYs; `None` when `[resync]` is not configured.
    pub resync: Option<crate::resync::ResyncService>,
    /// The node's lookups, for the state of mirrored sources; `None` where
    /// no lookups run (router tests).
    pub lookups: Option<dialtone_directory::LookupService>,
    /// Source tests each tenant has running (`SOURCE_TESTS_PER_TENANT`).
    pub source_tests: Arc<running::Running>,
    /// Database-bound requests each tenant, and all tenants together, have
    /// running (`database_share.rs`).
    pub database_share: Arc<database_share::DatabaseShare>,
    /// When each tenant's own tokens last changed its region here.
    pub region_changes: Arc<region_changes::RegionChanges>,
}

/// Source tests one tenant may run at once; more are answered 429.
pub const SOURCE_TESTS_PER_TENANT: usize = 2;

pub fn router(state: AdminState) -> Router {
    // Every handler here awaits the store, holding a pool connection while
    // its statements run: a tenant runs these under its share of the pool,
    // and all tenants under theirs. `openapi.rs` documents the 429 of
    // exactly these routes (its `DatabaseRoutes`).
    let database = Router::new()
        .route("/v1/tenants", post(tenants::create))
        .route(
            "/v1/tenants/{slug}",
            put(tenants::update).delete(tenants::remove),
        )
        .route("/v1/tenants/{slug}/fleet", get(fleet::fleet))
        .route("/v1/phones", post(phones::create))
        .route(
            "/v1/phones/{mac}",
            put(phones::update).delete(phones::remove),
        )
        .route("/v1/phones/{mac}/history", get(audit::history))
        // A resync writes its audit row before it is queued.
        .route("/v1/phones/{mac}/resync", post(resync::resync_phone))
        .route("/v1/tenants/{slug}/resync", post(resync::resync_tenant))
        .route("/v1/templates", post(templates::create))
        .route(
            "/v1/templates/{id}",
            put(templates::update).delete(templates::remove),
        )
        .route("/v1/templates/{id}/versions", get(versions::versions))
        .route(
            "/v1/templates/{id}/versions/{version}",
            get(versions::version),
        )
        .route("/v1/templates/{id}/diff", get(versions::diff))
        .route("/v1/templates/{id}/rollback", post(versions::rollback))
        .route(
            "/v1/tenants/{slug}/directory",
            post(directory::create_entry),
        )
        .route(
            "/v1/tenants/{slug}/directory/{external_id}",
            put(directory::update_entry).delete(directory::remove_entry),
        )
        .route(
            "/v1/tenants/{slug}/directory-sources",
            post(sources::create_source),
        )
        .route(
            "/v1/tenants/{slug}/directory-sources/{name}",
            put(sources::update_source).delete(sources::remove_source),
        )
        .route("/v1/tenants/{slug}/unclaimed", get(unclaimed::tenant_list))
        .route(
            "/v1/tenants/{slug}/unclaimed/{mac}/claim",
            post(unclaimed::claim),
        )
        .route("/v1/unclaimed", get(unclaimed::unassigned_list))
        .route("/v1/unclaimed/counts", get(unclaimed::counts))
        .route("/v1/tokens", post(tokens::create))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/v1/audit", get(audit::list))
        .route(
            "/v1/import",
            // A platform's worth of phones in one document, read (up to
            // `IMPORT_LIMIT`) by the handler once the token may import.
            post(audit::import),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            database_share::admit,
        ));
    // Bodies but no connection: a tenant's body is read under the same
    // places and deadline as a database-bound one's. `openapi.rs`
    // documents what that refuses on exactly these routes (its
    // `BodyRoutes`).
    let bodies = Router::new()
        .route("/v1/templates/validate", post(templates::validate))
        .route("/v1/preview", post(preview::preview))
        // Reaches out of the node, not to the database; its own cap.
        .route(
            "/v1/tenants/{slug}/directory-sources/{name}/test",
            post(sources::test_source),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            database_share::bounded_body,
        ));
    // Answered from the mirror, the render pool or memory: no connection.
    Router::new()
        .route("/v1/tenants", get(tenants::list))
        .route("/v1/tenants/{slug}", get(tenants::show))
        .route("/v1/phones", get(phones::list))
        .route("/v1/phones/{mac}", get(phones::show))
        .route("/v1/resyncs", get(resync::list))
        .route("/v1/phones/{mac}/files", get(preview::phone_files))
        .route("/v1/templates", get(templates::list))
        .route("/v1/shipped-templates", get(templates::shipped))
        .route(
            "/v1/shipped-templates/{family}/{file_pattern}",
            get(templates::shipped_one),
        )
        .route("/v1/templates/{id}", get(templates::show))
        .route("/v1/templates/{id}/phones", get(preview::template_phones))
        .route("/v1/tenants/{slug}/directory", get(directory::list_entries))
        .route(
            "/v1/tenants/{slug}/directory/{external_id}",
            get(directory::show_entry),
        )
        .route(
            "/v1/tenants/{slug}/directory-sources",
            get(sources::list_sources),
        )
        .route(
            "/v1/tenants/{slug}/directory-sources/{name}",
            get(sources::show_source),
        )
        .route("/v1/tokens", get(tokens::list))
        .route("/v1/whoami", get(tokens::whoami))
        .merge(database)
        .merge(bodies)
        // A client is told in the API's error shape, with the headers
        // below, that a route or a method does not exist: axum's own
        // answers are empty, and a 404 would not get the headers. Routes
        // outside `/v1` (lookups, health) keep their own 404.
        .route("/v1", any(error::unknown_route))
        .route("/v1/", any(error::unknown_route))
        .route("/v1/{*rest}", any(error::unknown_route))
        .method_not_allowed_fallback(error::method_not_allowed)
        // Every answer above carries tenants' data (phones, line settings,
        // template bodies, directory entries): no browser or proxy keeps it.
        // The page's assets and the API document keep their own caching.
        .layer(axum::middleware::map_response(
            dialtone_directory::http::private_answer,
        ))
        .route("/openapi.json", get(openapi::document))
        .merge(ui::router())
        .with_state(state)
}

/// What one write endpoint records: exactly one audit row per call.
pub(crate) struct Change<'a> {
    pub action: &'static str,
    pub entity: &'static str,
    pub key: String,
    pub tenant: Option<&'a str>,
    /// Summaries and hashes only: never a secret.
    pub detail: Value,
}

/// Applies `mutations` with their audit row in one transaction, then brings
/// this node's mirror up to date so the answer reflects the write.
pub(crate) async fn commit(
    state: &AdminState,
    principal: &Principal,
    change: Change<'_>,
    mutations: Vec<Mutation>,
) -> Result<WriteReport, ApiError> {
    let report = write(state, principal, change, mutations).await?;
    // Bounded: the catch-up may have to wait for another one, or become a
    // full reload (a node far behind, a transaction left open on the
    // database), and the request holds its tenant's database share meanwhile.
    match tokio::time::timeout(
        WRITE_CATCH_UP_LIMIT,
        watcher::catch_up(&state.mirror, &*state.store),
    )
    .await
    {
        Ok(Ok(_)) => {}
        // Written and committed; the watcher will catch up on its own.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "admin write: could not refresh the mirror at once");
        }
        Err(_) => tracing::warn!(
            limit_s = WRITE_CATCH_UP_LIMIT.as_secs(),
            "admin write: the mirror was not refreshed in time; the write is committed"
        ),
    }
    Ok(report)
}

/// [`commit`] without the catch-up: for a write the mirror does not hold
/// (an audit row alone), whose caller acts as soon as it is committed.
pub(crate) async fn write(
    state: &AdminState,
    principal: &Principal,
    change: Change<'_>,
    mutations: Vec<Mutation>,
) -> Result<WriteReport, ApiError> {
    let audit = audit_of(principal, change);
    // The caller's token as this node authenticated it: a node whose
    // mirror lags a revocation (or the token's tenant's deletion, whose
    // slug a new tenant may already hold) writes nothing with it.
    let token = Target::Token {
        id: principal.token_id,
    };
    let mut checked = Vec::with_capacity(mutations.len() + 1);
    checked.push(Mutation::Expect {
        target: token.clone(),
        etag: principal.token_etag.clone(),
    });
    checked.extend(mutations);
    state
        .store
        .apply(&checked, &audit)
        .await
        .map_err(|e| match &e {
            dialtone_sync::SyncError::NotFound(what) | dialtone_sync::SyncError::Conflict(what)
                if *what == token.to_string() =>
            {
                ApiError::unauthorized("invalid, expired or revoked token")
            }
            _ => ApiError::from(e),
        })
}

/// How long a write waits for this node's mirror to show it.
const WRITE_CATCH_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The answer to a create that is committed but not yet in this node's
/// mirror (the catch-up above ran out: a reload after a large import, say).
/// An error would tell the client the write failed, and its retry would
/// meet a 409; `extra` carries what the client cannot read again later
/// (a new token's value).
pub(crate) fn created_not_yet_shown(what: &str, extra: Value) -> Response {
    let mut body = serde_json::json!({
        "committed": true,
        "detail": format!("{what} is written; this node has not caught up with it yet, read it again in a moment"),
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// The audit row of `change`, made by `principal`.
pub(crate) fn audit_of(principal: &Principal, change: Change<'_>) -> Audit {
    Audit {
        actor: principal.actor(),
        tenant: change.tenant.map(str::to_string),
        action: change.action.into(),
        entity: change.entity.into(),
        entity_key: change.key,
        detail: change.detail,
    }
}

/// [`commit`] of one mutation, after the check an `If-Match` header asks for.
pub(crate) async fn commit_if_match(
    state: &AdminState,
    principal: &Principal,
    headers: &HeaderMap,
    target: Target,
    edit: Edit<'_>,
    mutation: Mutation,
) -> Result<WriteReport, ApiError> {
    commit_if_match_keeping(state, principal, headers, target, edit, mutation, false).await
}

/// [`commit_if_match`] of a write that may carry over something read
/// from this node's mirror (a secret or settings the body left out): when
/// `keeps_from_mirror`, it applies only to the row as read, whoever the
/// caller is.
pub(crate) async fn commit_if_match_keeping(
    state: &AdminState,
    principal: &Principal,
    headers: &HeaderMap,
    target: Target,
    edit: Edit<'_>,
    mutation: Mutation,
    keeps_from_mirror: bool,
) -> Result<WriteReport, ApiError> {
    let (entity, key) = audit_name(&target);
    let changed = format!("{entity} {key}");
    let change = Change {
        action: edit.action,
        entity,
        key,
        tenant: edit.tenant,
        detail: edit.detail,
    };
    let asked = expectation(headers, target.clone(), edit.seen.as_deref())?;
    // A tenant's caller was checked against this node's mirror, which may
    // lag: the write applies only to the row as checked, or a phone that
    // has just moved to another tenant could be written (and taken back).
    // An If-Match does not replace that check: a tag read from a node that
    // has caught up matches the database while this node's row is older,
    // and the write would put back what it carries over from that row
    // (a tenant's operator-set quotas, a line's previous password). So a
    // global admin's write that carries something over is held to it too.
    let must_match_mirror = !principal.is_global() || keeps_from_mirror;
    let implied = match edit.seen {
        Some(etag) if must_match_mirror && !asks_for(&asked, &etag) => {
            Some(Mutation::Expect { target, etag })
        }
        _ => None,
    };
    let implied_alone = asked.is_none() && implied.is_some();
    let implied_besides = asked.is_some() && implied.is_some();
    let mut mutations: Vec<Mutation> = asked.into_iter().chain(implied).collect();
    mutations.push(mutation);
    commit(state, principal, change, mutations)
        .await
        .map_err(|e| match e.status {
            StatusCode::PRECONDITION_FAILED if implied_alone => ApiError::conflict(format!(
                "{changed} changed a moment ago, on this or another node; read it again and retry"
            )),
            StatusCode::PRECONDITION_FAILED if implied_besides => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!(
                    "{changed} changed since you read it, or this node has not caught up with \
                     that change yet; read it again and retry"
                ),
            ),
            _ => e,
        })
}

/// A write to one existing row: the audit row's entity and key come from
/// the row's `Target`, so no handler restates them.
pub(crate) struct Edit<'a> {
    pub action: &'static str,
    pub tenant: Option<&'a str>,
    /// Summaries and hashes only: never a secret.
    pub detail: Value,
    /// The row's tag as the caller's rights were checked against it (see
    /// `commit_if_match`); `None` where ownership cannot move.
    pub seen: Option<String>,
}

/// How the audit log names a row.
fn audit_name(target: &Target) -> (&'static str, String) {
    match target {
        Target::Tenant { slug } => ("tenant", slug.clone()),
        Target::Phone { mac } => ("phone", mac.to_string()),
        Target::Template { id } => ("template", format!("#{id}")),
        Target::DirectoryEntry {
            tenant,
            external_id,
        } => ("directory_entry", format!("{tenant}/{external_id}")),
        Target::DirectorySource { tenant, name } => {
            ("directory_source", format!("{tenant}/{name}"))
        }
        Target::Token { id } => ("token", format!("#{id}")),
    }
}

/// Whether the caller's own `If-Match` already asks for `etag`.
fn asks_for(asked: &Option<Mutation>, etag: &str) -> bool {
    matches!(asked, Some(Mutation::Expect { etag: wanted, .. }) if wanted == etag)
}

/// The `Expect` mutation an `If-Match` header asks for, if any. `*` only
/// asks that the row exist, which the handlers check anyway. A list
/// matches when any of its tags does (RFC 9110 13.1.1); the store checks
/// one, so the list is checked against the tag this node read (`seen`)
/// when it is listed, else against its first: a list none of whose tags
/// this node has seen is refused at worst, never let through. A weak tag
/// never matches: If-Match compares strongly.
fn expectation(
    headers: &HeaderMap,
    target: Target,
    seen: Option<&str>,
) -> Result<Option<Mutation>, ApiError> {
    let mut tags = Vec::new();
    let mut given = false;
    for value in headers.get_all(header::IF_MATCH) {
        given = true;
        let text = value.to_str().map_err(|_| {
            ApiError::bad_request("If-Match: not ASCII; send the ETag as this API returned it")
        })?;
        tags.extend(text.split(',').map(str::trim).filter(|t| !t.is_empty()));
    }
    if !given || tags.is_empty() || tags.contains(&"*") {
        return Ok(None);
    }
    let strong: Vec<&str> = tags
        .iter()
        .copied()
        .filter(|t| !t.starts_with("W/"))
        .collect();
    let etag = match strong.iter().find(|t| Some(**t) == seen) {
        Some(tag) => tag,
        None => strong.first().ok_or_else(|| {
            ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!(
                    "{}: If-Match has only weak tags (W/\"…\"), which never match; \
                     send the ETag as this API returned it",
                    target
                ),
            )
        })?,
    };
    Ok(Some(Mutation::Expect {
        target,
        etag: etag.to_string(),
    }))
}

/// A JSON body with its `ETag` header.
pub(crate) fn tagged<T: Serialize>(etag: &str, body: T) -> Response {
    let mut response = axum::Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// A short hash for audit rows: enough to tell versions apart, and says
/// nothing about a secret.
pub(crate) fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(text.as_bytes());
    hex::encode(&hash[..8])
}

/// How long a list's walk may run once started: a tenant's whole
/// directory (200,000 entries) searched takes well under a second.
const WALK_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a list's walk over the mirror off the async workers. A list walks a
/// tenant's phones or entries (and every template's scope on the
/// platform), tens of milliseconds at the quotas: on a worker, a tenant
/// sending as many lists at once as there are workers held up every
/// tenant's lookups and provisioning. A tenant's walks run on the render
/// pool under its share, so they queue behind each other (and past the
/// share get 429) while other tenants' renders go on; a global admin's,
/// which may walk everything, on a blocking thread.
pub(crate) async fn off_workers<T, F>(
    state: &AdminState,
    principal: &Principal,
    job: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match principal.tenant_filter() {
        Some(tenant) => match state.provisioner.walk_on_pool(tenant, WALK_TIME, job).await {
            Ok(list) => Ok(list),
            // The pool words a job past its time as a render's; a walk
            // that panicked comes back as `Internal`, a 500 below.
            Err(dialtone_tftp::ProvisionError::Render { .. }) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "the list took over {} s; narrow it (q, vendor, mac_prefix) or try again",
                    WALK_TIME.as_secs()
                ),
            )),
            Err(e) => Err(e.into()),
        },
        None => tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| ApiError::internal(format!("a list's walk failed: {e}"))),
    }
}

/// Page size bounds for every list.
pub(crate) fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, 1000)
}

/// JSON text columns come back as JSON, as stored; bad stored text as a
/// string. Checked, not parsed into a tree: a parsed `Value` costs up to
/// 16 times its text (a page of 1,000 phones with 64 KiB of settings each
/// was gigabytes), and the text is shown unchanged anyway.
pub(crate) fn json_value(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_string())
        .unwrap_or_else(|_| serde_json::value::to_raw_value(text).expect("a string serializes"))
}

/// A name from the data layer's closed sets (family, scope, kind) given in
/// a request; the refusal lists the names it knows.
pub(crate) fn parse_name<T: std::str::FromStr<Err = dialtone_sync::SyncError>>(
    text: &str,
) -> Result<T, ApiError> {
    text.parse()
        .map_err(|e: dialtone_sync::SyncError| ApiError::invalid(e.to_string()))
}

/// Largest JSON object (settings, variables) a request may store: it is
/// held in memory on every node and parsed into every render.
const MAX_OBJECT_BYTES: usize = 64 * 1024;

/// A JSON object given in a request, stored as text.
pub(crate) fn object_text(value: Option<Value>, field: &str) -> Result<String, ApiError> {
    let text = match value {
        None | Some(Value::Null) => return Ok("{}".into()),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => return Err(ApiError::invalid(format!("{field} must be a JSON object"))),
    };
    if text.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::invalid(format!(
            "{field} is {} KiB; at most {} KiB",
            text.len() / 1024,
            MAX_OBJECT_BYTES / 1024
        )));
    }
    Ok(text)
}

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
mod bans;
pub mod database_share;
mod directory;
pub mod error;
mod extract;
mod fleet;
mod mirror_view;
mod openapi;
mod phone_swap;
mod phones;
mod preview;
pub mod quotas;
mod reason_text;
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
mod write_rate;
mod writes;

use std::sync::Arc;

use axum::routing::{any, delete, get, post, put};
use axum::Router;
use dialtone_sync::{Mirror, SecretKey, Store};
use dialtone_tftp::Provisioner;
use serde_json::value::RawValue;
use serde_json::Value;

pub use auth::Principal;
use error::ApiError;
pub(crate) use writes::{
    audit_of, commit, commit_as_read, commit_if_match, commit_if_match_keeping,
    created_not_yet_shown, digest, tagged, write, Change, Edit,
};

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
        .route("/v1/phones/{mac}/replace", post(phone_swap::replace))
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
        .route("/v1/bans", get(bans::list))
        .route("/v1/bans/{source}", delete(bans::lift))
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

/// How long a list's walk may run once started: a tenant's whole
/// directory (200,000 entries) searched takes well under a second.
const WALK_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a list's walk over the mirror off the async workers. A list walks a
/// tenant's phones or entries (and every template's scope on the
/// platform), tens of milliseconds at the quotas: on a worker, a tenant
/// sending as many lists at once as there are workers held up every
/// tenant's lookups and provisioning. A tenant's walks run on the
/// provisioner's walk lane, one at a time per tenant (past a few waiting,
/// 503), and not on the render pool: two tenants' long walks under their
/// render shares held every render slot, and other tenants' phones waited
/// up to a second for their files. A global admin's, which may walk
/// everything, runs on a blocking thread.
pub(crate) async fn off_workers<T, F>(
    state: &AdminState,
    principal: &Principal,
    job: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    walk_off_workers(state, principal, &LIST_WALK, job).await
}

/// What a refused walk answers, in words that fit the request.
pub(crate) struct WalkWords {
    /// What took over [`WALK_TIME`], and what to do.
    pub walk: &'static str,
    pub remedy: &'static str,
    pub busy: &'static str,
}

const LIST_WALK: WalkWords = WalkWords {
    walk: "the list",
    remedy: "narrow it (q, vendor, mac_prefix) or try again",
    busy: "too many lists are running; try again",
};

/// [`off_workers`], saying `words` when the lane refuses.
pub(crate) async fn walk_off_workers<T, F>(
    state: &AdminState,
    principal: &Principal,
    words: &WalkWords,
    job: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let busy = |text: &str| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            text.to_string(),
        )
    };
    match principal.tenant_filter() {
        Some(tenant) => match state.provisioner.walk(tenant, WALK_TIME, job).await {
            Ok(list) => Ok(list),
            // The lane words a job past its time as a render's; a walk
            // that panicked comes back as `Internal`, a 500 below.
            Err(dialtone_tftp::ProvisionError::Render { .. }) => Err(busy(&format!(
                "{} took over {} s; {}",
                words.walk,
                WALK_TIME.as_secs(),
                words.remedy
            ))),
            Err(dialtone_tftp::ProvisionError::Busy) => Err(busy(words.busy)),
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
    dialtone_sync::checks::object_depth(field, &text).map_err(ApiError::invalid)?;
    Ok(text)
}

//! A tenant's remote directory sources (`/v1/tenants/{slug}/directory-sources`):
//! LDAP/AD and upstream HTTP CNAM, with a test call that tries a source's
//! connection, bind and a sample search. Secrets (bind passwords, upstream
//! credentials) are write-only.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_directory::sources::{build_source, BreakerOptions};
use dialtone_sync::{
    checks, etag_of, DirectorySource, DirectorySourceInput, MirrorState, Mutation, SourceKind,
    Target, Tenant,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::directory::tenant_of;
use super::error::{optional_body, ApiBytes, ApiError, ApiJson, ApiPath, ErrorBody};
use super::mirror_view::MirrorView;
use super::quotas::Quota;
use super::{
    commit, commit_as_read, commit_if_match_keeping, json_value, object_text, parse_name, tagged,
    AdminState, Change, Edit, Principal,
};

#[derive(Serialize, ToSchema)]
pub struct SourceView {
    pub name: String,
    /// `ldap` or `http`.
    pub kind: String,
    pub priority: i32,
    pub enabled: bool,
    #[schema(value_type = Object)]
    pub settings: Box<serde_json::value::RawValue>,
    /// Whether a secret is stored; it is never returned.
    pub has_secret: bool,
    pub timeout_ms: i32,
    pub updated_at: i64,
    pub etag: String,
    /// A mirrored LDAP source's copy on the node that answered; absent for
    /// live sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceBody {
    /// Only for creation; the path names the source otherwise.
    pub name: Option<String>,
    pub kind: String,
    pub priority: Option<i32>,
    pub enabled: Option<bool>,
    #[schema(value_type = Object)]
    pub settings: Value,
    /// Write-only. Absent: keep the stored one; empty: remove it.
    pub secret: Option<String>,
    pub timeout_ms: Option<i32>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SourceTestRequest {
    /// The number to search for; a number from the tenant's directory, or a
    /// fictional one, when absent.
    pub number: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SourceTestView {
    pub source: String,
    pub number: String,
    /// `found`, `not_found` or `error`.
    pub outcome: String,
    pub name: Option<String>,
    /// A coarse class: `unreachable` (a name that does not resolve, or
    /// resolves only to addresses sources may not reach), `auth`,
    /// `timeout`, `ldap`, `upstream`, `settings`, ...
    pub error: Option<String>,
    /// First search, including connecting and binding.
    pub first_ms: f64,
    /// A second search on the same connection.
    pub repeat_ms: Option<f64>,
}

fn source_view(state: &AdminState, principal: &Principal, s: &DirectorySource) -> SourceView {
    let mirror = state
        .lookups
        .as_ref()
        .and_then(|l| l.mirror_status(s.id))
        .map(|m| MirrorView::of(m, principal.is_global()));
    SourceView {
        name: s.name.to_string(),
        kind: s.kind.to_string(),
        priority: s.priority,
        enabled: s.enabled,
        settings: json_value(&s.settings),
        has_secret: s.secret.is_some(),
        timeout_ms: s.timeout_ms,
        updated_at: s.updated_at,
        etag: etag_of(s),
        mirror,
    }
}

fn find_source(
    state: &MirrorState,
    tenant: &Tenant,
    name: &str,
) -> Result<Arc<DirectorySource>, ApiError> {
    state
        .sources_of(tenant.id)
        .into_iter()
        .find(|s| &*s.name == name)
        .ok_or_else(|| ApiError::not_found(format!("directory source {name}")))
}

#[utoipa::path(get, operation_id = "directory_list_sources", path = "/v1/tenants/{slug}/directory-sources", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo")),
    responses((status = 200, body = Vec<SourceView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_sources(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, false)?;
    let views: Vec<SourceView> = mirror
        .sources_of(tenant.id)
        .iter()
        .map(|s| source_view(&state, &principal, s))
        .collect();
    Ok(axum::Json(views).into_response())
}

/// A bind password or an API key.
const MAX_SECRET_BYTES: usize = 4096;

/// Settings are checked against their kind before anything is written, as
/// the import does.
fn source_input(
    slug: &str,
    name: String,
    body: SourceBody,
    before: Option<&DirectorySource>,
) -> Result<DirectorySourceInput, ApiError> {
    checks::source_name(&name).map_err(ApiError::invalid)?;
    let kind: SourceKind = parse_name(&body.kind)?;
    if !body.settings.is_object() {
        return Err(ApiError::invalid("settings must be a JSON object"));
    }
    // Every node holds every source and builds a client from it.
    let settings = object_text(Some(body.settings), "settings")?;
    if body
        .secret
        .as_ref()
        .is_some_and(|s| s.len() > MAX_SECRET_BYTES)
    {
        return Err(ApiError::invalid(format!(
            "secret: at most {MAX_SECRET_BYTES} bytes"
        )));
    }
    dialtone_directory::settings::check(kind, &name, &settings)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if let Some(before) = before.filter(|b| b.secret.is_some() && body.secret.is_none()) {
        use dialtone_directory::secret_destination::secret_destination;
        let from = secret_destination(before.kind, &name, &before.settings);
        if from.is_none() || from != secret_destination(kind, &name, &settings) {
            return Err(ApiError::invalid(
                "secret: the stored secret is not carried to another server; give it again \
                 (or \"\" to remove it) with a change of kind, of the url's scheme, host or port, \
                 of the CA, or of how the secret is sent",
            ));
        }
    }
    let timeout_ms = body
        .timeout_ms
        .or(before.map(|b| b.timeout_ms))
        .unwrap_or(250);
    checks::source_timeout(timeout_ms).map_err(ApiError::invalid)?;
    Ok(DirectorySourceInput {
        tenant: slug.to_string(),
        name,
        kind,
        priority: body.priority.or(before.map(|b| b.priority)).unwrap_or(10),
        enabled: body.enabled.or(before.map(|b| b.enabled)).unwrap_or(true),
        settings,
        secret: body.secret,
        timeout_ms,
    })
}

#[utoipa::path(post, operation_id = "directory_create_source", path = "/v1/tenants/{slug}/directory-sources", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo")), request_body = SourceBody,
    responses((status = 201, body = SourceView), (status = 202, description = "Committed, not yet shown by this node's mirror (it is catching up): read it again in a moment"), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_source(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<SourceBody>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&state.mirror.load(), &principal, &slug, true)?;
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    super::directory::unpadded_key("name", &name)?;
    if find_source(&state.mirror.load(), &tenant, &name).is_ok() {
        return Err(ApiError::conflict(format!(
            "directory source {name} already exists"
        )));
    }
    let sources = state.mirror.load().source_count(tenant.id);
    state
        .quotas
        .check(&tenant, Quota::DirectorySources, sources as u64 + 1)?;
    let input = source_input(&slug, name.clone(), body, None)?;
    let detail = json!({ "kind": input.kind, "secret_set": input.secret.as_deref().is_some_and(|s| !s.is_empty()) });
    commit(
        &state,
        &principal,
        Change {
            action: "create",
            entity: "directory_source",
            key: format!("{slug}/{name}"),
            tenant: Some(&slug),
            detail,
        },
        vec![Mutation::CreateDirectorySource(input)],
    )
    .await?;
    let Ok(source) = find_source(&state.mirror.load(), &tenant, &name) else {
        let what = format!("directory source {name}");
        return Ok(super::created_not_yet_shown(&what, serde_json::Value::Null));
    };
    let view = source_view(&state, &principal, &source);
    Ok((StatusCode::CREATED, tagged(&view.etag.clone(), view)).into_response())
}

#[utoipa::path(get, operation_id = "directory_show_source", path = "/v1/tenants/{slug}/directory-sources/{name}", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("name" = String, Path, min_length = 1, max_length = 64)),
    responses((status = 200, body = SourceView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show_source(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((slug, name)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, false)?;
    let view = source_view(&state, &principal, &*find_source(&mirror, &tenant, &name)?);
    Ok(tagged(&view.etag.clone(), view))
}

#[utoipa::path(put, operation_id = "directory_update_source", path = "/v1/tenants/{slug}/directory-sources/{name}", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("name" = String, Path, min_length = 1, max_length = 64), ("If-Match" = Option<String>, Header)),
    request_body = SourceBody,
    responses((status = 200, body = SourceView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_source(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((slug, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SourceBody>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, true)?;
    let before = find_source(&mirror, &tenant, &name)?;
    if body.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::invalid("the body's name differs from the path's"));
    }
    let keeps = body.secret.is_none()
        || body.priority.is_none()
        || body.enabled.is_none()
        || body.timeout_ms.is_none();
    let input = source_input(&slug, name.clone(), body, Some(&before))?;
    let detail = json!({ "before": etag_of(&*before), "kind": input.kind, "secret_changed": input.secret.is_some() });
    // Keeping the stored secret (and what else the body leaves out) was
    // judged against this row: the write applies to it alone, whoever the
    // caller is, or a secret set meanwhile (on this node or another, or by
    // a new tenant of the slug) would go to where this caller points the
    // source.
    let seen = keeps.then(|| etag_of(&*before));

    commit_if_match_keeping(
        &state,
        &principal,
        &headers,
        Target::DirectorySource {
            tenant: slug.clone(),
            name: name.clone(),
        },
        Edit {
            action: "update",
            tenant: Some(&slug),
            detail,
            seen,
        },
        Mutation::UpsertDirectorySource(input),
        keeps,
    )
    .await?;
    let view = source_view(
        &state,
        &principal,
        &*find_source(&state.mirror.load(), &tenant, &name)?,
    );
    Ok(tagged(&view.etag.clone(), view))
}

#[utoipa::path(delete, operation_id = "directory_remove_source", path = "/v1/tenants/{slug}/directory-sources/{name}", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("name" = String, Path, min_length = 1, max_length = 64), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_source(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((slug, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, true)?;
    let before = find_source(&mirror, &tenant, &name)?;

    // The source found here, not one a new tenant of the slug holds under
    // the same name (a node that lags).
    commit_as_read(
        &state,
        &principal,
        &headers,
        Target::DirectorySource {
            tenant: slug.clone(),
            name: name.clone(),
        },
        Edit {
            action: "delete",
            tenant: Some(&slug),
            detail: json!({}),
            seen: Some(etag_of(&*before)),
        },
        Mutation::DeleteDirectorySource {
            tenant: slug.clone(),
            name: name.clone(),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn millis(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e5).round() / 100.0
}

#[utoipa::path(post, operation_id = "directory_test_source", path = "/v1/tenants/{slug}/directory-sources/{name}/test", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("name" = String, Path, min_length = 1, max_length = 64)), request_body = SourceTestRequest,
    responses((status = 200, body = SourceTestView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, description = "`busy`: the tenant already runs its 2 source tests.", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test_source(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((slug, name)): ApiPath<(String, String)>,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let request: SourceTestRequest = optional_body(&body)?;
    let (tenant, source) = {
        let mirror = state.mirror.load();
        let tenant = tenant_of(&mirror, &principal, &slug, true)?;
        let source = find_source(&mirror, &tenant, &name)?;
        (tenant, source)
    };
    let _place = state.source_tests.take(tenant.id).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            format!(
                "this tenant already runs {} source tests; try again when one ends",
                state.source_tests.per_tenant()
            ),
        )
    })?;
    // A sample from the tenant's first entry, not its whole directory
    // (200,000 entries at the quota) collected on an async worker.
    let number = request.number.unwrap_or_else(|| {
        state
            .mirror
            .load()
            .first_directory_entry(tenant.id)
            .and_then(|e| e.numbers.first())
            .map_or_else(|| "+1 555 555 0100".into(), |n| n.number.to_string())
    });
    let e164 = dialtone_directory::check_lookup_len(&number)
        .and_then(|()| dialtone_directory::normalize(&number, &tenant.default_region))
        .map_err(|e| ApiError::invalid(format!("number: {e}")))?;
    // A fresh source, not the live one: the test must not trip its breaker
    // or reuse a connection that hides a bind problem.
    let built = build_source(
        &source,
        Some(&state.key),
        BreakerOptions {
            threshold: u32::MAX,
            cooldown: std::time::Duration::from_secs(1),
            deadline: std::time::Duration::MAX,
        },
        dialtone_directory::Clock::system(),
        &state.source_networks,
        &dialtone_directory::networks::tenant_networks(&tenant.settings).unwrap_or_default(),
    )
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    let started = Instant::now();
    let first = built
        .lookup(&e164, &tenant.default_region, built.timeout)
        .await;
    let first_ms = millis(started);
    let repeat_ms = if first.is_ok() {
        let started = Instant::now();
        let _ = built
            .lookup(&e164, &tenant.default_region, built.timeout)
            .await;
        Some(millis(started))
    } else {
        None
    };
    // Only what a lookup would give a PBX (the cleaned name) and a coarse
    // class of error: never a body, an address or a local error text,
    // which could tell a tenant about the node's own network. The detail
    // goes to the log.
    let (outcome, found, error) = match first {
        Ok(Some(raw)) => match dialtone_directory::name::clean_name(&raw) {
            Some(name) => ("found", Some(name), None),
            None => ("not_found", None, None),
        },
        Ok(None) => ("not_found", None, None),
        Err(e) => {
            // A tenant may run tests back to back against a server that
            // refuses at once: a line a second per tenant, so that one
            // tenant's failures cannot hide another's.
            static LOGGED: dialtone_sync::TenantLogLimit = dialtone_sync::TenantLogLimit::new();
            if let Some(skipped) = LOGGED.allow(tenant.id) {
                tracing::info!(tenant = %tenant.slug, source = ?name, error = &*e.to_string(), skipped, "directory source test failed");
            }
            ("error", None, Some(e.shown_to_tenant().to_string()))
        }
    };
    Ok(axum::Json(SourceTestView {
        source: name,
        number: e164,
        outcome: outcome.into(),
        name: found,
        error,
        first_ms,
        repeat_ms,
    })
    .into_response())
}

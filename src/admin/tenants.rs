//! `/v1/tenants`: list, create, read, update, delete.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::store::TenantInput;
use dialtone_sync::{etag_of, Id, MirrorState, Mutation, Target, Tenant};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::phones::unchanged;
use super::quotas::{keep_operator_settings, Quota};
use super::{
    commit, commit_as_read, commit_if_match_keeping, created_not_yet_shown, json_value,
    object_text, page_size, tagged, AdminState, Change, Edit, Principal,
};
pub(crate) use checks::check_slug;
use checks::{check_name, check_quotas_setting, region};

mod checks;

#[derive(Serialize, ToSchema)]
pub struct TenantView {
    pub slug: String,
    pub name: String,
    /// ISO 3166 region numbers are read in (`US`, `GB`, …).
    pub default_region: String,
    #[schema(value_type = Object)]
    pub settings: Box<serde_json::value::RawValue>,
    pub updated_at: i64,
    pub etag: String,
    /// What the tenant holds against its quotas, as this node's mirror
    /// has it. Not part of the ETag: it moves with the tenant's phones and
    /// entries, not with its own row.
    pub usage: TenantUsage,
}

/// A tenant's count of phones, directory entries and sources against
/// each quota (its own or the platform's default).
#[derive(Serialize, ToSchema)]
pub struct TenantUsage {
    pub phones: Usage,
    pub directory_entries: Usage,
    /// Numbers the tenant's own entries list together.
    pub directory_numbers: Usage,
    pub directory_sources: Usage,
}

#[derive(Serialize, ToSchema)]
pub struct Usage {
    pub used: u64,
    pub limit: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<TenantView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Lowercase letters, digits and dashes; 1 to 63 characters.
    pub slug: String,
    pub name: String,
    pub default_region: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    pub name: String,
    pub default_region: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// Page after this slug.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete even when the tenant still has phones or directory entries
    /// (they go with it).
    pub force: Option<bool>,
}

/// The directory entries `tenant` holds against its quota: its own, and
/// those its mirrored LDAP sources hold on this node.
pub(crate) fn entries_held(state: &AdminState, mirror: &MirrorState, tenant: Id) -> usize {
    let mirrored = state
        .lookups
        .as_ref()
        .map_or(0, |l| l.mirrored_entries(mirror, tenant));
    mirror.directory_len(tenant) + mirrored as usize
}

/// Counts kept by the mirror's per-tenant indexes: no walk of the
/// tenant's rows, so a list of tenants costs a few lookups each.
pub(crate) fn view(state: &AdminState, mirror: &MirrorState, t: &Tenant) -> TenantView {
    let [phones, entries, numbers, sources] = state.quotas.limits(
        t,
        [
            Quota::Phones,
            Quota::DirectoryEntries,
            Quota::DirectoryNumbers,
            Quota::DirectorySources,
        ],
    );
    let usage = |used: usize, limit: u64| Usage {
        used: used as u64,
        limit,
    };
    TenantView {
        slug: t.slug.to_string(),
        name: t.name.to_string(),
        default_region: t.default_region.to_string(),
        settings: json_value(&t.settings),
        updated_at: t.updated_at,
        etag: etag_of(t),
        usage: TenantUsage {
            phones: usage(mirror.phone_count(t.id), phones),
            directory_entries: usage(entries_held(state, mirror, t.id), entries),
            directory_numbers: Usage {
                used: mirror.directory_numbers(t.id),
                limit: numbers,
            },
            directory_sources: usage(mirror.source_count(t.id), sources),
        },
    }
}

#[utoipa::path(get, operation_id = "tenants_list", path = "/v1/tenants", tag = "tenants", params(TenantQuery),
    responses((status = 200, body = TenantList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let limit = page_size(query.limit);
    let mut tenants: Vec<_> = mirror
        .tenants()
        .filter(|t| principal.tenant_filter().is_none_or(|own| own == t.id))
        .filter(|t| query.after.as_deref().is_none_or(|after| &*t.slug > after))
        .collect();
    tenants.sort_by(|a, b| a.slug.cmp(&b.slug));
    let next = (tenants.len() > limit).then(|| tenants[limit - 1].slug.to_string());
    let items = (tenants.into_iter().take(limit))
        .map(|t| view(&state, &mirror, t))
        .collect();
    Ok(axum::Json(TenantList { items, next }).into_response())
}

#[utoipa::path(post, operation_id = "tenants_create", path = "/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = TenantView), (status = 202, description = "Committed, not yet shown by this node's mirror (it is catching up): read it again in a moment"), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<Response, ApiError> {
    principal.require_global()?;
    check_slug(&body.slug)?;
    check_name(&body.name, None)?;
    if state.mirror.load().tenant_by_slug(&body.slug).is_some() {
        return Err(ApiError::conflict(format!(
            "tenant {} already exists",
            body.slug
        )));
    }
    let input = TenantInput {
        slug: body.slug.clone(),
        name: body.name,
        default_region: region(body.default_region)?,
        settings: object_text(
            (body.settings)
                .map(|settings| check_quotas_setting(settings, None))
                .transpose()?,
            "settings",
        )?,
    };
    commit(
        &state,
        &principal,
        Change {
            action: "create",
            entity: "tenant",
            key: body.slug.clone(),
            tenant: Some(&body.slug),
            detail: json!({ "name": input.name, "region": input.default_region }),
        },
        vec![Mutation::CreateTenant(input)],
    )
    .await?;
    let mirror = state.mirror.load();
    let Some(tenant) = mirror.tenant_by_slug(&body.slug) else {
        let what = format!("tenant {}", body.slug);
        return Ok(created_not_yet_shown(&what, Value::Null));
    };
    let view = view(&state, &mirror, tenant);
    Ok((StatusCode::CREATED, tagged(&view.etag.clone(), view)).into_response())
}

#[utoipa::path(get, operation_id = "tenants_show", path = "/v1/tenants/{slug}", tag = "tenants",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo")),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let what = format!("tenant {slug}");
    let tenant = mirror
        .tenant_by_slug(&slug)
        .ok_or_else(|| ApiError::not_found(&what))?;
    principal.read(tenant.id, &what)?;
    let view = view(&state, &mirror, tenant);
    Ok(tagged(&view.etag.clone(), view))
}

#[utoipa::path(put, operation_id = "tenants_update", path = "/v1/tenants/{slug}", tag = "tenants",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("If-Match" = Option<String>, Header)),
    request_body = TenantUpdate,
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TenantUpdate>,
) -> Result<Response, ApiError> {
    let what = format!("tenant {slug}");
    let before = {
        let mirror = state.mirror.load();
        let tenant = mirror
            .tenant_by_slug(&slug)
            .ok_or_else(|| ApiError::not_found(&what))?;
        principal.write(tenant.id, &what)?;
        tenant.clone()
    };
    check_name(&body.name, Some(&before.name))?;
    // What the body leaves out is taken from this node's copy, which may be
    // older than the database's (settings changed on another node).
    let keeps_from_mirror = body.settings.is_none() || body.default_region.is_none();
    let input = TenantInput {
        slug: slug.clone(),
        name: body.name,
        default_region: region(
            body.default_region
                .or(Some(before.default_region.to_string())),
        )?,
        settings: match body.settings {
            // A tenant's own token cannot change its quotas, SIP domains
            // or provisioning networks: what it sends there is dropped
            // unchecked (a stored list past today's checks, sent back as
            // read, must not block the tenant's other edits), and the
            // reply shows what is stored.
            Some(settings) if !principal.is_global() => {
                unchanged::settings_strings(&settings, Some(&before.settings))
                    .map_err(ApiError::invalid)?;
                object_text(
                    Some(keep_operator_settings(settings, &before.settings)),
                    "settings",
                )?
            }
            Some(settings) => object_text(
                Some(check_quotas_setting(settings, Some(&before.settings))?),
                "settings",
            )?,
            None => before.settings.to_string(),
        },
    };
    if !principal.is_global() && *input.default_region != *before.default_region {
        if let Err(wait) = state
            .region_changes
            .take(before.id, std::time::Instant::now())
        {
            return Ok(region_changed_recently(wait));
        }
    }

    commit_if_match_keeping(
        &state,
        &principal,
        &headers,
        Target::Tenant { slug: slug.clone() },
        Edit {
            action: "update",
            tenant: Some(&slug),
            detail: json!({ "before": etag_of(&*before) }),
            // A tenant's token writes back the quotas and domains it read: a global
            // admin's change committed meanwhile must fail this write, not
            // be undone by it.
            seen: Some(etag_of(&*before)),
        },
        Mutation::UpsertTenant(input),
        keeps_from_mirror,
    )
    .await?;
    let mirror = state.mirror.load();
    let tenant = mirror
        .tenant_by_slug(&slug)
        .ok_or_else(|| ApiError::not_found(&what))?;
    let view = view(&state, &mirror, tenant);
    Ok(tagged(&view.etag.clone(), view))
}

/// 429 for a region changed too soon by the tenant's own token, with when
/// it may change again (`region_changes.rs` says why).
fn region_changed_recently(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "default_region changed less than {} minutes ago: each change renormalizes \
             every directory number of the tenant on every node; retry in {seconds} s",
            crate::admin::region_changes::REGION_CHANGE_SPACING.as_secs() / 60
        ),
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(seconds),
    );
    response
}

#[utoipa::path(delete, operation_id = "tenants_remove", path = "/v1/tenants/{slug}", tag = "tenants",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("If-Match" = Option<String>, Header), DeleteQuery),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let what = format!("tenant {slug}");
    let (phones, entries, seen) = {
        let mirror = state.mirror.load();
        let tenant = mirror
            .tenant_by_slug(&slug)
            .ok_or_else(|| ApiError::not_found(&what))?;
        principal.read(tenant.id, &what)?;
        principal.require_global()?;
        let phones = mirror.phone_count(tenant.id);
        (phones, mirror.directory_len(tenant.id), etag_of(&**tenant))
    };
    let force = query.force == Some(true);
    if (phones > 0 || entries > 0) && !force {
        return Err(ApiError::conflict(format!(
            "tenant {slug} still has {phones} phones and {entries} directory entries; \
             {NOT_EMPTY_HINT}"
        )));
    }
    // Counted again inside the write: another node may have given the
    // tenant a phone this node has not seen yet.
    let delete = if force {
        Mutation::DeleteTenant { slug: slug.clone() }
    } else {
        Mutation::DeleteEmptyTenant { slug: slug.clone() }
    };

    // The counts are this node's: on a node that lags, the slug may be a
    // new customer's tenant by now, which this delete must not reach.
    commit_as_read(
        &state,
        &principal,
        &headers,
        Target::Tenant { slug: slug.clone() },
        Edit {
            action: "delete",
            tenant: Some(&slug),
            detail: json!({ "phones": phones, "directory_entries": entries }),
            seen: Some(seen),
        },
        delete,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What a delete refused for the rows a tenant still holds says to do.
pub(crate) const NOT_EMPTY_HINT: &str = "delete them first or pass force=true";

#[cfg(test)]
#[path = "tenants_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "tenant_settings_tests.rs"]
mod settings_tests;

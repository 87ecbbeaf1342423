//! A tenant's directory entries (`/v1/tenants/{slug}/directory`): the
//! names the local source answers lookups from and phones show in their
//! phonebook.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::store::DirectoryEntryInput;
use dialtone_sync::{
    etag_of, DirectoryEntry, DirectoryNumber, MirrorState, Mutation, Target, Tenant,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::quotas::Quota;
use super::{
    commit, commit_as_read, created_not_yet_shown, off_workers, page_size, tagged, AdminState,
    Change, Edit, Principal,
};

#[derive(Serialize, Deserialize, ToSchema, Clone)]
pub struct NumberView {
    pub number: String,
    /// work, mobile, home, fax, other…
    pub kind: String,
}

#[derive(Serialize, ToSchema)]
pub struct EntryView {
    pub external_id: Option<String>,
    pub name: String,
    pub company: Option<String>,
    pub numbers: Vec<NumberView>,
    pub updated_at: i64,
    pub etag: String,
}

#[derive(Serialize, ToSchema)]
pub struct EntryList {
    pub items: Vec<EntryView>,
    pub next: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryBody {
    /// Only for creation; the path names the entry otherwise.
    pub external_id: Option<String>,
    pub name: String,
    pub company: Option<String>,
    pub numbers: Vec<NumberView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntryQuery {
    /// Matches name, company or a number.
    pub q: Option<String>,
    /// Page after this external id.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

pub(crate) fn tenant_of(
    state: &MirrorState,
    principal: &Principal,
    slug: &str,
    write: bool,
) -> Result<Arc<Tenant>, ApiError> {
    let what = format!("tenant {slug}");
    let tenant = state
        .tenant_by_slug(slug)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&what))?;
    if write {
        principal.write(tenant.id, &what)?;
    } else {
        principal.read(tenant.id, &what)?;
    }
    Ok(tenant)
}

fn entry_view(e: &DirectoryEntry) -> EntryView {
    EntryView {
        external_id: e.external_id.as_deref().map(str::to_string),
        name: e.name.to_string(),
        company: e.company.as_deref().map(str::to_string),
        numbers: e
            .numbers
            .iter()
            .map(|n| NumberView {
                number: n.number.to_string(),
                kind: n.kind.to_string(),
            })
            .collect(),
        updated_at: e.updated_at,
        etag: etag_of(e),
    }
}

/// The entry a write just committed, to answer with; `None` when this
/// node does not show it yet. An update knows the row's id (an upsert
/// keeps it), so it is a lookup; a create finds it by its external id on
/// the walk lane (a walk of the tenant's ids, 200,000 at the quota, which
/// on an async worker held up every tenant's lookups). A lane too busy
/// for it is not an error: the write is committed, and the caller is
/// told so and to read it again (a 503 would make its retry conflict with
/// itself).
async fn written_entry(
    state: &AdminState,
    principal: &Principal,
    tenant: &Tenant,
    external_id: &str,
    known_id: Option<dialtone_sync::Id>,
) -> Option<Arc<DirectoryEntry>> {
    match known_id {
        Some(id) => state
            .mirror
            .load()
            .directory_entry(id)
            .filter(|e| e.tenant_id == tenant.id && e.external_id.as_deref() == Some(external_id))
            .cloned(),
        None => find_entry(state, principal, tenant, external_id).await.ok(),
    }
}

/// The answer to a write whose entry this node does not show yet.
fn written_not_yet_shown(external_id: &str) -> Response {
    created_not_yet_shown(
        &format!("directory entry {external_id}"),
        serde_json::Value::Null,
    )
}

async fn find_entry(
    state: &AdminState,
    principal: &Principal,
    tenant: &Tenant,
    external_id: &str,
) -> Result<Arc<DirectoryEntry>, ApiError> {
    let (mirror, id, wanted) = (state.mirror.load(), tenant.id, external_id.to_string());
    off_workers(state, principal, move || {
        mirror.directory_entry_by_external_id(id, &wanted).cloned()
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("directory entry {external_id}")))
}

#[utoipa::path(get, operation_id = "directory_list_entries", path = "/v1/tenants/{slug}/directory", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), EntryQuery),
    responses((status = 200, body = EntryList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_entries(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
    ApiQuery(query): ApiQuery<EntryQuery>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, false)?;
    let q = query
        .q
        .as_deref()
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let digits: String = q
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let tenant_id = tenant.id;
    let list = off_workers(&state, &principal, move || {
        let mut entries: Vec<Arc<DirectoryEntry>> = mirror
            .directory_of(tenant_id)
            .into_iter()
            .filter(|e| {
                let Some(q) = &q else { return true };
                e.name.to_lowercase().contains(q)
                    || e.company
                        .as_deref()
                        .is_some_and(|c| c.to_lowercase().contains(q))
                    || (!digits.is_empty()
                        && e.numbers.iter().any(|n| {
                            n.number
                                .chars()
                                .filter(char::is_ascii_digit)
                                .collect::<String>()
                                .contains(&digits)
                        }))
            })
            .filter(|e| {
                query
                    .after
                    .as_deref()
                    .is_none_or(|after| e.external_id.as_deref().unwrap_or("") > after)
            })
            .collect();
        entries.sort_by(|a, b| a.external_id.cmp(&b.external_id));
        let limit = page_size(query.limit);
        let next = (entries.len() > limit).then(|| {
            entries[limit - 1]
                .external_id
                .as_deref()
                .unwrap_or("")
                .to_string()
        });
        let items = entries.iter().take(limit).map(|e| entry_view(e)).collect();
        EntryList { items, next }
    })
    .await?;
    Ok(axum::Json(list).into_response())
}

/// Refuses an entry that would list more numbers than it did (`before`,
/// none for a new one) past the tenant's `directory_numbers` quota. One
/// that lists as many or fewer passes, so a tenant over a lowered quota
/// can still edit its entries and bring its count down.
fn numbers_quota(
    state: &AdminState,
    mirror: &MirrorState,
    tenant: &Tenant,
    before: usize,
    after: usize,
) -> Result<(), ApiError> {
    if after <= before {
        return Ok(());
    }
    let held = mirror.directory_numbers(tenant.id);
    let wanted = held.saturating_sub(before as u64) + after as u64;
    state.quotas.check(tenant, Quota::DirectoryNumbers, wanted)
}

/// Refuses a new row's natural key with surrounding spaces: the import
/// trims keys, so ` e1 ` beside `e1` would be one row in an export, and
/// that whole export, every tenant's rows with it, would not import.
/// Rows stored so by older versions can still be read, changed and
/// removed by their key as it is.
pub(crate) fn unpadded_key(field: &str, key: &str) -> Result<(), ApiError> {
    if key.trim() != key {
        return Err(ApiError::invalid(format!(
            "{field} must not start or end with spaces"
        )));
    }
    Ok(())
}

fn entry_input(
    slug: &str,
    external_id: String,
    body: EntryBody,
) -> Result<DirectoryEntryInput, ApiError> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("name must not be empty"));
    }
    let input = DirectoryEntryInput {
        tenant: slug.to_string(),
        external_id,
        name: body.name,
        company: body.company.filter(|c| !c.is_empty()),
        numbers: body
            .numbers
            .into_iter()
            .map(|n| DirectoryNumber {
                number: n.number.into(),
                // As an import reads it, so an export imports back the same.
                kind: n.kind.trim().to_ascii_lowercase().into(),
            })
            .collect(),
    };
    dialtone_sync::checks::directory_entry(&input).map_err(|r| ApiError::invalid(r.reason))?;
    Ok(input)
}

#[utoipa::path(post, operation_id = "directory_create_entry", path = "/v1/tenants/{slug}/directory", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo")), request_body = EntryBody,
    responses((status = 201, body = EntryView), (status = 202, description = "Committed, not yet shown by this node's mirror (it is catching up): read it again in a moment"), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_entry(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<EntryBody>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&state.mirror.load(), &principal, &slug, true)?;
    let external_id = body
        .external_id
        .clone()
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("external_id is required"))?;
    unpadded_key("external_id", &external_id)?;
    dialtone_sync::checks::chosen_external_id(&external_id)
        .map_err(|r| ApiError::invalid(r.reason))?;
    match find_entry(&state, &principal, &tenant, &external_id).await {
        Ok(_) => {
            return Err(ApiError::conflict(format!(
                "directory entry {external_id} already exists"
            )))
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => {}
        Err(e) => return Err(e),
    }
    let mirror = state.mirror.load();
    let entries = super::tenants::entries_held(&state, &mirror, tenant.id);
    state
        .quotas
        .check(&tenant, Quota::DirectoryEntries, entries as u64 + 1)?;
    let input = entry_input(&slug, external_id.clone(), body)?;
    numbers_quota(&state, &mirror, &tenant, 0, input.numbers.len())?;
    let detail = json!({ "numbers": input.numbers.len() });
    commit(
        &state,
        &principal,
        Change {
            action: "create",
            entity: "directory_entry",
            key: format!("{slug}/{external_id}"),
            tenant: Some(&slug),
            detail,
        },
        vec![Mutation::CreateDirectoryEntry(input)],
    )
    .await?;
    let Some(entry) = written_entry(&state, &principal, &tenant, &external_id, None).await else {
        return Ok(written_not_yet_shown(&external_id));
    };
    let view = entry_view(&entry);
    Ok((StatusCode::CREATED, tagged(&view.etag.clone(), view)).into_response())
}

#[utoipa::path(get, operation_id = "directory_show_entry", path = "/v1/tenants/{slug}/directory/{external_id}", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("external_id" = String, Path, min_length = 1, example = "d1")),
    responses((status = 200, body = EntryView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show_entry(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((slug, external_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, false)?;
    let view = entry_view(&*find_entry(&state, &principal, &tenant, &external_id).await?);
    Ok(tagged(&view.etag.clone(), view))
}

#[utoipa::path(put, operation_id = "directory_update_entry", path = "/v1/tenants/{slug}/directory/{external_id}", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("external_id" = String, Path, min_length = 1, example = "d1"), ("If-Match" = Option<String>, Header)),
    request_body = EntryBody,
    responses((status = 200, body = EntryView), (status = 202, description = "Committed, not yet shown by this node's mirror (it is catching up): read it again in a moment"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_entry(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((slug, external_id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EntryBody>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, true)?;
    let before = find_entry(&state, &principal, &tenant, &external_id).await?;
    if body
        .external_id
        .as_deref()
        .is_some_and(|id| id != external_id)
    {
        return Err(ApiError::invalid(
            "the body's external_id differs from the path's",
        ));
    }
    let input = entry_input(&slug, external_id.clone(), body)?;
    if let Some(stored) = before.external_id.as_deref() {
        dialtone_sync::checks::entry_renamed(stored, &input.name)
            .map_err(|r| ApiError::invalid(r.reason))?;
    }
    numbers_quota(
        &state,
        &mirror,
        &tenant,
        before.numbers.len(),
        input.numbers.len(),
    )?;
    let detail = json!({ "before": etag_of(&*before), "numbers": input.numbers.len() });
    // Found on this node, which may lag: the slug may be a new tenant's by
    // now, whose entry (or lack of one) this write must not reach.
    commit_as_read(
        &state,
        &principal,
        &headers,
        Target::DirectoryEntry {
            tenant: slug.clone(),
            external_id: external_id.clone(),
        },
        Edit {
            action: "update",
            tenant: Some(&slug),
            detail,
            seen: Some(etag_of(&*before)),
        },
        Mutation::UpsertDirectoryEntry(input),
    )
    .await?;
    let written = written_entry(&state, &principal, &tenant, &external_id, Some(before.id));
    let Some(entry) = written.await else {
        return Ok(written_not_yet_shown(&external_id));
    };
    let view = entry_view(&entry);
    Ok(tagged(&view.etag.clone(), view))
}

#[utoipa::path(delete, operation_id = "directory_remove_entry", path = "/v1/tenants/{slug}/directory/{external_id}", tag = "directory",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("external_id" = String, Path, min_length = 1, example = "d1"), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_entry(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((slug, external_id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, true)?;
    let before = find_entry(&state, &principal, &tenant, &external_id).await?;

    // As for an update: the entry found here, not one a new tenant of the
    // slug holds under the same id.
    commit_as_read(
        &state,
        &principal,
        &headers,
        Target::DirectoryEntry {
            tenant: slug.clone(),
            external_id: external_id.clone(),
        },
        Edit {
            action: "delete",
            tenant: Some(&slug),
            detail: json!({}),
            seen: Some(etag_of(&*before)),
        },
        Mutation::DeleteDirectoryEntry {
            tenant: slug.clone(),
            external_id: external_id.clone(),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

//! `/v1/phones`: phones with their lines, edited as one resource.
//! Passwords (SIP and device HTTP) are write-only: responses say only
//! whether one is set; leaving one out of an update keeps it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::store::PhoneInput;
use dialtone_sync::{phone_etag, Family, Mac, MirrorState, Mutation, Phone, Target, Tenant};
use serde_json::{json, Value};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::quotas::Quota;
use super::{
    commit, commit_as_read, commit_if_match_keeping, created_not_yet_shown, off_workers, page_size,
    tagged, AdminState, Change, Edit, Principal,
};
use filter::PhoneFilter;
use input::input;
pub(crate) use types::view;
pub use types::{LineBody, PhoneBody, PhoneList, PhoneQuery, PhoneView};

mod filter;
mod input;
mod types;
pub(crate) mod unchanged;

/// The phone with `mac`, if the caller may see it. Every field that names a
/// phone resolves through this, so another tenant's MAC is answered exactly
/// like one that does not exist.
pub(crate) fn visible_phone<'a>(
    state: &'a MirrorState,
    principal: &Principal,
    mac: &Mac,
) -> Option<&'a Arc<Phone>> {
    state
        .phone_by_mac(mac)
        .filter(|p| principal.read(p.tenant_id, "phone").is_ok())
}

/// What a caller wants to do with a row.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// The phone with `mac`, if `principal` may `access` it: one place for
/// "find it, check the caller may see it". Another tenant's phone is 404,
/// like a missing one.
pub(crate) fn phone_for<'a>(
    state: &'a MirrorState,
    principal: &Principal,
    mac: &Mac,
    access: Access,
) -> Result<&'a Arc<Phone>, ApiError> {
    let what = format!("phone {mac}");
    let phone = state
        .phone_by_mac(mac)
        .ok_or_else(|| ApiError::not_found(&what))?;
    match access {
        Access::Read => principal.read(phone.tenant_id, &what)?,
        Access::Write => principal.write(phone.tenant_id, &what)?,
    }
    Ok(phone)
}

pub(crate) fn parse_mac(text: &str) -> Result<Mac, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a MAC address")))
}

#[utoipa::path(get, operation_id = "phones_list", path = "/v1/phones", tag = "phones", params(PhoneQuery),
    responses((status = 200, body = PhoneList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PhoneQuery>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let limit = page_size(query.limit);
    let tenant = match query.tenant.as_deref() {
        None => principal.tenant_filter(),
        Some(slug) => {
            let what = format!("tenant {slug}");
            let tenant = mirror
                .tenant_by_slug(slug)
                .ok_or_else(|| ApiError::not_found(&what))?;
            principal.read(tenant.id, &what)?;
            Some(tenant.id)
        }
    };
    let family = match query.vendor.as_deref() {
        Some(v) => Some(
            v.parse::<Family>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let prefix: String = query
        .mac_prefix
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect::<String>()
        .to_ascii_lowercase();
    if !prefix.chars().all(|c| c.is_ascii_hexdigit()) || prefix.len() > 12 {
        return Err(ApiError::bad_request("mac_prefix: up to 12 hex digits"));
    }
    let after = match query.after.as_deref() {
        Some(text) => Some(parse_mac(text)?),
        None => None,
    };
    let filter = PhoneFilter::new(&query, tenant, family, prefix);
    let list = off_workers(&state, &principal, move || {
        let mut phones: Vec<&Arc<Phone>> = (mirror.phones_within(filter.tenant))
            .filter(|p| after.is_none_or(|a| p.mac > a))
            .filter(|p| filter.matches(&mirror, p))
            .collect();
        phones.sort_by_key(|p| p.mac);
        let next = (phones.len() > limit).then(|| phones[limit - 1].mac.to_string());
        let items = phones
            .into_iter()
            .take(limit)
            .map(|p| view(&mirror, p))
            .collect();
        PhoneList { items, next }
    })
    .await?;
    Ok(axum::Json(list).into_response())
}

#[utoipa::path(get, operation_id = "phones_show", path = "/v1/phones/{mac}", tag = "phones",
    params(("mac" = String, Path, pattern = r"^[0-9A-Fa-f:.-]{12,17}$", example = "0015654aa937")),
    responses((status = 200, body = PhoneView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(mac): ApiPath<String>,
) -> Result<Response, ApiError> {
    let mac = parse_mac(&mac)?;
    let mirror = state.mirror.load();
    let phone = phone_for(&mirror, &principal, &mac, Access::Read)?;
    let view = view(&mirror, phone);
    Ok(tagged(&view.etag.clone(), view))
}

/// The tenant a body names, checked against what the caller may write.
fn target_tenant<'a>(
    state: &'a MirrorState,
    principal: &Principal,
    slug: &str,
) -> Result<&'a Arc<Tenant>, ApiError> {
    let what = format!("tenant {slug}");
    let tenant = state
        .tenant_by_slug(slug)
        .filter(|t| principal.read(t.id, "tenant").is_ok())
        .ok_or_else(|| ApiError::invalid(format!("{what} does not exist")))?;
    principal.write(tenant.id, &what)?;
    Ok(tenant)
}

/// The phones and lines quotas of `tenant`, for a phone with `lines` that
/// is new to it. The mirror counts each tenant's phones, so this is a
/// lookup, not a walk.
fn check_quotas(
    state: &AdminState,
    mirror: &MirrorState,
    tenant: &Tenant,
    lines: usize,
    new_to_tenant: bool,
) -> Result<(), ApiError> {
    state
        .quotas
        .check(tenant, Quota::LinesPerPhone, lines as u64)?;
    if new_to_tenant {
        let phones = mirror.phone_count(tenant.id);
        state
            .quotas
            .check(tenant, Quota::Phones, phones as u64 + 1)?;
    }
    Ok(())
}

fn summary(input: &PhoneInput) -> Value {
    json!({
        "family": input.family, "model": input.model, "tenant": input.tenant,
        "lines": input.lines.iter().map(|l| &l.extension).collect::<Vec<_>>(),
    })
}

#[utoipa::path(post, operation_id = "phones_create", path = "/v1/phones", tag = "phones", request_body = PhoneBody,
    responses((status = 201, body = PhoneView), (status = 202, description = "Committed, not yet shown by this node's mirror (it is catching up): read it again in a moment"), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(body): ApiJson<PhoneBody>,
) -> Result<Response, ApiError> {
    let given = (body.mac.as_deref()).ok_or_else(|| ApiError::invalid("mac is required"))?;
    // Only a new phone's MAC is held to the strict shapes: the paths that
    // name a stored phone keep reading what was accepted before.
    let mac = Mac::parse_new(given).map_err(|e| ApiError::invalid(format!("mac: {e}")))?;
    create_phone(&state, &principal, mac, body).await
}

/// Creates a phone: one path for `POST /v1/phones` and a claim of an
/// unclaimed device, so both check the same tenant, quotas and MAC.
pub(crate) async fn create_phone(
    state: &AdminState,
    principal: &Principal,
    mac: Mac,
    body: PhoneBody,
) -> Result<Response, ApiError> {
    let input = {
        let mirror = state.mirror.load();
        let tenant = target_tenant(&mirror, principal, &body.tenant)?;
        if mirror.phone_by_mac(&mac).is_some() {
            // The same words whoever holds it: nothing says which tenant.
            return Err(ApiError::conflict(format!("phone {mac} already exists")));
        }
        check_quotas(state, &mirror, tenant, body.lines.len(), true)?;
        input(state, tenant, mac, body, None, None)?
    };
    let tenant = input.tenant.clone();
    commit(
        state,
        principal,
        Change {
            action: "create",
            entity: "phone",
            key: mac.to_string(),
            tenant: Some(&tenant),
            detail: summary(&input),
        },
        // The mirror check above is only the fast answer: this one, in the
        // writing transaction, is what stops a create from taking over a
        // MAC another tenant (or node) has just created.
        vec![Mutation::CreatePhone(input)],
    )
    .await?;
    let mirror = state.mirror.load();
    let Some(phone) = mirror.phone_by_mac(&mac) else {
        return Ok(created_not_yet_shown(&format!("phone {mac}"), Value::Null));
    };
    let view = view(&mirror, phone);
    Ok((StatusCode::CREATED, tagged(&view.etag.clone(), view)).into_response())
}

#[utoipa::path(put, operation_id = "phones_update", path = "/v1/phones/{mac}", tag = "phones", request_body = PhoneBody,
    params(("mac" = String, Path, pattern = r"^[0-9A-Fa-f:.-]{12,17}$", example = "0015654aa937"), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = PhoneView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(mac): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PhoneBody>,
) -> Result<Response, ApiError> {
    let mac = parse_mac(&mac)?;
    if body
        .mac
        .as_deref()
        .is_some_and(|m| m.parse::<Mac>().ok() != Some(mac))
    {
        return Err(ApiError::invalid("the body's mac differs from the path's"));
    }
    let what = format!("phone {mac}");
    let mirror = state.mirror.load();
    let phone = phone_for(&mirror, &principal, &mac, Access::Write)?;
    let tenant = target_tenant(&mirror, &principal, &body.tenant)?;
    check_quotas(
        &state,
        &mirror,
        tenant,
        body.lines.len(),
        tenant.id != phone.tenant_id,
    )?;
    let lines = mirror.lines_of(phone.id);
    let before = phone_etag(phone, &lines);
    // A phone moving to another tenant takes none of its stored secrets
    // along: its new owner would read them in the files it renders.
    let kept_from = (tenant.id == phone.tenant_id).then_some((&**phone, &lines[..]));
    // A secret left out is taken from this node's copy, which may be older
    // than the database's (a password rotated on another node a moment ago).
    let keeps_secret = kept_from.is_some()
        && (body.http_password.is_none() || body.lines.iter().any(|l| l.password.is_none()));
    let stored = Some((&**phone, &lines[..]));
    let input = input(&state, tenant, mac, body, kept_from, stored)?;
    let tenant = input.tenant.clone();
    let mut detail = summary(&input);
    detail["before"] = json!(before);
    commit_if_match_keeping(
        &state,
        &principal,
        &headers,
        Target::Phone { mac },
        Edit {
            action: "update",
            tenant: Some(&tenant),
            detail,
            seen: Some(before),
        },
        Mutation::UpsertPhone(input),
        keeps_secret,
    )
    .await?;
    let mirror = state.mirror.load();
    let phone = mirror
        .phone_by_mac(&mac)
        .ok_or_else(|| ApiError::not_found(&what))?;
    let view = view(&mirror, phone);
    Ok(tagged(&view.etag.clone(), view))
}

#[utoipa::path(delete, operation_id = "phones_remove", path = "/v1/phones/{mac}", tag = "phones",
    params(("mac" = String, Path, pattern = r"^[0-9A-Fa-f:.-]{12,17}$", example = "0015654aa937"), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(mac): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mac = parse_mac(&mac)?;
    let (tenant, seen) = {
        let mirror = state.mirror.load();
        let phone = phone_for(&mirror, &principal, &mac, Access::Write)?;
        let seen = phone_etag(phone, &mirror.lines_of(phone.id));
        (
            mirror.tenant(phone.tenant_id).map(|t| t.slug.to_string()),
            seen,
        )
    };

    // The tenant named in the audit row is this node's idea of the owner:
    // a MAC resold meanwhile (a node that lags) is another tenant's phone,
    // which this delete must not reach.
    commit_as_read(
        &state,
        &principal,
        &headers,
        Target::Phone { mac },
        Edit {
            action: "delete",
            tenant: tenant.as_deref(),
            detail: json!({}),
            seen: Some(seen),
        },
        Mutation::DeletePhone { mac },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

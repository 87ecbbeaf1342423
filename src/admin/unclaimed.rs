//! Unclaimed devices: phones that asked for their own files from a tenant's
//! networks with a MAC nobody has, and claiming one as a phone. Read from
//! the store, not the mirror: the list is not mirrored, and rarely read.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use dialtone_sync::store::{UnclaimedDevice, UNASSIGNED};
use dialtone_sync::unclaimed::PER_TENANT;
use dialtone_sync::{Id, Mac, MirrorState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::directory::tenant_of;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::phones::{create_phone, parse_mac, LineBody, PhoneBody};
use super::{AdminState, Principal};

#[derive(Serialize, ToSchema)]
pub struct UnclaimedView {
    /// Twelve lowercase hex digits.
    pub mac: String,
    /// What the file name or User-Agent told; absent when neither did.
    pub family: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// The address of its latest fetch.
    pub source: String,
    /// Milliseconds since the epoch.
    pub first_seen: i64,
    pub last_seen: i64,
    /// Fetches seen.
    pub count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UnclaimedList {
    /// Most recently seen first; at most 1,000.
    pub devices: Vec<UnclaimedView>,
}

#[derive(Serialize, ToSchema)]
pub struct UnclaimedCount {
    pub slug: String,
    pub name: String,
    /// Devices its list holds (at most 1,000).
    pub count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UnclaimedCounts {
    /// The tenants whose lists hold a device, by name. A tenant token sees
    /// its own tenant alone.
    pub tenants: Vec<UnclaimedCount>,
    /// The unassigned list's length; for global admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unassigned: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Needed only when the phone did not tell its family.
    pub family: Option<String>,
    /// In place of the model the phone told.
    pub model: Option<String>,
    /// The phone's label.
    pub name: Option<String>,
    #[serde(default)]
    pub lines: Vec<LineBody>,
}

/// The list of `tenant`, without MACs that have become phones since (a
/// phone created by hand, or claimed on another node moments ago).
async fn devices(
    state: &AdminState,
    mirror: &MirrorState,
    tenant: Id,
) -> Result<Vec<UnclaimedDevice>, ApiError> {
    let mut devices = state.store.unclaimed_devices(tenant, PER_TENANT).await?;
    devices.retain(|d| {
        d.mac
            .parse::<Mac>()
            .is_ok_and(|mac| mirror.phone_by_mac(&mac).is_none())
    });
    Ok(devices)
}

fn view(d: UnclaimedDevice) -> UnclaimedView {
    UnclaimedView {
        mac: d.mac,
        family: d.family,
        model: d.model,
        firmware: d.firmware,
        source: d.source,
        first_seen: d.first_seen,
        last_seen: d.last_seen,
        count: d.count,
    }
}

fn list(devices: Vec<UnclaimedDevice>) -> Response {
    let devices = devices.into_iter().map(view).collect();
    axum::Json(UnclaimedList { devices }).into_response()
}

#[utoipa::path(get, operation_id = "unclaimed_list", path = "/v1/tenants/{slug}/unclaimed", tag = "unclaimed",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo")),
    responses((status = 200, body = UnclaimedList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn tenant_list(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, false)?;
    Ok(list(devices(&state, &mirror, tenant.id).await?))
}

#[utoipa::path(get, operation_id = "unclaimed_unassigned", path = "/v1/unclaimed", tag = "unclaimed",
    responses((status = 200, body = UnclaimedList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn unassigned_list(
    State(state): State<AdminState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require_global()?;
    let mirror = state.mirror.load();
    Ok(list(devices(&state, &mirror, UNASSIGNED).await?))
}

/// Which tenants have unclaimed phones, in one request: the page's "check
/// every tenant" for a provider with thousands of them. One grouped count
/// in the database; a MAC that is a phone by now is not counted.
#[utoipa::path(get, operation_id = "unclaimed_counts", path = "/v1/unclaimed/counts", tag = "unclaimed",
    responses((status = 200, body = UnclaimedCounts)),
    security(("bearer" = [])))]
pub async fn counts(
    State(state): State<AdminState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    let only = principal.tenant_filter();
    let counted = state.store.unclaimed_counts(only).await?;
    let mirror = state.mirror.load();
    let mut unassigned = principal.is_global().then_some(0);
    let mut tenants = Vec::new();
    for (tenant, count) in counted {
        if tenant == UNASSIGNED {
            if let Some(total) = unassigned.as_mut() {
                *total = count;
            }
            continue;
        }
        // The store was asked for this principal's tenant alone; the check
        // holds even so, and a tenant deleted since is left out.
        if only.is_some_and(|own| own != tenant) {
            continue;
        }
        if let Some(t) = mirror.tenant(tenant) {
            tenants.push(UnclaimedCount {
                slug: t.slug.to_string(),
                name: t.name.to_string(),
                count,
            });
        }
    }
    tenants.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.slug.cmp(&b.slug)));
    Ok(axum::Json(UnclaimedCounts {
        tenants,
        unassigned,
    })
    .into_response())
}

#[utoipa::path(post, operation_id = "unclaimed_claim", path = "/v1/tenants/{slug}/unclaimed/{mac}/claim",
    tag = "unclaimed", request_body = ClaimBody,
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "demo"), ("mac" = String, Path, pattern = r"^[0-9A-Fa-f:.-]{12,17}$", example = "0015654aa937")),
    responses((status = 201, body = super::phones::PhoneView), (status = 202, description = "Committed, not yet shown by this node's mirror (it is catching up): read it again in a moment"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn claim(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((slug, mac)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<Response, ApiError> {
    let mac = parse_mac(&mac)?;
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, true)?;
    // Only global admins may hand a device from the unassigned list to a
    // tenant: a tenant never sees who fetched outside its networks.
    let mut lists = vec![tenant.id];
    if principal.is_global() {
        lists.push(UNASSIGNED);
    }
    // The caller's lists as stored, phones included: whether a MAC is
    // another tenant's phone is none of a tenant's business, so one on
    // none of its lists gets the 404 of a MAC nobody has.
    let mut found = None;
    let text = mac.to_string();
    for list in &lists {
        if let Some(d) = state
            .store
            .unclaimed_devices(*list, PER_TENANT)
            .await?
            .into_iter()
            .find(|d| d.mac == text)
        {
            found = Some(d);
            break;
        }
    }
    // A phone the caller may see anyway (its own, claimed a moment ago
    // and so off the list), or one made of a device on the caller's list
    // since it was seen (by hand, or claimed on another node): the caller
    // knows the MAC, and learns only that it is taken.
    let seen =
        |tenant_id| found.is_some() || principal.tenant_filter().is_none_or(|own| own == tenant_id);
    if mirror.phone_by_mac(&mac).is_some_and(|p| seen(p.tenant_id)) {
        // The same words whoever holds it: nothing says which tenant.
        return Err(ApiError::conflict(format!("phone {mac} already exists")));
    }
    let device = found.ok_or_else(|| ApiError::not_found(format!("unclaimed device {mac}")))?;
    let family = body.family.or(device.family).ok_or_else(|| {
        ApiError::invalid("family is required: the phone did not tell its family")
    })?;
    let phone = PhoneBody {
        mac: Some(mac.to_string()),
        tenant: tenant.slug.to_string(),
        family,
        model: body.model.or(device.model),
        label: body.name,
        variables: None,
        http_user: None,
        http_password: None,
        lines: body.lines,
    };
    let created = create_phone(&state, &principal, mac, phone).await?;
    drop(mirror);
    for list in lists {
        // The phone exists; a row left behind is hidden from every list
        // and falls off the bound in time.
        if let Err(e) = state.store.remove_unclaimed(list, &mac).await {
            tracing::warn!(error = %e, %mac, "claimed device left on the unclaimed list");
        }
    }
    metrics::counter!("dialtone_unclaimed_claimed_total").increment(1);
    Ok(created)
}

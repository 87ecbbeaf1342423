//! `POST /v1/phones/{mac}/replace`: a hardware swap. A broken desk phone is
//! replaced by another of the same kind, and the new one must come up as
//! the old one did: same lines, same SIP passwords (write-only, so nobody
//! could retype them), same phone-scope templates. Only the MAC changes.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use dialtone_sync::{phone_etag, Mac, Mutation, Target};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::phones::{parse_mac, phone_for, view, Access, PhoneView};
use super::{commit_as_read, created_not_yet_shown, tagged, AdminState, Edit, Principal};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceBody {
    /// The replacement's MAC, in any of the forms the path takes. It must
    /// be no tenant's phone yet; an unclaimed device of that MAC is fine.
    pub new_mac: String,
}

#[utoipa::path(post, operation_id = "phones_replace", path = "/v1/phones/{mac}/replace", tag = "phones",
    request_body = ReplaceBody,
    params(("mac" = String, Path, pattern = r"^[0-9A-Fa-f:.-]{12,17}$", example = "0015654aa937"), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The phone under its new MAC", body = PhoneView),
        (status = 202, description = "Written; this node has not caught up with it yet"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(mac): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ReplaceBody>,
) -> Result<Response, ApiError> {
    let old = parse_mac(&mac)?;
    // Held to a new phone's shapes, as a create is: a replacement at the
    // broadcast or an all-zero MAC would take a phone no import reads back.
    let new =
        Mac::parse_new(&body.new_mac).map_err(|e| ApiError::invalid(format!("new_mac: {e}")))?;
    if new == old {
        return Err(ApiError::invalid(
            "new_mac is the phone's own MAC; name the replacement's",
        ));
    }
    let (tenant, seen) = {
        let mirror = state.mirror.load();
        let phone = phone_for(&mirror, &principal, &old, Access::Write)?;
        if mirror.phone_by_mac(&new).is_some() {
            // The same words whoever holds it: nothing says which tenant.
            return Err(ApiError::conflict(format!("phone {new} already exists")));
        }
        let tenant = mirror.tenant(phone.tenant_id).map(|t| t.slug.to_string());
        (tenant, phone_etag(phone, &mirror.lines_of(phone.id)))
    };
    // Audited under this node's idea of the owner: a MAC resold meanwhile
    // is another tenant's phone, which this write must not reach.
    commit_as_read(
        &state,
        &principal,
        &headers,
        Target::Phone { mac: old },
        Edit {
            action: "replace",
            tenant: tenant.as_deref(),
            detail: json!({ "new_mac": new.to_string() }),
            seen: Some(seen),
        },
        // The mirror checks above are only the fast answers: the store
        // checks both MACs again in the writing transaction.
        Mutation::ReplacePhoneMac { from: old, to: new },
    )
    .await?;
    let mirror = state.mirror.load();
    let Some(phone) = mirror.phone_by_mac(&new) else {
        return Ok(created_not_yet_shown(&format!("phone {new}"), Value::Null));
    };
    let view = view(&mirror, phone);
    Ok(tagged(&view.etag.clone(), view).into_response())
}

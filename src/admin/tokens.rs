//! `/v1/tokens`: global admins list, create and revoke API tokens. A token
//! is shown once, at creation; only its hash is stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dialtone_sync::{
    generate_token, now_millis, token_hash, ApiToken, ApiTokenInput, MirrorState, Mutation,
    TokenScope,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::{commit, created_not_yet_shown, parse_name, AdminState, Change, Principal};
use crate::directory_cmd::EXPIRES_DAYS;

#[derive(Serialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    /// `global-admin`, `tenant-admin`, `tenant-read` or `lookup`.
    pub scope: String,
    pub tenant: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// `active`, `expired` or `revoked`.
    pub state: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token itself: shown only in this response.
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub scope: String,
    /// Required for every scope but global-admin.
    pub tenant: Option<String>,
    /// Days until it expires; never when absent.
    // Bounded by `EXPIRES_DAYS`, as the CLI is; `openapi.rs` puts those
    // bounds in the schema (utoipa's own attribute takes literals only).
    pub expires_days: Option<u32>,
}

fn view(state: &MirrorState, t: &ApiToken) -> TokenView {
    TokenView {
        id: t.id,
        name: t.name.to_string(),
        scope: t.scope.to_string(),
        tenant: t
            .tenant_id
            .and_then(|id| state.tenant(id))
            .map(|t| t.slug.to_string()),
        created_at: t.created_at,
        expires_at: t.expires_at,
        state: if t.revoked {
            "revoked"
        } else if t.expires_at.is_some_and(|at| at <= now_millis()) {
            "expired"
        } else {
            "active"
        }
        .into(),
    }
}

/// The calling token, as the admin page needs it to offer only what works:
/// a read-only token is not shown buttons that can only be refused.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's name (never its value).
    pub name: String,
    /// `global-admin`, `tenant-admin` or `tenant-read`.
    pub scope: String,
    /// Its tenant's slug; none for a global admin.
    pub tenant: Option<String>,
    /// Whether it may write (create, edit, delete, claim, resync).
    pub writes: bool,
    /// Whether this node sends resyncs (`[resync]` configured).
    pub resync: bool,
}

#[utoipa::path(get, operation_id = "tokens_whoami", path = "/v1/whoami", tag = "tokens",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn whoami(
    State(state): State<AdminState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    Ok(axum::Json(WhoAmI {
        name: principal.token_name.clone(),
        scope: principal.scope.to_string(),
        tenant: principal.tenant.as_ref().map(|t| t.slug.to_string()),
        writes: matches!(
            principal.scope,
            TokenScope::GlobalAdmin | TokenScope::TenantAdmin
        ),
        resync: state.resync.is_some(),
    })
    .into_response())
}

#[utoipa::path(get, operation_id = "tokens_list", path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenView>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AdminState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require_global()?;
    let mirror = state.mirror.load();
    let mut tokens: Vec<TokenView> = mirror.api_tokens().map(|t| view(&mirror, t)).collect();
    tokens.sort_by_key(|t| t.id);
    Ok(axum::Json(tokens).into_response())
}

#[utoipa::path(post, operation_id = "tokens_create", path = "/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 202, description = "Committed, not yet shown by this node's mirror (it is catching up): read it again in a moment"), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    principal.require_global()?;
    let scope: TokenScope = parse_name(&body.scope)?;
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::invalid("name: 1 to 100 characters"));
    }
    match (scope, &body.tenant) {
        (TokenScope::GlobalAdmin, Some(_)) => {
            return Err(ApiError::invalid("a global-admin token has no tenant"))
        }
        (TokenScope::GlobalAdmin, None) => {}
        (_, None) => return Err(ApiError::invalid(format!("a {scope} token needs tenant"))),
        (_, Some(slug)) if state.mirror.load().tenant_by_slug(slug).is_none() => {
            return Err(ApiError::invalid(format!("tenant {slug} does not exist")))
        }
        _ => {}
    }
    if let Some(days) = body.expires_days {
        if !EXPIRES_DAYS.contains(&days) {
            return Err(ApiError::invalid(format!(
                "expires_days: {} to {}",
                EXPIRES_DAYS.start(),
                EXPIRES_DAYS.end()
            )));
        }
    }
    let token = generate_token();
    let hash = token_hash(&token);
    let input = ApiTokenInput {
        name: body.name.clone(),
        token_hash: hash.clone(),
        scope,
        tenant: body.tenant.clone(),
        expires_at: body
            .expires_days
            .map(|d| now_millis() + i64::from(d) * 86_400_000),
    };
    commit(
        &state,
        &principal,
        Change {
            action: "create",
            entity: "api_token",
            key: body.name.clone(),
            tenant: body.tenant.as_deref(),
            detail: json!({ "scope": scope, "expires_days": body.expires_days }),
        },
        vec![Mutation::CreateApiToken(input)],
    )
    .await?;
    let mirror = state.mirror.load();
    let Some(row) = mirror.token_by_hash(&hash) else {
        // Its value is shown only now, or never.
        let what = format!("token {}", body.name);
        return Ok(created_not_yet_shown(&what, json!({ "token": token })));
    };
    let created = CreatedToken {
        token,
        view: view(&mirror, row),
    };
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

#[utoipa::path(delete, operation_id = "tokens_revoke", path = "/v1/tokens/{id}", tag = "tokens", params(("id" = i64, Path, minimum = 1, example = 1)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    principal.require_global()?;
    // The mirror may lag a revoke or delete made since: the store checks
    // again in the write, and refuses it (404, no audit row) likewise.
    let tenant = {
        let mirror = state.mirror.load();
        let token = mirror
            .api_token(id)
            .ok_or_else(|| ApiError::not_found(format!("token {id}")))?;
        if token.revoked {
            return Err(ApiError::not_found(format!("active token {id}")));
        }
        token
            .tenant_id
            .and_then(|t| mirror.tenant(t))
            .map(|t| t.slug.to_string())
    };
    commit(
        &state,
        &principal,
        Change {
            action: "revoke",
            entity: "api_token",
            key: id.to_string(),
            tenant: tenant.as_deref(),
            detail: json!({}),
        },
        vec![Mutation::RevokeApiToken { id }],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

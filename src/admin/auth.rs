//! Who is calling: an API token (`Authorization: Bearer …`), looked up by
//! its hash in the mirror, and what its scope lets it do.
//!
//! Scopes: `global-admin` does everything; `tenant-admin` reads and writes
//! its own tenant's data; `tenant-read` only reads it; `lookup` tokens are
//! for caller-name lookups and get nothing here. Another tenant's rows are
//! answered 404, exactly as rows that do not exist, so a tenant cannot
//! probe for its neighbours.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use dialtone_sync::{now_millis, token_hash, Id, Tenant, TokenScope};

use super::error::ApiError;
use super::AdminState;

/// A request's caller as a layer before the handler found it, carried in
/// the request's extensions (which no client can set).
#[derive(Clone, Debug)]
pub(super) struct Authenticated(pub Principal);

#[derive(Clone, Debug)]
pub struct Principal {
    pub token_id: Id,
    pub token_name: String,
    pub scope: TokenScope,
    /// The token's tenant (every scope but global-admin has one).
    pub tenant: Option<Arc<Tenant>>,
    /// The token row's tag as authenticated; every write checks it.
    pub token_etag: String,
}

impl FromRequestParts<AdminState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, ApiError> {
        // The database share's layer identified the caller already: one
        // decision per request, and one hash of the token.
        if let Some(Authenticated(principal)) = parts.extensions.get::<Authenticated>() {
            return Ok(principal.clone());
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(dialtone_sync::bearer_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("an API token is required (Authorization: Bearer …)")
            })?;
        let mirror = state.mirror.load();
        let invalid = || ApiError::unauthorized("invalid, expired or revoked token");
        let row = mirror
            .token_by_hash(&token_hash(token))
            .ok_or_else(invalid)?;
        if row.revoked || row.expires_at.is_some_and(|at| at <= now_millis()) {
            return Err(invalid());
        }
        if row.scope == TokenScope::Lookup {
            return Err(ApiError::forbidden(
                "a lookup token can only be used for caller-name lookups",
            ));
        }
        let tenant = match row.tenant_id {
            Some(id) => Some(mirror.tenant(id).cloned().ok_or_else(invalid)?),
            None if row.scope == TokenScope::GlobalAdmin => None,
            None => return Err(invalid()),
        };
        Ok(Principal {
            token_id: row.id,
            token_name: row.name.to_string(),
            scope: row.scope,
            tenant,
            token_etag: dialtone_sync::etag_of(&**row),
        })
    }
}

impl Principal {
    /// How audit rows name the caller; never the token itself.
    pub fn actor(&self) -> String {
        format!("token:{} ({})", self.token_id, self.token_name)
    }

    pub fn is_global(&self) -> bool {
        self.scope == TokenScope::GlobalAdmin
    }

    /// The only tenant this caller sees, or `None` for all.
    pub fn tenant_filter(&self) -> Option<Id> {
        match self.scope {
            TokenScope::GlobalAdmin => None,
            _ => Some(self.tenant.as_ref().map_or(-1, |t| t.id)),
        }
    }

    pub fn require_global(&self) -> Result<(), ApiError> {
        if self.is_global() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs a global-admin token"))
        }
    }

    /// May read rows of `tenant`? Rows of other tenants are "not found".
    pub fn read(&self, tenant: Id, what: impl std::fmt::Display) -> Result<(), ApiError> {
        match self.tenant_filter() {
            Some(own) if own != tenant => Err(ApiError::not_found(what)),
            _ => Ok(()),
        }
    }

    /// May change rows of `tenant`?
    pub fn write(&self, tenant: Id, what: impl std::fmt::Display) -> Result<(), ApiError> {
        self.read(tenant, what)?;
        match self.scope {
            TokenScope::GlobalAdmin | TokenScope::TenantAdmin => Ok(()),
            _ => Err(ApiError::forbidden("this token is read-only")),
        }
    }
}

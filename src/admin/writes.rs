//! Writes through the admin API: one transaction per request with its
//! audit row, an `If-Match` (or the row this node checked the caller's
//! rights against) turned into the store's `Expect`, and the catch-up
//! that lets a client read its own write.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::{watcher, Audit, Mutation, Target, WriteReport};
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;
use super::{AdminState, Principal};

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
    let (checked, token) = behind_token_check(principal, mutations);
    state
        .store
        .apply(&checked, &audit)
        .await
        .map_err(|e| token_refusal(&token, e))
}

/// `mutations` behind a check of the caller's token as this node
/// authenticated it: a node whose mirror lags a revocation (or the
/// token's tenant's deletion, whose slug a new tenant may already hold)
/// writes nothing with it, nor runs a dry run with it.
pub(crate) fn behind_token_check(
    principal: &Principal,
    mutations: Vec<Mutation>,
) -> (Vec<Mutation>, Target) {
    let token = Target::Token {
        id: principal.token_id,
    };
    let mut checked = Vec::with_capacity(mutations.len() + 1);
    checked.push(Mutation::Expect {
        target: token.clone(),
        etag: principal.token_etag.clone(),
    });
    checked.extend(mutations);
    (checked, token)
}

/// A write's error, the token check's failure answered as the token's.
pub(crate) fn token_refusal(token: &Target, e: dialtone_sync::SyncError) -> ApiError {
    match &e {
        dialtone_sync::SyncError::NotFound(what) | dialtone_sync::SyncError::Conflict(what)
            if *what == token.to_string() =>
        {
            ApiError::unauthorized("invalid, expired or revoked token")
        }
        _ => ApiError::from(e),
    }
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

/// [`commit_if_match`] of a write decided on this node's copy of the row
/// (`edit.seen`), not on the request alone: whether a tenant is empty
/// enough to go without `force`, which tenant a delete is audited under.
/// A lagging mirror's row may since have been replaced by another under
/// the same name (a new tenant holding the slug, a MAC resold to another
/// tenant), and the write must not reach that one, whoever the caller is.
pub(crate) async fn commit_as_read(
    state: &AdminState,
    principal: &Principal,
    headers: &HeaderMap,
    target: Target,
    edit: Edit<'_>,
    mutation: Mutation,
) -> Result<WriteReport, ApiError> {
    commit_if_match_keeping(state, principal, headers, target, edit, mutation, true).await
}

/// [`commit_if_match`] of a write that may carry over something read
/// from this node's mirror (a secret or settings the body left out): when
/// `keeps_from_mirror`, it applies only to the row as read, whoever the
/// caller is (as a write decided on that row does: [`commit_as_read`]).
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
    // global admin's write that carries something over, or was decided on
    // this node's row, is held to it too.
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
    /// The row's tag as this node read it, where the caller's rights or
    /// anything else the write goes by were checked against it (see
    /// `commit_if_match_keeping`, `commit_as_read`); `None` where the
    /// write goes by the request alone.
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
    if given && tags.is_empty() {
        // A client that always sends the header, empty when it holds no
        // tag, would otherwise overwrite whatever is there unawares.
        return Err(ApiError::bad_request(
            "If-Match: empty; send the ETag this API returned, or * for any",
        ));
    }
    if !given || tags.contains(&"*") {
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

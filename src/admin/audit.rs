//! Reading what happened (`/v1/audit`, `/v1/phones/{mac}/history`) and bulk
//! changes (`/v1/import`, the same parser and checks as `dialtone import`,
//! templates checked as their create checks them).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::import::plan_bytes;
use dialtone_sync::store::Ending;
use dialtone_sync::{AuditQuery, AuditRecord, Mac, WriteReport};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::phones::{parse_mac, phone_for, Access};
use super::{commit, AdminState, Change, Principal};

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: i64,
    /// The token that made the change (`token:7 (ops-laptop)`), or `cli:USER`.
    pub actor: String,
    pub action: String,
    pub entity: String,
    pub entity_key: String,
    pub tenant: Option<String>,
    /// Summaries and hashes of before and after; never secrets.
    #[schema(value_type = Object)]
    pub summary: Value,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditView>,
    /// Pass as `before` for the next (older) page.
    pub next: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Tenant slug (global admins; a tenant token always sees its own).
    /// Reads the tenant that holds the slug now; a slug no tenant holds
    /// reads the rows written under it, e.g. a deleted tenant's.
    pub tenant: Option<String>,
    pub entity: Option<String>,
    pub actor: Option<String>,
    /// Only rows about this row, by the `entity_key` they carry: a phone's
    /// MAC (in any spelling), a tenant's slug; for other rows, the key a
    /// row of theirs shows. A swapped phone's rows stay under its old MAC;
    /// the swap's row names the new one.
    pub key: Option<String>,
    /// Rows older than this id.
    pub before: Option<i64>,
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct BootView {
    pub at: i64,
    pub file: String,
    pub protocol: String,
    pub outcome: String,
    pub bytes: i64,
    pub remote_ip: String,
    pub user_agent: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    pub limit: Option<usize>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// Run the import and roll it back: the same counts and refusals,
    /// nothing written.
    pub dry_run: Option<bool>,
    /// The document holds the whole directory of each tenant it has
    /// entries for: that tenant's stored entries it leaves out are
    /// deleted in the same transaction (`dialtone import
    /// --replace-directory`). A tenant with no entry in it keeps its
    /// directory.
    pub replace_directory: Option<bool>,
    /// With `replace_directory`: the most a replacement may delete of a
    /// tenant's entries, in percent (0 to 100, default 50). A replacement
    /// that would delete more is refused and nothing is written.
    pub max_deleted_percent: Option<u8>,
}

#[derive(Serialize, ToSchema)]
pub struct ImportResult {
    pub changes: usize,
    pub dry_run: bool,
    /// What the write did, per table; on a dry run, what it would do.
    #[schema(value_type = Option<Object>)]
    pub written: Option<WriteReport>,
    /// With `replace_directory`: the tenants whose directories the
    /// document replaced (or, on a dry run, would replace).
    pub replaced_directories: Vec<String>,
    /// Rows written that may not work as meant, each naming its line
    /// (`request:LINE`): a phone whose MAC is another vendor's (its own
    /// files are refused to that vendor's User-Agent), a number listed by
    /// entries that share neither a name nor a company (no name is shown
    /// for it). Ten of each kind named, the rest counted.
    pub warnings: Vec<String>,
}

fn view(r: AuditRecord) -> AuditView {
    AuditView {
        id: r.id,
        at: r.at,
        actor: r.actor,
        action: r.action,
        entity: r.entity,
        entity_key: r.entity_key,
        tenant: r.tenant,
        summary: r.summary,
    }
}

#[utoipa::path(get, operation_id = "audit_list", path = "/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = AuditList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Response, ApiError> {
    // A tenant token reads its own tenant row's audit trail, by id: never
    // that of an earlier tenant with the same slug.
    let (tenant, tenant_id) = match (&principal.tenant, params.tenant) {
        (Some(own), Some(asked)) if *own.slug != *asked => {
            return Err(ApiError::not_found(format!("tenant {asked}")))
        }
        (Some(own), _) if !principal.is_global() => (None, Some(own.id)),
        (_, asked) => (asked, None),
    };
    // As every list's: a negative limit is refused, not read as 1.
    let limit = super::page_size(params.limit) as i64;
    if params.key.as_ref().is_some_and(|key| key.len() > MAX_KEY) {
        return Err(ApiError::bad_request(format!(
            "key: at most {MAX_KEY} bytes"
        )));
    }
    let entity_key = params.key.map(key_as_logged);
    let rows = state
        .store
        .audit_log(&AuditQuery {
            tenant,
            tenant_id,
            entity: params.entity,
            actor: params.actor,
            entity_key,
            before_id: params.before,
            limit,
        })
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(axum::Json(AuditList {
        items: rows.into_iter().map(view).collect(),
        next,
    })
    .into_response())
}

/// The longest `key` filter: longer than any key a row is written under
/// (a directory entry's `tenant/external_id`, a template's create key).
const MAX_KEY: usize = 1024;

/// The `entity_key` a `key` filter reads: a MAC, however spelt, as the
/// audit log writes it. One key, not the text as given besides: with a
/// list, SQLite walked a tenant's whole trail by its other indexes. A slug
/// spelt as a dashed MAC (`00-15-65-…`) is so read as that MAC.
fn key_as_logged(key: String) -> String {
    key.parse::<Mac>().map_or(key, |mac| mac.to_string())
}

#[utoipa::path(get, operation_id = "audit_history", path = "/v1/phones/{mac}/history", tag = "phones",
    params(("mac" = String, Path, pattern = r"^[0-9A-Fa-f:.-]{12,17}$", example = "0015654aa937"), HistoryParams),
    responses((status = 200, body = Vec<BootView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(mac): ApiPath<String>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Response, ApiError> {
    let mac = parse_mac(&mac)?;
    let owner = phone_for(&state.mirror.load(), &principal, &mac, Access::Read)?.tenant_id;
    // Only fetches made while the phone was this tenant's: the previous
    // owner of the MAC keeps theirs. Global admins see every fetch.
    let tenant = (!principal.is_global()).then_some(owner);
    let boots = state
        .store
        .recent_boots(
            &mac,
            tenant,
            params.limit.unwrap_or(50).clamp(1, 500) as i64,
        )
        .await?;
    let views: Vec<BootView> = boots
        .into_iter()
        .map(|b| BootView {
            at: b.at,
            file: b.file,
            protocol: b.protocol,
            outcome: b.outcome,
            bytes: b.bytes,
            remote_ip: b.remote_ip,
            user_agent: b.user_agent,
            model: b.model,
            firmware: b.firmware,
        })
        .collect();
    Ok(axum::Json(views).into_response())
}

/// An import request's body, whole: at most `IMPORT_LIMIT` bytes. Its
/// encoding is the parser's to judge, as a file's is for `dialtone
/// import`: a cell or a position that is not UTF-8 is named where it is.
async fn read_import(body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, super::IMPORT_LIMIT)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "an import is at most {} MiB, or the request ended early",
                    super::IMPORT_LIMIT >> 20
                ),
            )
        })
}

#[utoipa::path(post, operation_id = "audit_import", path = "/v1/import", tag = "import", params(ImportParams),
    request_body(content = Object, description = "An import document, as for `dialtone import`: JSON (application/json) or CSV (text/csv)"),
    responses((status = 200, body = ImportResult), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ImportParams>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // Before the body is read: any token may send one, and the route
    // takes a platform's worth of phones (`IMPORT_LIMIT`).
    principal.require_global()?;
    match params.max_deleted_percent {
        Some(p) if p > 100 => {
            return Err(ApiError::bad_request(
                "max_deleted_percent is a percentage, from 0 to 100",
            ))
        }
        Some(_) if params.replace_directory != Some(true) => {
            return Err(ApiError::bad_request(
                "max_deleted_percent goes with replace_directory=true",
            ))
        }
        _ => {}
    }
    let body = read_import(body).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = if content_type.starts_with("application/json") {
        true
    } else if content_type.starts_with("text/csv") {
        false
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_request",
            "send application/json or text/csv",
        ));
    };
    // Seconds of CPU for a platform's worth of phones: on a blocking
    // thread, so that the runtime's workers go on answering phones and
    // lookups meanwhile.
    let (mut plan, warnings) = tokio::task::spawn_blocking(move || {
        let mut plan = plan_bytes("request", json, &body);
        dialtone_directory::settings::check_import(&mut plan);
        let warnings = crate::import_cmd::warnings(&plan);
        (plan, warnings)
    })
    .await
    .map_err(|e| ApiError::internal(format!("parsing an import: {e}")))?;
    if plan.whole_file_errors == 0 {
        if plan.keeps_stored_tenants() {
            let mirror = state.mirror.load();
            plan.keep_stored_tenants(|slug| mirror.tenant_by_slug(slug).map(|t| &**t));
        }
        let checks = crate::import_cmd::templates::TemplateChecks {
            provisioner: &state.provisioner,
            state: state.mirror.load(),
            quotas: &state.quotas,
            actor: principal.actor(),
        };
        checks.check(&mut plan).await?;
    }
    if !plan.errors.is_empty() {
        let errors: Vec<Value> = plan
            .errors
            .iter()
            .take(100)
            .map(|e| {
                json!({
                    "line": e.location.line, "column": e.location.column,
                    "field": e.location.field, "message": e.message,
                })
            })
            .collect();
        return Err(ApiError::invalid(format!(
            "{} invalid rows; nothing was written",
            plan.errors.len()
        ))
        .with_details(json!({ "errors": errors })));
    }
    let replaced = match params.replace_directory {
        Some(true) => plan.replace_directories(
            params
                .max_deleted_percent
                .unwrap_or(dialtone_sync::store::DEFAULT_MOST_DELETED_PERCENT),
        ),
        _ => Vec::new(),
    };
    let changes = plan.changes();
    if changes == 0 {
        return Err(ApiError::invalid("nothing to import"));
    }
    let mutations = plan.take_mutations();
    let mut detail = json!({ "changes": changes });
    if params.replace_directory == Some(true) {
        detail["replaced_directories"] = json!(replaced);
    }
    let change = Change {
        action: "import",
        entity: "import",
        key: format!("{changes} changes"),
        tenant: None,
        detail,
    };
    let dry_run = params.dry_run == Some(true);
    let written = if dry_run {
        // The import itself, rolled back: the database's refusals and the
        // counts are the real ones, and nothing reaches the mirror.
        let audit = super::audit_of(&principal, change);
        let (checked, token) = super::writes::behind_token_check(&principal, mutations);
        state
            .store
            .apply_with_progress(&checked, &audit, None, Ending::RollBack)
            .await
            .map_err(|e| super::writes::token_refusal(&token, e))?
    } else {
        commit(&state, &principal, change, mutations).await?
    };
    Ok(axum::Json(ImportResult {
        changes,
        dry_run,
        written: Some(written),
        replaced_directories: replaced,
        warnings,
    })
    .into_response())
}

#[cfg(test)]
mod template_tests;

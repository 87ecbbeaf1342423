//! Previews (`POST /v1/preview`, `GET /v1/phones/{mac}/files`): a phone's
//! files as it would get them, from the stored templates or with a draft in
//! place of one, with the diff against what it gets now. Nothing is saved
//! and line passwords are masked.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use dialtone_sync::Phone;
use dialtone_tftp::preview::PreviewFile;
use dialtone_tftp::render::content_type;
use dialtone_tftp::templates::Draft;
use dialtone_tftp::ProvisionError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::phones::{parse_mac, phone_for, Access};
use super::quotas::Quota;
use super::templates::{check_names, key_of, may_try, stored, KeyFields};
use super::versions::unified_diff;
use super::{AdminState, Principal};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    pub mac: String,
    /// One file; all files the phone fetches when absent.
    pub file: Option<String>,
    /// Preview an edit of this stored template (with `body`).
    pub template_id: Option<i64>,
    /// A draft body. With `template_id` it replaces that template's body;
    /// otherwise `scope`, `family` and `file_pattern` say where it would go.
    pub body: Option<String>,
    pub scope: Option<String>,
    pub family: Option<String>,
    pub file_pattern: Option<String>,
    pub tenant: Option<String>,
    pub model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PreviewFileView {
    pub file: String,
    /// The template that renders it.
    pub template: String,
    /// False when a template nearer the phone overrides the draft.
    pub from_draft: bool,
    pub content_type: String,
    /// As the phone would get it, line passwords shown as `********`.
    pub body: String,
    /// Differs from what the phone gets now.
    pub changed: bool,
    /// Unified diff against what the phone gets now.
    pub diff: String,
    /// Why the file did not render for this phone (its template failed);
    /// absent when it rendered. `body` and `diff` are then empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PreviewView {
    pub mac: String,
    pub files: Vec<PreviewFileView>,
}

fn file_view(now: &PreviewFile, next: PreviewFile) -> PreviewFileView {
    let old = String::from_utf8_lossy(&now.body);
    let new = String::from_utf8_lossy(&next.body);
    PreviewFileView {
        changed: now.body != next.body,
        diff: unified_diff(
            &old,
            &new,
            &format!("{} (now)", now.file),
            &format!("{} (preview)", next.file),
        ),
        body: new.into_owned(),
        file: next.file,
        template: next.template,
        from_draft: next.from_draft,
        content_type: next.content_type.to_string(),
        error: None,
    }
}

/// A file whose template failed, in a list of the phone's files: the
/// error as a preview of that file alone answers it.
fn failed_view(phone: &Phone, file: String, failure: ProvisionError) -> PreviewFileView {
    let template = match &failure {
        ProvisionError::Render { template, .. } => template.clone(),
        _ => String::new(),
    };
    PreviewFileView {
        file,
        template,
        from_draft: false,
        content_type: content_type(phone.family).to_string(),
        body: String::new(),
        changed: false,
        diff: String::new(),
        error: Some(ApiError::from(failure).message),
    }
}

#[utoipa::path(post, operation_id = "templates_preview", path = "/v1/preview", tag = "templates", request_body = PreviewRequest,
    responses((status = 200, body = PreviewView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(request): ApiJson<PreviewRequest>,
) -> Result<Response, ApiError> {
    check_names([
        ("mac", Some(request.mac.as_str())),
        ("file", request.file.as_deref()),
        ("scope", request.scope.as_deref()),
        ("family", request.family.as_deref()),
        ("file_pattern", request.file_pattern.as_deref()),
        ("tenant", request.tenant.as_deref()),
        ("model", request.model.as_deref()),
    ])?;
    let mac = parse_mac(&request.mac)?;
    let mirror = state.mirror.load();
    let phone = phone_for(&mirror, &principal, &mac, Access::Read)?.clone();
    let draft = match (request.template_id, request.body) {
        (Some(id), Some(body)) => Some(Draft {
            key: stored(&mirror, &principal, id)?.key(),
            body: body.into(),
        }),
        (Some(_), None) => return Err(ApiError::invalid("template_id needs body (the draft)")),
        (None, Some(body)) => {
            let field = |f: &Option<String>, name: &str| {
                f.clone().ok_or_else(|| {
                    ApiError::invalid(format!("a draft without template_id needs {name}"))
                })
            };
            let (scope, family, file_pattern) = (
                field(&request.scope, "scope")?,
                field(&request.family, "family")?,
                field(&request.file_pattern, "file_pattern")?,
            );
            let fields = KeyFields {
                scope: &scope,
                family: &family,
                file_pattern: &file_pattern,
                tenant: request.tenant.as_deref(),
                mac: Some(&request.mac),
                model: request.model.as_deref(),
            };
            let (key, owner) = key_of(&mirror, &principal, fields)?;
            may_try(&principal, owner)?;
            Some(Draft {
                key,
                body: body.into(),
            })
        }
        (None, None) => None,
    };
    // A draft is compiled and rendered like a saved template: the phone's
    // tenant's size quota holds for it as for a save or a check.
    if let (Some(draft), false) = (&draft, principal.is_global()) {
        if let Some(tenant) = mirror.tenant(phone.tenant_id) {
            state
                .quotas
                .check(tenant, Quota::TemplateBytes, draft.body.len() as u64)?;
        }
    }
    let files = match request.file {
        Some(file) => vec![file],
        None => state.provisioner.rendered_files_of(&phone),
    };
    let mut views = Vec::with_capacity(files.len());
    for file in files {
        let now = preview_on_pool(&state, &phone, &file, None).await?;
        let next = match &draft {
            Some(draft) => preview_on_pool(&state, &phone, &file, Some(draft.clone())).await?,
            None => now.clone(),
        };
        views.push(view_on_pool(&state, &phone, now, next).await?);
    }
    Ok(axum::Json(PreviewView {
        mac: mac.to_string(),
        files: views,
    })
    .into_response())
}

#[utoipa::path(get, operation_id = "templates_phone_files", path = "/v1/phones/{mac}/files", tag = "phones", params(("mac" = String, Path, pattern = r"^[0-9A-Fa-f:.-]{12,17}$", example = "0015654aa937")),
    responses((status = 200, body = PreviewView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn phone_files(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(mac): ApiPath<String>,
) -> Result<Response, ApiError> {
    let mac = parse_mac(&mac)?;
    let phone = phone_for(&state.mirror.load(), &principal, &mac, Access::Read)?.clone();
    let mut views = Vec::new();
    for file in state.provisioner.rendered_files_of(&phone) {
        let view = match render_on_pool(&state, &phone, &file, None).await {
            Ok(now) => view_on_pool(&state, &phone, now.clone(), now).await?,
            // One file's template failing for this phone is that file's
            // news: the list is where an admin looks for which one it is.
            Err(failure @ ProvisionError::Render { .. }) => failed_view(&phone, file, failure),
            // Gone since the list was made: an edit came in meanwhile.
            Err(ProvisionError::NotFound) => continue,
            Err(other) => return Err(other.into()),
        };
        views.push(view);
    }
    Ok(axum::Json(PreviewView {
        mac: mac.to_string(),
        files: views,
    })
    .into_response())
}

/// One file's view (its text and the diff to `next`), made on the render
/// pool under the phone's tenant's share: splitting and diffing a file of
/// a million lines is work the tenant's template decides, and on the
/// runtime's workers it held up everyone's requests.
async fn view_on_pool(
    state: &AdminState,
    phone: &Phone,
    now: PreviewFile,
    next: PreviewFile,
) -> Result<PreviewFileView, ApiError> {
    Ok(state
        .provisioner
        .on_pool(Some(phone.tenant_id), move || Ok(file_view(&now, next)))
        .await?)
}

/// One file's preview, rendered on the render pool under the phone's
/// tenant's share: a draft is tenant-written work like any render.
async fn preview_on_pool(
    state: &AdminState,
    phone: &Phone,
    file: &str,
    draft: Option<Draft>,
) -> Result<PreviewFile, ApiError> {
    Ok(render_on_pool(state, phone, file, draft).await?)
}

async fn render_on_pool(
    state: &AdminState,
    phone: &Phone,
    file: &str,
    draft: Option<Draft>,
) -> Result<PreviewFile, ProvisionError> {
    let provisioner = state.provisioner.clone();
    let (allowed, file) = (phone.clone(), file.to_string());
    state
        .provisioner
        .on_pool(Some(phone.tenant_id), move || {
            provisioner.preview(&allowed, &file, draft.as_ref())
        })
        .await
}

#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReachParams {
    /// At most this many phones (1–10,000; default 1,000).
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct ReachedPhone {
    pub mac: String,
    pub tenant: String,
    pub model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ReachView {
    pub phones: Vec<ReachedPhone>,
    /// More phones than `limit` use the template.
    pub truncated: bool,
}

/// The phones a stored template reaches now: the ones a change to it
/// changes, and the ones "resync affected phones" tells.
#[utoipa::path(get, operation_id = "templates_phones", path = "/v1/templates/{id}/phones", tag = "templates",
    params(("id" = i64, Path, minimum = 1), ReachParams),
    responses((status = 200, body = ReachView), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn template_phones(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(params): ApiQuery<ReachParams>,
) -> Result<Response, ApiError> {
    let limit = params.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let mirror = state.mirror.load();
    // Family and model templates are global admins' only: a tenant caller
    // gets 404 for them, as for their other routes.
    let template = stored(&mirror, &principal, id)?;
    let provisioner = state.provisioner.clone();
    // The walk is off the async workers either way. A tenant's runs on the
    // render pool under its share, so its requests queue behind each other
    // (and past the share get 429), not in tokio's blocking pool that every
    // tenant's renders need. A global admin's family template may walk every
    // phone for longer than a render may take, so it keeps a thread.
    let (phones, truncated) = match principal.tenant_filter() {
        Some(tenant) => {
            let walker = provisioner.clone();
            provisioner
                .on_pool(Some(tenant), move || {
                    Ok(walker.phones_using(&template, limit))
                })
                .await?
        }
        None => tokio::task::spawn_blocking(move || provisioner.phones_using(&template, limit))
            .await
            .map_err(|_| ApiError::internal("listing the template's phones failed"))?,
    };
    let phones = phones
        .iter()
        .map(|p| ReachedPhone {
            mac: p.mac.to_string(),
            tenant: mirror
                .tenant(p.tenant_id)
                .map_or_else(String::new, |t| t.slug.to_string()),
            model: p.model.as_deref().map(str::to_string),
        })
        .collect();
    Ok(axum::Json(ReachView { phones, truncated }).into_response())
}

#[cfg(test)]
#[path = "preview_tests.rs"]
mod tests;

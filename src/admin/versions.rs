//! A template's history: its kept versions, newest first, a page at a
//! time (`…/versions`), one with its body (`…/versions/{version}`), diffs
//! between two (`…/diff`), and rollback, which saves an old body as a new
//! version after the same checks as any edit. Each reads only the rows it
//! shows: a family or model template keeps every version, and reading every
//! body for each of these requests held tens of megabytes.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use dialtone_sync::store::{version_digest, TemplateVersionSummary};
use dialtone_sync::TemplateVersion;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::templates::{save_body, scope_tenant, stored, writable, TemplateView};
use super::{page_size, AdminState, Principal};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version whose body becomes the new current version.
    pub version: i64,
}

#[derive(Serialize, ToSchema)]
pub struct VersionView {
    pub version: i64,
    pub updated_by: String,
    pub updated_at: i64,
    pub bytes: usize,
    /// A short hash of the body, to tell versions apart at a glance.
    pub digest: String,
    /// Only when one version is asked for.
    pub body: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    /// Newest first.
    pub items: Vec<VersionView>,
    /// Pass as `before` for the next (older) page; absent on the last.
    pub next: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionParams {
    /// Versions older than this one.
    pub before: Option<i64>,
    /// Versions per page: 100 unless given, at most 1,000.
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct DiffView {
    pub from: i64,
    pub to: i64,
    /// Unified diff, three lines of context.
    pub diff: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    pub from: i64,
    /// Defaults to the current version.
    pub to: Option<i64>,
}

fn listed_view(v: TemplateVersionSummary) -> VersionView {
    VersionView {
        version: v.version,
        updated_by: v.updated_by,
        updated_at: v.updated_at,
        bytes: v.bytes as usize,
        digest: v.digest,
        body: None,
    }
}

fn full_view(v: TemplateVersion) -> VersionView {
    VersionView {
        version: v.version,
        updated_by: v.updated_by,
        updated_at: v.updated_at,
        bytes: v.body.len(),
        digest: version_digest(&v.body),
        body: Some(v.body),
    }
}

/// Version `version` of template `id`, with its body, or 404.
async fn kept_version(
    state: &AdminState,
    id: i64,
    version: i64,
) -> Result<TemplateVersion, ApiError> {
    state
        .store
        .template_version(id, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("version {version} of template #{id}")))
}

#[utoipa::path(get, operation_id = "templates_versions", path = "/v1/templates/{id}/versions", tag = "templates",
    params(("id" = i64, Path, minimum = 1, example = 1), VersionParams),
    responses((status = 200, body = VersionList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn versions(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(params): ApiQuery<VersionParams>,
) -> Result<Response, ApiError> {
    stored(&state.mirror.load(), &principal, id)?;
    let limit = page_size(params.limit);
    // One more than the page: whether an older page follows.
    let mut listed = state
        .store
        .template_version_list(id, params.before, limit as i64 + 1)
        .await?;
    let next = (listed.len() > limit).then(|| listed[limit - 1].version);
    listed.truncate(limit);
    let items = listed.into_iter().map(listed_view).collect();
    Ok(axum::Json(VersionList { items, next }).into_response())
}

#[utoipa::path(get, operation_id = "templates_version", path = "/v1/templates/{id}/versions/{version}", tag = "templates",
    params(("id" = i64, Path, minimum = 1, example = 1), ("version" = i64, Path, minimum = 1, example = 1)),
    responses((status = 200, body = VersionView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn version(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((id, version)): ApiPath<(i64, i64)>,
) -> Result<Response, ApiError> {
    stored(&state.mirror.load(), &principal, id)?;
    let found = kept_version(&state, id, version).await?;
    Ok(axum::Json(full_view(found)).into_response())
}

/// Myers' diff costs the square of the differences: two unlike bodies of
/// a few hundred thousand lines, which a tenant's draft or two saved
/// versions can be, would take minutes. Past this `similar` stops looking
/// for the smallest diff and gives a coarser one that is still correct.
const DIFF_TIME: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs on the render pool under the tenant's share (`Provisioner::on_pool`),
/// never on the API's async workers.
pub(crate) fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::configure()
        .timeout(DIFF_TIME)
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

#[utoipa::path(get, operation_id = "templates_diff", path = "/v1/templates/{id}/diff", tag = "templates",
    params(("id" = i64, Path, minimum = 1, example = 1), DiffQuery),
    responses((status = 200, body = DiffView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn diff(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<DiffQuery>,
) -> Result<Response, ApiError> {
    let current = stored(&state.mirror.load(), &principal, id)?;
    let to = query.to.unwrap_or(current.version);
    let old = kept_version(&state, id, query.from).await?;
    let new = if to == old.version {
        old.clone()
    } else {
        kept_version(&state, id, to).await?
    };
    let (from, to) = (old.version, new.version);
    let tenant = scope_tenant(&state.mirror.load(), &current);
    let diff = state
        .provisioner
        .on_pool(tenant, move || {
            Ok(unified_diff(
                &old.body,
                &new.body,
                &format!("v{from}"),
                &format!("v{to}"),
            ))
        })
        .await?;
    Ok(axum::Json(DiffView { from, to, diff }).into_response())
}

#[utoipa::path(post, operation_id = "templates_rollback", path = "/v1/templates/{id}/rollback", tag = "templates", request_body = Rollback,
    params(("id" = i64, Path, minimum = 1, example = 1), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rollback(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Rollback>,
) -> Result<Response, ApiError> {
    let template = writable(&state, &principal, id)?;
    let old = kept_version(&state, id, body.version).await?;
    if old.body == *template.body {
        return Err(ApiError::conflict(format!(
            "version {} has the current body already",
            body.version
        )));
    }
    save_body(
        &state, &principal, &template, &headers, old.body, None, "rollback",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::unified_diff;

    /// Two unlike bodies of 100,000 lines each: minutes for an exact Myers
    /// diff, so a diff that is not cut short never ends within the bound.
    #[test]
    fn unlike_bodies_get_a_correct_diff_without_the_quadratic_search() {
        let (old, new) = ("a\n".repeat(100_000), "b\n".repeat(100_000));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(unified_diff(&old, &new, "v1", "v2"));
        });
        let diff = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the diff was not cut short");
        let count = |sign: &str| diff.lines().filter(|l| *l == sign).count();
        assert_eq!((count("-a"), count("+b")), (100_000, 100_000));
    }
}

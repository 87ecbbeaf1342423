//! `/v1/templates`: templates at every scope, checked before they go live
//! (syntax, then a trial render for a phone the template applies to), every
//! version kept, diffs and rollback. Previews are in `preview.rs`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::store::TemplateInput;
use dialtone_sync::{
    etag_of, phone_etag, Family, Id, Mac, MirrorState, Mutation, Target, Template, TemplateKey,
    TemplateScope,
};
use dialtone_tftp::preview::sample_phone;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::phones::{parse_mac, visible_phone};
use super::quotas::Quota;
use super::{
    commit, commit_if_match, digest, off_workers, page_size, parse_name, tagged, walk_off_workers,
    AdminState, Change, Edit, Principal, WalkWords,
};

#[derive(Serialize, ToSchema)]
pub struct TemplateView {
    pub id: i64,
    /// `family`, `model`, `tenant` or `phone`.
    pub scope: String,
    pub family: String,
    /// The model (model scope), tenant id (tenant scope) or MAC (phone scope).
    pub scope_key: String,
    /// The tenant a tenant- or phone-scope template belongs to.
    pub tenant: Option<String>,
    /// The template name the file is found by: `{mac}.cfg`, `SEP{mac}.cnf.xml`, …
    pub file_pattern: String,
    /// Absent in lists.
    pub body: Option<String>,
    pub version: i64,
    pub updated_by: String,
    pub updated_at: i64,
    pub etag: String,
}

#[derive(Serialize, ToSchema)]
pub struct TemplateList {
    pub items: Vec<TemplateView>,
    pub next: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    pub scope: String,
    pub family: String,
    pub file_pattern: String,
    pub body: String,
    /// Tenant scope: the tenant's slug.
    pub tenant: Option<String>,
    /// Phone scope: the phone's MAC.
    pub mac: Option<String>,
    /// Model scope: the model (`T46S`).
    pub model: Option<String>,
    /// Try the template on this phone instead of the first it applies to.
    pub sample_mac: Option<String>,
}

impl NewTemplate {
    /// Every field but the body, which the size quota bounds.
    fn names(&self) -> [(&'static str, Option<&str>); 7] {
        [
            ("scope", Some(&self.scope)),
            ("family", Some(&self.family)),
            ("file_pattern", Some(&self.file_pattern)),
            ("tenant", self.tenant.as_deref()),
            ("mac", self.mac.as_deref()),
            ("model", self.model.as_deref()),
            ("sample_mac", self.sample_mac.as_deref()),
        ]
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateUpdate {
    pub body: String,
    pub sample_mac: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Validation {
    pub ok: bool,
    /// The phone the template was tried on; none when no phone of its scope exists.
    pub sample_mac: Option<String>,
    pub rendered_bytes: usize,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TemplateQuery {
    pub scope: Option<String>,
    pub family: Option<String>,
    /// Tenant slug: its tenant-scope templates and those of its phones.
    pub tenant: Option<String>,
    pub file_pattern: Option<String>,
    /// Page after this id.
    pub after: Option<i64>,
    pub limit: Option<usize>,
}

/// The tenant a tenant- or phone-scope template belongs to, as the
/// mirror's per-tenant template index has it.
pub(crate) fn scope_tenant(state: &MirrorState, template: &Template) -> Option<Id> {
    state.template_tenant(template)
}

fn view(state: &MirrorState, t: &Template, with_body: bool) -> TemplateView {
    TemplateView {
        id: t.id,
        scope: t.scope.to_string(),
        family: t.family.to_string(),
        scope_key: t.scope_key.to_string(),
        tenant: scope_tenant(state, t)
            .and_then(|id| state.tenant(id))
            .map(|t| t.slug.to_string()),
        file_pattern: t.file_pattern.to_string(),
        body: with_body.then(|| t.body.to_string()),
        version: t.version,
        updated_by: t.updated_by.to_string(),
        updated_at: t.updated_at,
        etag: etag_of(t),
    }
}

/// Family and model templates touch every tenant: global admins only.
fn may_read(state: &MirrorState, principal: &Principal, t: &Template) -> Result<(), ApiError> {
    let what = format!("template #{}", t.id);
    match scope_tenant(state, t) {
        Some(tenant) => principal.read(tenant, &what),
        None if principal.is_global() => Ok(()),
        None => Err(ApiError::not_found(&what)),
    }
}

/// A stored template the caller may change.
pub(crate) fn writable(
    state: &AdminState,
    principal: &Principal,
    id: Id,
) -> Result<Arc<Template>, ApiError> {
    let mirror = state.mirror.load();
    let template = stored(&mirror, principal, id)?;
    may_write(&mirror, principal, &template)?;
    Ok(template)
}

fn may_write(state: &MirrorState, principal: &Principal, t: &Template) -> Result<(), ApiError> {
    may_read(state, principal, t)?;
    match scope_tenant(state, t) {
        Some(tenant) => principal.write(tenant, format!("template #{}", t.id)),
        None => principal.require_global(),
    }
}

pub(crate) fn stored(
    state: &MirrorState,
    principal: &Principal,
    id: Id,
) -> Result<Arc<Template>, ApiError> {
    let template = state
        .template(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("template #{id}")))?;
    may_read(state, principal, &template)?;
    Ok(template)
}

/// Longest name a template request or a preview may give (a scope,
/// family, file pattern, model, tenant, MAC or file): the longest a
/// phone's text fields, its model among them, may be (`phones/input.rs`), past
/// every slug, MAC and file name a phone fetches. A check or a preview
/// holds its names, copied, while it waits for the render pool; nothing
/// else bounded them, and an error that names one would echo it.
pub(crate) const MAX_NAME: usize = 256;

/// Refuses (400) the first of `fields` longer than [`MAX_NAME`], by name.
pub(crate) fn check_names<'a>(
    fields: impl IntoIterator<Item = (&'static str, Option<&'a str>)>,
) -> Result<(), ApiError> {
    let long = fields
        .into_iter()
        .find(|(_, value)| value.is_some_and(|v| v.len() > MAX_NAME));
    match long {
        Some((field, _)) => Err(ApiError::bad_request(format!(
            "{field}: at most {MAX_NAME} bytes"
        ))),
        None => Ok(()),
    }
}

/// Whether `principal` may have a draft for a key of `owner` checked or
/// previewed: its tenant's readers may; a family or model key (no owner)
/// reaches every tenant's phones, so only a global admin.
pub(crate) fn may_try(principal: &Principal, owner: Option<Id>) -> Result<(), ApiError> {
    match owner {
        Some(tenant) => principal.read(tenant, "tenant"),
        None => principal.require_global(),
    }
}

/// The fields of a request that name a template's key.
pub(crate) struct KeyFields<'a> {
    pub scope: &'a str,
    pub family: &'a str,
    pub file_pattern: &'a str,
    pub tenant: Option<&'a str>,
    pub mac: Option<&'a str>,
    pub model: Option<&'a str>,
}

impl<'a> From<&'a NewTemplate> for KeyFields<'a> {
    fn from(body: &'a NewTemplate) -> Self {
        KeyFields {
            scope: &body.scope,
            family: &body.family,
            file_pattern: &body.file_pattern,
            tenant: body.tenant.as_deref(),
            mac: body.mac.as_deref(),
            model: body.model.as_deref(),
        }
    }
}

/// A new model template's key: resolution looks a phone's model up as
/// recorded, in upper and in lower case, so a key in mixed case would
/// apply only to phones recorded in that very spelling, silently. Creates
/// and checks of a new key refuse it: one stored before is still checked
/// and previewed.
/// An import's templates obey the same rule (`import_cmd/templates.rs`).
fn in_one_case(model: &str) -> Result<(), ApiError> {
    match crate::import_cmd::templates::mixed_case(model) {
        Some(reason) => Err(ApiError::invalid(reason)),
        None => Ok(()),
    }
}

/// The natural key a new template's fields name, and the tenant it belongs to.
/// A tenant or phone the caller may not see is named exactly like one that
/// does not exist.
pub(crate) fn key_of(
    state: &MirrorState,
    principal: &Principal,
    fields: KeyFields<'_>,
) -> Result<(TemplateKey, Option<Id>), ApiError> {
    let KeyFields {
        scope,
        family,
        file_pattern,
        tenant,
        mac,
        model,
    } = fields;
    let scope: TemplateScope = parse_name(scope)?;
    let family: Family = parse_name(family)?;
    let (scope_key, owner) = match scope {
        TemplateScope::Family => (String::new(), None),
        TemplateScope::Model => {
            let model = model
                .filter(|m| !m.is_empty())
                .ok_or_else(|| ApiError::invalid("a model-scope template needs model"))?;
            // A key no phone's model can be would never apply: the same
            // rule as a phone's model.
            let as_phone_model = dialtone_sync::checks::PhoneText {
                model: Some(model),
                ..Default::default()
            };
            as_phone_model
                .check()
                .map_err(|r| ApiError::invalid(r.reason))?;
            (model.to_string(), None)
        }
        TemplateScope::Tenant => {
            let slug =
                tenant.ok_or_else(|| ApiError::invalid("a tenant-scope template needs tenant"))?;
            let tenant = state
                .tenant_by_slug(slug)
                .filter(|t| principal.read(t.id, "tenant").is_ok())
                .ok_or_else(|| ApiError::invalid(format!("tenant {slug} does not exist")))?;
            (tenant.id.to_string(), Some(tenant.id))
        }
        TemplateScope::Phone => {
            let mac = parse_mac(
                mac.ok_or_else(|| ApiError::invalid("a phone-scope template needs mac"))?,
            )?;
            let phone = visible_phone(state, principal, &mac)
                .ok_or_else(|| ApiError::invalid(format!("phone {mac} does not exist")))?;
            (mac.to_string(), Some(phone.tenant_id))
        }
    };
    let key = TemplateKey {
        scope,
        family,
        scope_key: scope_key.into(),
        file_pattern: file_pattern.into(),
    };
    Ok((key, owner))
}

/// A stored model-scope template for the model `key` names, spelled
/// otherwise: models compare case-blind, so only one of them could apply.
/// The platform's family and model templates are walked, on this global
/// admin's write only.
fn same_model_template<'a>(state: &'a MirrorState, key: &TemplateKey) -> Option<&'a Arc<Template>> {
    if key.scope != TemplateScope::Model {
        return None;
    }
    (state.platform_templates())
        .filter(|t| {
            t.scope == TemplateScope::Model
                && t.family == key.family
                && t.file_pattern == key.file_pattern
                && dialtone_tftp::templates::same_model(key.family, &t.scope_key, &key.scope_key)
        })
        .min_by_key(|t| t.id)
}

fn may_write_key(principal: &Principal, owner: Option<Id>) -> Result<(), ApiError> {
    match owner {
        Some(tenant) => principal.write(tenant, "tenant"),
        None => principal.require_global(),
    }
}

/// The quotas a template of `owner` (none: a family or model template,
/// global admins only) must keep: its size, and the tenant's count when it
/// is new. Returns how many earlier versions to keep.
fn template_quotas(
    state: &AdminState,
    owner: Option<Id>,
    bytes: usize,
    new: bool,
) -> Result<Option<u64>, ApiError> {
    let mirror = state.mirror.load();
    let Some(tenant) = owner.and_then(|id| mirror.tenant(id)).cloned() else {
        return Ok(None);
    };
    state
        .quotas
        .check(&tenant, Quota::TemplateBytes, bytes as u64)?;
    if new {
        // Counted by the mirror's per-tenant index, not by a walk.
        let count = mirror.template_count(tenant.id);
        state
            .quotas
            .check(&tenant, Quota::Templates, count as u64 + 1)?;
    }
    Ok(Some(state.quotas.limit(&tenant, Quota::TemplateVersions)))
}

/// The templates a list by `principal` walks: a tenant's caller (or a
/// tenant filter) visits that tenant's templates only; a global admin's
/// unfiltered list, trusted, every one. Family and model templates are
/// global admins' alone to read (`may_read`), so a tenant misses none.
pub(crate) fn walked<'a>(
    mirror: &'a MirrorState,
    principal: &Principal,
    tenant: Option<Id>,
) -> Box<dyn Iterator<Item = &'a Arc<Template>> + 'a> {
    mirror.templates_within(tenant.or(principal.tenant_filter()))
}

/// Syntax, file pattern and a trial render; 422 with line and column. The
/// sample is a phone the caller may see, or "does not exist".
/// The trial render runs on the render pool under `owner`'s share.
async fn check(
    state: &AdminState,
    principal: &Principal,
    key: &TemplateKey,
    body: &str,
    sample_mac: Option<&str>,
    owner: Option<Id>,
) -> Result<Validation, ApiError> {
    let mirror = state.mirror.load();
    let sample = match sample_mac {
        Some(mac) => {
            let mac = parse_mac(mac)?;
            Some(
                visible_phone(&mirror, principal, &mac)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::invalid(format!("sample phone {mac} does not exist"))
                    })?,
            )
        }
        // Found on the walk lane, as a list is: it walks the tenant's
        // phones (a model or family scope's, the platform's), which a
        // tenant of 200,000 phones could take past the render's budget
        // below, and the refusal would blame the template.
        None => {
            let (family, scope, scope_key) = (key.family, key.scope, key.scope_key.clone());
            let walked = mirror.clone();
            let words = WalkWords {
                walk: "finding a sample phone",
                remedy: "name one (sample_mac) or try again",
                busy: "too many lists and checks are running; try again, or name a sample phone \
                       (sample_mac)",
            };
            walk_off_workers(state, principal, &words, move || {
                sample_phone(&walked, scope, family, &scope_key).cloned()
            })
            .await?
        }
    };
    let provisioner = state.provisioner.clone();
    let (family, file_pattern, body) = (key.family, key.file_pattern.clone(), body.to_string());
    let (rendered, sample) = state
        .provisioner
        .on_pool(owner, move || {
            let rendered =
                provisioner.check_template(family, &file_pattern, &body, sample.as_deref())?;
            Ok((rendered, sample))
        })
        .await?;
    Ok(Validation {
        ok: true,
        sample_mac: sample.map(|p| p.mac.to_string()),
        rendered_bytes: rendered.len(),
    })
}

#[utoipa::path(get, operation_id = "templates_list", path = "/v1/templates", tag = "templates", params(TemplateQuery),
    responses((status = 200, body = TemplateList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<TemplateQuery>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let scope: Option<TemplateScope> = query.scope.as_deref().map(parse_name).transpose()?;
    let family: Option<Family> = query.family.as_deref().map(parse_name).transpose()?;
    let tenant = match query.tenant.as_deref() {
        Some(slug) => {
            let what = format!("tenant {slug}");
            let t = mirror
                .tenant_by_slug(slug)
                .ok_or_else(|| ApiError::not_found(&what))?;
            principal.read(t.id, &what)?;
            Some(t.id)
        }
        None => None,
    };
    let limit = page_size(query.limit);
    let reader = principal.clone();
    let list = off_workers(&state, &principal, move || {
        let mut templates: Vec<&Arc<Template>> = walked(&mirror, &reader, tenant)
            .filter(|t| may_read(&mirror, &reader, t).is_ok())
            .filter(|t| scope.is_none_or(|s| s == t.scope) && family.is_none_or(|f| f == t.family))
            .filter(|t| tenant.is_none_or(|id| scope_tenant(&mirror, t) == Some(id)))
            .filter(|t| {
                query
                    .file_pattern
                    .as_deref()
                    .is_none_or(|p| &*t.file_pattern == p)
            })
            .filter(|t| query.after.is_none_or(|after| t.id > after))
            .collect();
        templates.sort_by_key(|t| t.id);
        let next = (templates.len() > limit).then(|| templates[limit - 1].id.to_string());
        let items = templates
            .into_iter()
            .take(limit)
            .map(|t| view(&mirror, t, false))
            .collect();
        TemplateList { items, next }
    })
    .await?;
    Ok(axum::Json(list).into_response())
}

#[utoipa::path(post, operation_id = "templates_validate", path = "/v1/templates/validate", tag = "templates", request_body = NewTemplate,
    responses((status = 200, body = Validation), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn validate(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewTemplate>,
) -> Result<Response, ApiError> {
    check_names(body.names())?;
    let (key, owner) = {
        let mirror = state.mirror.load();
        let (key, owner) = key_of(&mirror, &principal, (&body).into())?;
        // A new key is checked as its create would be; a stored one is
        // still checked as it is edited.
        if key.scope == TemplateScope::Model && mirror.template_by_key(&key).is_none() {
            in_one_case(&key.scope_key)?;
        }
        (key, owner)
    };
    may_try(&principal, owner)?;
    // A check is work a tenant causes: it obeys the size quota too.
    template_quotas(&state, owner, body.body.len(), false)?;
    Ok(axum::Json(
        check(
            &state,
            &principal,
            &key,
            &body.body,
            body.sample_mac.as_deref(),
            owner,
        )
        .await?,
    )
    .into_response())
}

#[utoipa::path(post, operation_id = "templates_create", path = "/v1/templates", tag = "templates", request_body = NewTemplate,
    responses((status = 201, body = TemplateView), (status = 202, description = "Committed, not yet shown by this node's mirror (it is catching up): read it again in a moment"), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewTemplate>,
) -> Result<Response, ApiError> {
    check_names(body.names())?;
    let (key, owner, phone_seen) = {
        let mirror = state.mirror.load();
        let (key, owner) = key_of(&mirror, &principal, (&body).into())?;
        may_write_key(&principal, owner)?;
        if key.scope == TemplateScope::Model {
            in_one_case(&key.scope_key)?;
        }
        if let Some(existing) = mirror.template_by_key(&key) {
            return Err(ApiError::conflict(format!(
                "template #{} already has this scope and file; update it instead",
                existing.id
            )));
        }
        if let Some(existing) = same_model_template(&mirror, &key) {
            return Err(ApiError::conflict(format!(
                "template #{} ({:?}) is already this model's template for this file; \
                 update it instead",
                existing.id, existing.scope_key
            )));
        }
        // A phone's template renders its lines' passwords. The tenant was
        // checked against this node's mirror, which may lag a move of the
        // phone to another tenant: the write holds only for the phone as
        // it was checked.
        let phone_seen = match (key.scope, principal.is_global()) {
            (TemplateScope::Phone, false) => key.scope_key.parse::<Mac>().ok().and_then(|mac| {
                let phone = mirror.phone_by_mac(&mac)?;
                Some(Mutation::Expect {
                    target: Target::Phone { mac },
                    etag: phone_etag(phone, &mirror.lines_of(phone.id)),
                })
            }),
            _ => None,
        };
        (key, owner, phone_seen)
    };
    let keep_versions = template_quotas(&state, owner, body.body.len(), true)?;
    check(
        &state,
        &principal,
        &key,
        &body.body,
        body.sample_mac.as_deref(),
        owner,
    )
    .await?;
    let tenant_slug =
        owner.and_then(|id| state.mirror.load().tenant(id).map(|t| t.slug.to_string()));
    commit(
        &state,
        &principal,
        Change {
            action: "create",
            entity: "template",
            key: format!(
                "{}/{}/{}/{}",
                key.scope, key.family, key.scope_key, key.file_pattern
            ),
            tenant: tenant_slug.as_deref(),
            detail: json!({ "after": digest(&body.body), "bytes": body.body.len() }),
        },
        phone_seen
            .into_iter()
            .chain([Mutation::CreateTemplate(TemplateInput {
                scope: key.scope,
                family: key.family,
                scope_key: key.scope_key.to_string(),
                file_pattern: key.file_pattern.to_string(),
                body: body.body,
                updated_by: principal.actor(),
                keep_versions,
            })])
            .collect(),
    )
    .await
    .map_err(|e| match e.status {
        StatusCode::PRECONDITION_FAILED => ApiError::conflict(format!(
            "phone {} changed a moment ago, on this or another node; read it again and retry",
            key.scope_key
        )),
        _ => e,
    })?;
    let mirror = state.mirror.load();
    let Some(template) = mirror.template_by_key(&key) else {
        let what = format!("template {}", body.file_pattern);
        return Ok(super::created_not_yet_shown(&what, serde_json::Value::Null));
    };
    let view = view(&mirror, template, true);
    Ok((StatusCode::CREATED, tagged(&view.etag.clone(), view)).into_response())
}

#[utoipa::path(get, operation_id = "templates_show", path = "/v1/templates/{id}", tag = "templates", params(("id" = i64, Path, minimum = 1, example = 1)),
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let mirror = state.mirror.load();
    let template = stored(&mirror, &principal, id)?;
    let view = view(&mirror, &template, true);
    Ok(tagged(&view.etag.clone(), view))
}

/// Saves `body` as the next version of `template`, after the same checks as
/// a new one.
pub(crate) async fn save_body(
    state: &AdminState,
    principal: &Principal,
    template: &Template,
    headers: &HeaderMap,
    body: String,
    sample_mac: Option<&str>,
    action: &'static str,
) -> Result<Response, ApiError> {
    let key = template.key();
    let owner = scope_tenant(&state.mirror.load(), template);
    let keep_versions = template_quotas(state, owner, body.len(), false)?;
    check(state, principal, &key, &body, sample_mac, owner).await?;
    let tenant = {
        let mirror = state.mirror.load();
        scope_tenant(&mirror, template)
            .and_then(|id| mirror.tenant(id))
            .map(|t| t.slug.to_string())
    };
    let detail = json!({
        "before": digest(&template.body), "after": digest(&body),
        "from_version": template.version, "bytes": body.len(),
    });
    commit_if_match(
        state,
        principal,
        headers,
        Target::Template { id: template.id },
        Edit {
            action,
            tenant: tenant.as_deref(),
            detail,
            // A phone's template goes when its phone changes tenant.
            seen: Some(dialtone_sync::etag_of(template)),
        },
        Mutation::UpsertTemplate(TemplateInput {
            scope: key.scope,
            family: key.family,
            scope_key: key.scope_key.to_string(),
            file_pattern: key.file_pattern.to_string(),
            body,
            updated_by: principal.actor(),
            keep_versions,
        }),
    )
    .await?;
    let mirror = state.mirror.load();
    let saved = mirror
        .template(template.id)
        .ok_or_else(|| ApiError::not_found(format!("template #{}", template.id)))?;
    let view = view(&mirror, saved, true);
    Ok(tagged(&view.etag.clone(), view))
}

#[utoipa::path(put, operation_id = "templates_update", path = "/v1/templates/{id}", tag = "templates", request_body = TemplateUpdate,
    params(("id" = i64, Path, minimum = 1, example = 1), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TemplateUpdate>,
) -> Result<Response, ApiError> {
    check_names([("sample_mac", body.sample_mac.as_deref())])?;
    let template = writable(&state, &principal, id)?;
    save_body(
        &state,
        &principal,
        &template,
        &headers,
        body.body,
        body.sample_mac.as_deref(),
        "update",
    )
    .await
}

#[utoipa::path(delete, operation_id = "templates_remove", path = "/v1/templates/{id}", tag = "templates",
    params(("id" = i64, Path, minimum = 1, example = 1), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (template, tenant) = {
        let mirror = state.mirror.load();
        let template = stored(&mirror, &principal, id)?;
        may_write(&mirror, &principal, &template)?;
        let tenant = scope_tenant(&mirror, &template)
            .and_then(|id| mirror.tenant(id))
            .map(|t| t.slug.to_string());
        (template, tenant)
    };

    commit_if_match(
        &state,
        &principal,
        &headers,
        Target::Template { id },
        Edit {
            action: "delete",
            tenant: tenant.as_deref(),
            detail: json!({ "before": digest(&template.body), "version": template.version }),
            seen: None,
        },
        Mutation::DeleteTemplate { id },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
pub struct ShippedView {
    pub family: String,
    pub file_pattern: String,
    /// Absent in the list.
    pub body: Option<String>,
}

/// Shipped templates are product defaults, not tenant data: every admin
/// scope may read them, to start a template of its own from one. A tenant
/// reads the product's own; the files of the operator's `templates_dir`
/// (which may branch per tenant) only a global admin does.
#[utoipa::path(get, operation_id = "templates_shipped", path = "/v1/shipped-templates", tag = "templates",
    responses((status = 200, body = Vec<ShippedView>)), security(("bearer" = [])))]
pub async fn shipped(State(state): State<AdminState>, principal: Principal) -> Response {
    let views: Vec<ShippedView> = state
        .provisioner
        .shipped_names(!principal.is_global())
        .into_iter()
        .map(|(family, name)| ShippedView {
            family: family.to_string(),
            file_pattern: name,
            body: None,
        })
        .collect();
    axum::Json(views).into_response()
}

#[utoipa::path(get, operation_id = "templates_shipped_one", path = "/v1/shipped-templates/{family}/{file_pattern}", tag = "templates",
    params(("family" = String, Path, example = "yealink"), ("file_pattern" = String, Path, example = "{mac}.cfg")),
    responses((status = 200, body = ShippedView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn shipped_one(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath((family, file_pattern)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let family: Family = family
        .parse()
        .map_err(|e: dialtone_sync::SyncError| ApiError::not_found(e))?;
    let body = state
        .provisioner
        .shipped_body(family, &file_pattern, !principal.is_global())
        .ok_or_else(|| ApiError::not_found(format!("shipped template {family}/{file_pattern}")))?;
    Ok(axum::Json(ShippedView {
        family: family.to_string(),
        file_pattern,
        body: Some(body.to_string()),
    })
    .into_response())
}

//! `/v1/phones`: phones with their lines, edited as one resource.
//! Passwords (SIP and device HTTP) are write-only: responses say only
//! whether one is set; leaving one out of an update keeps it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::store::{LineInput, PhoneInput};
use dialtone_sync::{
    checks, phone_etag, Family, Line, Mac, MirrorState, Mutation, Phone, Purpose, Target, Tenant,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::quotas::Quota;
use super::{
    commit, commit_as_read, commit_if_match_keeping, created_not_yet_shown, json_value,
    object_text, off_workers, page_size, parse_name, tagged, AdminState, Change, Edit, Principal,
};

pub(crate) mod unchanged;

#[derive(Serialize, ToSchema)]
pub struct LineView {
    pub position: i32,
    pub extension: String,
    pub display_name: String,
    pub auth_user: String,
    /// Whether a SIP password is set; the password itself is never returned.
    pub has_password: bool,
    pub registrar: String,
    pub proxy: Option<String>,
    #[schema(value_type = Object)]
    pub settings: Box<serde_json::value::RawValue>,
}

#[derive(Serialize, ToSchema)]
pub struct PhoneView {
    /// Twelve lowercase hex digits.
    pub mac: String,
    pub tenant: String,
    pub family: String,
    pub model: Option<String>,
    pub label: Option<String>,
    #[schema(value_type = Object)]
    pub variables: Box<serde_json::value::RawValue>,
    pub http_user: Option<String>,
    pub has_http_password: bool,
    pub lines: Vec<LineView>,
    pub updated_at: i64,
    pub etag: String,
}

#[derive(Serialize, ToSchema)]
pub struct PhoneList {
    pub items: Vec<PhoneView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    pub extension: String,
    /// Defaults to the extension (absent or blank), as in an import.
    pub display_name: Option<String>,
    /// Defaults to the extension.
    pub auth_user: Option<String>,
    /// Write-only. Absent: keep the password of the line at this position
    /// (none when the phone moves to another tenant); empty: remove it.
    pub password: Option<String>,
    pub registrar: String,
    pub proxy: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneBody {
    /// Only for `POST /v1/phones`; the path names the phone otherwise.
    pub mac: Option<String>,
    pub tenant: String,
    /// `yealink`, `poly`, `cisco-spa`, `cisco-mpp`, `cisco-sep`,
    /// `grandstream`, `snom` or `fanvil`.
    pub family: String,
    pub model: Option<String>,
    pub label: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
    /// Printable ASCII without `"`, `\` or `:`. Required while the phone
    /// has an HTTP password, a kept one included: to remove both, leave it
    /// out and send an empty `http_password`.
    pub http_user: Option<String>,
    /// Write-only. Absent: keep (none when the phone moves to another
    /// tenant); empty: remove.
    pub http_password: Option<String>,
    #[serde(default)]
    pub lines: Vec<LineBody>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PhoneQuery {
    /// Only this tenant's phones (slug).
    pub tenant: Option<String>,
    /// MAC prefix, hex digits with or without separators (`001565`).
    pub mac_prefix: Option<String>,
    pub model: Option<String>,
    /// The vendor family (`yealink`, …).
    pub vendor: Option<String>,
    /// Matches the MAC, a line's extension or display name, or the label.
    pub q: Option<String>,
    /// Page after this MAC.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

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

pub(crate) fn view(state: &MirrorState, phone: &Phone) -> PhoneView {
    let lines = state.lines_of(phone.id);
    let tenant = state
        .tenant(phone.tenant_id)
        .map(|t| t.slug.to_string())
        .unwrap_or_default();
    PhoneView {
        mac: phone.mac.to_string(),
        tenant,
        family: phone.family.to_string(),
        model: phone.model.as_deref().map(str::to_string),
        label: phone.label.as_deref().map(str::to_string),
        variables: json_value(&phone.variables),
        http_user: phone.http_user.as_deref().map(str::to_string),
        has_http_password: phone.http_password.is_some(),
        lines: lines.iter().map(|l| line_view(l)).collect(),
        updated_at: phone.updated_at,
        etag: phone_etag(phone, &lines),
    }
}

fn line_view(l: &Line) -> LineView {
    LineView {
        position: l.position,
        extension: l.extension.to_string(),
        display_name: l.display_name.to_string(),
        auth_user: l.auth_user.to_string(),
        has_password: l.password.is_some(),
        registrar: l.registrar.to_string(),
        proxy: l.proxy.as_deref().map(str::to_string),
        settings: json_value(&l.settings),
    }
}

/// A list query's filters, normalized once rather than per phone scanned.
struct PhoneFilter {
    tenant: Option<i64>,
    family: Option<Family>,
    /// Hex digits, lowercase, no separators.
    mac_prefix: String,
    model: Option<String>,
    /// The search text, lowercase.
    q: Option<String>,
    /// The search text as MAC digits, when it is one (hex and separators).
    q_mac: Option<String>,
}

impl PhoneFilter {
    fn new(
        query: &PhoneQuery,
        tenant: Option<i64>,
        family: Option<Family>,
        mac_prefix: String,
    ) -> Self {
        let q = query
            .q
            .as_deref()
            .map(str::to_lowercase)
            .filter(|q| !q.is_empty());
        let q_mac = q
            .as_deref()
            .map(|q| q.replace([':', '-', '.'], ""))
            .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_hexdigit()));
        PhoneFilter {
            tenant,
            family,
            mac_prefix,
            model: query.model.clone(),
            q,
            q_mac,
        }
    }

    fn matches(&self, state: &MirrorState, phone: &Phone) -> bool {
        // The caller walks the tenant's own phones already; this keeps the
        // filter whole for a global list too.
        if self.tenant.is_some_and(|t| t != phone.tenant_id) {
            return false;
        }
        let mac = phone.mac.to_string();
        if self.family.is_some_and(|f| f != phone.family)
            || !mac.starts_with(&self.mac_prefix)
            || self
                .model
                .as_deref()
                .is_some_and(|m| phone.model.as_deref() != Some(m))
        {
            return false;
        }
        let Some(q) = &self.q else {
            return true;
        };
        self.q_mac
            .as_deref()
            .is_some_and(|digits| mac.contains(digits))
            || phone
                .label
                .as_deref()
                .is_some_and(|l| l.to_lowercase().contains(q.as_str()))
            || state.lines_of(phone.id).iter().any(|l| {
                l.extension.to_lowercase().contains(q.as_str())
                    || l.display_name.to_lowercase().contains(q.as_str())
            })
    }
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

/// Turns a request body into the mutation's input, keeping stored secrets
/// the body leaves out.
fn input(
    state: &AdminState,
    tenant: &Tenant,
    mac: Mac,
    body: PhoneBody,
    before: Option<(&Phone, &[Arc<Line>])>,
    stored: Option<(&Phone, &[Arc<Line>])>,
) -> Result<PhoneInput, ApiError> {
    let family: Family = parse_name(&body.family)?;
    let open = |purpose, sealed: &dialtone_sync::Sealed| {
        state
            .key
            .open(purpose, sealed)
            .map_err(|e| ApiError::internal(format!("cannot open a stored secret of {mac}: {e}")))
    };
    check_text(&body, stored, |sealed| open(Purpose::LinePassword, sealed))?;
    let kept = |given: Option<String>,
                stored: Option<&dialtone_sync::Sealed>,
                purpose|
     -> Result<Option<String>, ApiError> {
        match (given, stored) {
            (Some(given), _) if given.is_empty() => Ok(None),
            (Some(given), _) => Ok(Some(given)),
            (None, Some(sealed)) => open(purpose, sealed).map(Some),
            (None, None) => Ok(None),
        }
    };
    let http_password_given = body.http_password.is_some();
    let http_password = kept(
        body.http_password,
        before.and_then(|(p, _)| p.http_password.as_ref()),
        Purpose::DeviceHttpPassword,
    )?;
    let mut lines = Vec::with_capacity(body.lines.len());
    for (index, line) in body.lines.into_iter().enumerate() {
        let position = index as i32 + 1;
        if line.extension.trim().is_empty() || line.registrar.trim().is_empty() {
            return Err(ApiError::invalid(format!(
                "line {position}: extension and registrar are required"
            )));
        }
        let stored = before
            .and_then(|(_, lines)| lines.iter().find(|l| l.position == position))
            .and_then(|l| l.password.as_ref());
        lines.push(LineInput {
            auth_user: line.auth_user.unwrap_or_else(|| line.extension.clone()),
            // Blank too, as an import's empty cell: a phone's screen
            // showing nothing for its line helps nobody.
            display_name: line
                .display_name
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| line.extension.clone()),
            extension: line.extension,
            password: kept(line.password, stored, Purpose::LinePassword)?,
            registrar: line.registrar,
            proxy: line.proxy.filter(|p| !p.is_empty()),
            settings: object_text(line.settings, &format!("line {position} settings"))?,
        });
    }
    let http_user = body.http_user.filter(|u| !u.is_empty());
    // The password is kept when left out, the user is not: an edit that
    // left both out would have kept the password alone, and opened the
    // phone. Said so, with how to remove the credentials.
    if http_user.is_none() && http_password.is_some() && !http_password_given {
        return Err(ApiError::invalid(
            "http_user: required while the phone has an HTTP password; send it again, \
             or remove the credentials with \"http_password\": \"\"",
        ));
    }
    checks::http_login(http_user.as_deref(), http_password.as_deref())
        .map_err(|r| ApiError::invalid(r.reason))?;
    let variables = object_text(body.variables, "variables")?;
    // Per phone, not only per object: 48 lines of 64 KiB settings each made
    // a phone of 2 MiB (the request body's cap), 40 GB at the phones quota
    // on every node, and a page of them far more once parsed for a list.
    let json_bytes = variables.len() + lines.iter().map(|l| l.settings.len()).sum::<usize>();
    state
        .quotas
        .check(tenant, Quota::PhoneJsonBytes, json_bytes as u64)?;
    Ok(PhoneInput {
        tenant: body.tenant,
        mac,
        family,
        model: body.model.filter(|m| !m.is_empty()),
        label: body.label.filter(|l| !l.is_empty()),
        variables,
        http_user,
        http_password,
        lines,
    })
}

/// The body as sent: a secret it leaves out is kept as stored, not
/// checked again. A value sent back as it is stored (the phone's now, the
/// line's at the same position) passes the checks newer than the stored
/// row ([`unchanged`]).
fn check_text(
    body: &PhoneBody,
    stored: Option<(&Phone, &[Arc<Line>])>,
    open: impl Fn(&dialtone_sync::Sealed) -> Result<String, ApiError>,
) -> Result<(), ApiError> {
    use unchanged::{as_checked, shown, sip_user};
    fn kept<'a>(
        sent: Option<&'a str>,
        stored: Option<&str>,
        newer: fn(char) -> bool,
    ) -> Option<std::borrow::Cow<'a, str>> {
        sent.map(|sent| as_checked(sent, stored, newer))
    }
    let label = kept(
        body.label.as_deref(),
        stored.and_then(|(p, _)| p.label.as_deref()),
        shown,
    );
    let phone = checks::PhoneText {
        model: body.model.as_deref(),
        label: label.as_deref(),
        http_user: body.http_user.as_deref(),
        http_password: body.http_password.as_deref(),
    };
    phone.check().map_err(|r| ApiError::invalid(r.reason))?;
    for (index, l) in body.lines.iter().enumerate() {
        let was =
            stored.and_then(|(_, lines)| (lines.iter()).find(|s| s.position == index as i32 + 1));
        // Opened only for a password the check would refuse: most
        // edits send none, or one with nothing to waive.
        let password = match (l.password.as_deref(), was.and_then(|w| w.password.as_ref())) {
            (Some(sent), Some(sealed)) if sent.chars().any(shown) => Some(open(sealed)?),
            _ => None,
        };
        let extension = as_checked(&l.extension, was.map(|w| &*w.extension), sip_user);
        let registrar = as_checked(&l.registrar, was.map(|w| &*w.registrar), shown);
        let display_name = kept(
            l.display_name.as_deref(),
            was.map(|w| &*w.display_name),
            shown,
        );
        let auth_user = kept(l.auth_user.as_deref(), was.map(|w| &*w.auth_user), sip_user);
        let sent_password = kept(l.password.as_deref(), password.as_deref(), shown);
        let proxy = kept(
            l.proxy.as_deref(),
            was.and_then(|w| w.proxy.as_deref()),
            shown,
        );
        let line = checks::LineText {
            extension: &extension,
            display_name: display_name.as_deref(),
            auth_user: auth_user.as_deref(),
            password: sent_password.as_deref(),
            registrar: &registrar,
            proxy: proxy.as_deref(),
        };
        line.check().map_err(|r| ApiError::invalid(r.reason))?;
    }
    Ok(())
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

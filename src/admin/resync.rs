//! Resyncs: asking running phones to fetch their configuration again (a
//! SIP NOTIFY through the platform's proxy, `crate::resync`), and what
//! became of each. Asking is a write (tenant-admin of the phone's tenant,
//! or global-admin) and leaves one audit row when it queues anything;
//! reading is tenant-read.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dialtone_sync::{Family, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::error::{optional_body, ApiBytes, ApiError, ApiPath, ApiQuery, ErrorBody};
use super::phones::{parse_mac, phone_for, Access};
use super::{off_workers, page_size, parse_name, write, AdminState, Change, Principal};
use crate::resync::queue::Full;
use crate::resync::track::Resync;
use crate::resync::{plan, Enqueued, Job, ResyncService, SameTarget, SipDomains, Spaced};

/// Most MACs one tenant resync may name.
const MAX_MACS: usize = 10_000;

#[derive(Serialize, ToSchema)]
pub struct ResyncOne {
    pub resync: Resync,
}

#[derive(Serialize, ToSchema)]
pub struct Skipped {
    pub mac: String,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct ResyncMany {
    /// Resyncs this request queued, as its audit row counts them.
    pub queued: usize,
    /// Phones already waiting from an earlier request: in `resyncs` with
    /// that resync, not counted in `queued`.
    pub already_waiting: usize,
    pub resyncs: Vec<Resync>,
    /// Phones matched but not resynced (no line, a family without NOTIFY,
    /// a registrar outside the tenant's SIP domains, no room left in the
    /// tenant's share of the queue, the phone or its line-1 address sent
    /// one less than `resync.phone_spacing_s` ago (longer after failures),
    /// another phone's resync to the same line-1 address waiting).
    pub skipped: usize,
    /// The first [`LISTED_SKIPS`] of them, in MAC order within each
    /// reason's kind: a tenant of 200,000 phones past its queue's room
    /// would otherwise get a row for each (22 MB).
    pub skipped_reasons: Vec<Skipped>,
    /// More were skipped than `skipped_reasons` lists.
    pub skipped_truncated: bool,
}

/// How many skipped phones an answer names.
const LISTED_SKIPS: usize = 1_000;

/// Skipped phones counted, and the first [`LISTED_SKIPS`] named: a reason
/// is worded only for a phone that is listed.
#[derive(Default)]
struct Skips {
    count: usize,
    listed: Vec<Skipped>,
}

impl Skips {
    fn add(&mut self, mac: &Mac, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.listed.len() < LISTED_SKIPS {
            self.listed.push(Skipped {
                mac: mac.to_string(),
                reason: reason(),
            });
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ResyncList {
    pub resyncs: Vec<Resync>,
}

/// Every field narrows; none given: every phone of the tenant.
#[derive(Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantResyncBody {
    pub family: Option<String>,
    pub model: Option<String>,
    /// Only these phones (each must be the tenant's).
    pub macs: Option<Vec<String>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResyncQuery {
    /// Only this tenant's resyncs (slug).
    pub tenant: Option<String>,
    /// Only this phone's.
    pub mac: Option<String>,
    pub limit: Option<usize>,
}

fn service(state: &AdminState) -> Result<&ResyncService, ApiError> {
    state.resync.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "resync is not configured",
        )
    })
}

fn refusal(service: &ResyncService, full: Full) -> Response {
    match full {
        Full::Tenant => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "too many resyncs of this tenant are waiting; try again when they are sent",
        )
        .into_response(),
        Full::Global => {
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many resyncs are waiting; try again later",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&service.retry_after().to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}

/// A phone (or its line-1 address) sent a resync too recently: 429, with
/// when to ask again.
fn too_soon(mac: &Mac, spaced: Spaced) -> Response {
    too_soon_because(mac, spaced.to_string(), spaced.left_s)
}

fn too_soon_because(mac: &Mac, reason: String, retry_after_s: u64) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_soon",
        format!("phone {mac}: {reason}"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

/// Another phone's resync to the same line-1 address waits: 429, asked
/// again once that one has gone and the address's spacing has passed.
fn same_target(service: &ResyncService, mac: &Mac, other: &SameTarget) -> Response {
    too_soon_because(mac, other.to_string(), service.spacing_s().max(1))
}

/// Holds places for `jobs`, writes the audit row `change` makes of what
/// that queues, then lets them be sent: the row counts what was queued,
/// and a request whose row cannot be written (a token revoked meanwhile,
/// the database down) sends nothing. A request that queues nothing new
/// leaves no row: each phone was already waiting, sent one too recently,
/// or past the tenant's room.
async fn queue<'a>(
    state: &AdminState,
    principal: &Principal,
    tenant: dialtone_sync::Id,
    jobs: Vec<Job>,
    change: impl FnOnce(&Enqueued) -> Change<'a>,
) -> Result<Result<Enqueued, Response>, ApiError> {
    let service = service(state)?;
    let pending = match service.enqueue(&state.mirror, tenant, jobs) {
        Ok(pending) => pending,
        Err(full) => return Ok(Err(refusal(service, full))),
    };
    if !pending.enqueued().queued.is_empty() {
        // Released as soon as the row is committed: an audit row is not in
        // the mirror, so nothing waits for it there, and a client gone
        // during that wait withdrew resyncs its committed row counted.
        write(state, principal, change(pending.enqueued()), Vec::new()).await?;
    }
    Ok(Ok(pending.release()))
}

/// The 503 of the routes that ask for resyncs, as the document words it.
const NOT_SENT: &str = "`unavailable`: resync is not configured on this node; or `busy` \
    (Retry-After): the other tenants' resyncs leave no room in the queue.";

/// MACs a tenant resync's audit row lists, at most (it counts them all).
const MACS_IN_AUDIT: usize = 100;

/// Why a phone past the tenant's room in the queue was not queued.
const DEFERRED: &str =
    "not queued: the tenant's resync queue is full; ask again once these are sent";

#[utoipa::path(post, operation_id = "resync_phone", path = "/v1/phones/{mac}/resync", tag = "resync",
    params(("mac" = String, Path, pattern = r"^[0-9A-Fa-f:.-]{12,17}$", example = "0015654aa937")),
    responses((status = 202, body = ResyncOne), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, description = "the tenant's queue is full; or the phone, or its line-1 address, was sent a resync less than `resync.phone_spacing_s` ago (longer after failures in a row), or another phone's resync to that address waits (`too_soon`, Retry-After)", body = ErrorBody),
        (status = 503, description = NOT_SENT, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resync_phone(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(mac): ApiPath<String>,
) -> Result<Response, ApiError> {
    service(&state)?;
    let mac = parse_mac(&mac)?;
    let job = {
        let mirror = state.mirror.load();
        let phone = phone_for(&mirror, &principal, &mac, Access::Write)?;
        let domains = mirror
            .tenant(phone.tenant_id)
            .map(|t| SipDomains::of(t))
            .unwrap_or_default();
        plan(&mirror, phone, &domains)
            .map_err(|reason| ApiError::invalid(format!("phone {mac}: {reason}")))?
    };
    let (tenant, slug) = (job.tenant_id, job.tenant.clone());
    if let Some(spaced) = service(&state)?.spaced(&job) {
        return Ok(too_soon(&mac, spaced));
    }
    let change = Change {
        action: "resync",
        entity: "phone",
        key: mac.to_string(),
        tenant: Some(&slug),
        detail: json!({ "event": job.event, "target": job.target }),
    };
    match queue(&state, &principal, tenant, vec![job], |_| change).await? {
        Ok(mut done) => {
            if let Some((_, spaced)) = done.spaced.pop() {
                return Ok(too_soon(&mac, spaced));
            }
            if let Some((_, other)) = done.same_target.pop() {
                return Ok(same_target(service(&state)?, &mac, &other));
            }
            let resync = (done.queued.pop())
                .or_else(|| done.waiting.pop())
                .ok_or_else(|| ApiError::internal("resync not queued"))?;
            Ok((StatusCode::ACCEPTED, axum::Json(ResyncOne { resync })).into_response())
        }
        Err(refused) => Ok(refused),
    }
}

#[utoipa::path(post, operation_id = "resync_tenant", path = "/v1/tenants/{slug}/resync", tag = "resync",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")), request_body(content = Option<TenantResyncBody>),
    responses((status = 202, body = ResyncMany), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, description = "`busy`: the tenant's queue has no room at all.", body = ErrorBody),
        (status = 503, description = NOT_SENT, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resync_tenant(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    service(&state)?;
    let body: TenantResyncBody = optional_body(&body)?;
    // Planning walks and sorts the tenant's phones (all of them, when none
    // are named): off the async workers, as the lists are.
    let (tenant, jobs, mut skipped) = {
        let (slug, body, caller) = (slug.clone(), body.clone(), principal.clone());
        let mirror = state.mirror.load();
        off_workers(&state, &principal, move || -> Result<_, ApiError> {
            let principal = caller;
            let what = format!("tenant {slug}");
            let tenant = mirror
                .tenant_by_slug(&slug)
                .ok_or_else(|| ApiError::not_found(&what))?
                .clone();
            principal.write(tenant.id, &what)?;
            let family: Option<Family> = body.family.as_deref().map(parse_name).transpose()?;
            let model = body.model.as_deref().filter(|m| !m.is_empty());
            let wanted: Option<BTreeSet<Mac>> = match &body.macs {
                None => None,
                Some(macs) if macs.len() > MAX_MACS => {
                    return Err(ApiError::invalid(format!("macs: at most {MAX_MACS}")))
                }
                Some(macs) => Some(
                    macs.iter()
                        .map(|m| parse_mac(m))
                        .collect::<Result<_, _>>()?,
                ),
            };
            let phones: Vec<_> = match &wanted {
                // Each named phone must be this tenant's: any other is "not
                // found", whoever holds it.
                Some(macs) => macs
                    .iter()
                    .map(|mac| {
                        mirror
                            .phone_by_mac(mac)
                            .filter(|p| p.tenant_id == tenant.id)
                            .ok_or_else(|| ApiError::not_found(format!("phone {mac}")))
                    })
                    .collect::<Result<_, _>>()?,
                None => {
                    let mut all: Vec<_> = mirror.phones_of(tenant.id).collect();
                    all.sort_by_key(|p| p.mac);
                    all
                }
            };
            let domains = SipDomains::of(&tenant);
            let (mut jobs, mut skipped) = (Vec::new(), Skips::default());
            for phone in phones {
                if family.is_some_and(|f| f != phone.family)
                    || model.is_some_and(|m| phone.model.as_deref() != Some(m))
                {
                    continue;
                }
                match plan(&mirror, phone, &domains) {
                    Ok(job) => jobs.push(job),
                    Err(reason) => skipped.add(&phone.mac, || reason),
                }
            }
            Ok((tenant, jobs, skipped))
        })
        .await??
    };
    let planned_out = skipped.count;
    let change = |done: &Enqueued| {
        let queued: Vec<&str> = (done.queued.iter())
            .take(MACS_IN_AUDIT)
            .map(|r| r.mac.as_str())
            .collect();
        Change {
            action: "resync",
            entity: "tenant",
            key: slug.clone(),
            tenant: Some(&slug),
            detail: json!({
                "queued": done.queued.len(),
                "queued_macs": queued,
                "already_waiting": done.waiting.len(),
                "skipped": planned_out + done.spaced.len() + done.same_target.len()
                    + done.deferred.len(),
                "spaced": done.spaced.len(),
                "same_target": done.same_target.len(),
                "deferred": done.deferred.len(),
                "family": body.family, "model": body.model,
                "named": body.macs.as_ref().map(Vec::len),
            }),
        }
    };
    match queue(&state, &principal, tenant.id, jobs, change).await? {
        Ok(done) => {
            for job in &done.deferred {
                skipped.add(&job.mac, || DEFERRED.into());
            }
            for (job, spaced) in &done.spaced {
                skipped.add(&job.mac, || spaced.to_string());
            }
            for (job, other) in &done.same_target {
                skipped.add(&job.mac, || other.to_string());
            }
            let (queued, already_waiting) = (done.queued.len(), done.waiting.len());
            let mut resyncs = done.waiting;
            resyncs.extend(done.queued);
            Ok((
                StatusCode::ACCEPTED,
                axum::Json(ResyncMany {
                    queued,
                    already_waiting,
                    resyncs,
                    skipped: skipped.count,
                    skipped_truncated: skipped.count > skipped.listed.len(),
                    skipped_reasons: skipped.listed,
                }),
            )
                .into_response())
        }
        Err(refused) => Ok(refused),
    }
}

#[utoipa::path(get, operation_id = "resync_list", path = "/v1/resyncs", tag = "resync", params(ResyncQuery),
    responses((status = 200, body = ResyncList), (status = 404, body = ErrorBody),
        (status = 503, description = "`unavailable`: resync is not configured on this node.", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ResyncQuery>,
) -> Result<Response, ApiError> {
    let service = service(&state)?;
    let tenant = match query.tenant.as_deref() {
        None => principal.tenant_filter(),
        Some(slug) => {
            let mirror = state.mirror.load();
            let what = format!("tenant {slug}");
            let tenant = mirror
                .tenant_by_slug(slug)
                .ok_or_else(|| ApiError::not_found(&what))?;
            principal.read(tenant.id, &what)?;
            Some(tenant.id)
        }
    };
    let mac = query.mac.as_deref().map(parse_mac).transpose()?;
    // The table lists only `tenant`'s entries when one is given.
    let resyncs = service.list(tenant, page_size(query.limit), |e| {
        mac.is_none_or(|m| m == e.mac)
    });
    Ok(axum::Json(ResyncList { resyncs }).into_response())
}

//! `GET /v1/tenants/{slug}/fleet`: a tenant's phones at a glance, for the
//! admin page's fleet view. Phones come from the mirror; what they last
//! did comes from provisioning history, read per MAC (see
//! `Store::fleet_history`) for at most `PHONE_LIMIT` phones, so one request
//! costs a bounded number of short indexed reads however big the tenant.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use dialtone_sync::store::BootRecord;
use dialtone_sync::{now_millis, trusted_until, Mac, Phone};
use dialtone_tftp::guard::{listed_in, source_key, source_text, Guard};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::directory::tenant_of;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::{off_workers, AdminState, Principal};

/// Phones whose history one request reads; the rest are counted only.
const PHONE_LIMIT: usize = 20_000;
/// Rows per list in the answer: a page shows a few hundred, not a fleet.
const LIST_LIMIT: usize = 500;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FleetParams {
    /// A phone not seen for this many days is listed in `not_seen` (1–365, default 7).
    pub days: Option<i64>,
    /// Hours of `boots_per_hour`, ending with the current one (1–168, default 72).
    pub hours: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelCount {
    pub family: String,
    /// As configured, else as the phone last said in its User-Agent.
    pub model: Option<String>,
    /// From the latest fetch's User-Agent; null if never seen.
    pub firmware: Option<String>,
    pub phones: usize,
}

#[derive(Serialize, ToSchema)]
pub struct NotSeen {
    pub mac: String,
    pub model: Option<String>,
    /// The latest fetch (ms), or null if the phone never fetched a file.
    pub last_seen: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct HourCount {
    /// Start of the hour, ms since the epoch.
    pub hour: i64,
    pub boots: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Failing {
    pub mac: String,
    pub at: i64,
    /// `not_found`, `family_mismatch` (its own file was asked for by a
    /// User-Agent of another family than the phone's record names, which
    /// the MAC's vendor prefix names too: correct the record), `auth`, `banned`, `render_error`, `busy`, `refused`,
    /// `error`, or a TFTP transfer's end (`client_refused`, `stalled`,
    /// `too_slow`, `client_gone`). `banned`: the source of its latest
    /// fetch is banned on the node that answered, outside the tenant's
    /// `provisioning_networks`, and the phone has not fetched its own
    /// files from there on that node (requests a ban refuses write no
    /// history, so this is that node's memory, now).
    pub outcome: String,
    /// What the history recorded, or for `banned` which source is.
    pub reason: String,
    /// The address the latest fetch came from, as its history line has
    /// it: a refusal anyone who knows the MAC can cause (another family's
    /// User-Agent, say) is told from the phone's own by where it came from.
    pub source: String,
    pub protocol: String,
    pub file: String,
}

#[derive(Serialize, ToSchema)]
pub struct FleetView {
    pub tenant: String,
    pub days: i64,
    pub hours: i64,
    /// The tenant's phones.
    pub phones: usize,
    /// Phones whose history was read (all, unless `truncated`).
    pub examined: usize,
    /// More phones than one request reads: the figures cover `examined`.
    pub truncated: bool,
    pub models: Vec<ModelCount>,
    /// Never seen first, then the longest unseen; at most 500.
    pub not_seen: Vec<NotSeen>,
    pub not_seen_total: usize,
    /// Every hour of the window, oldest first, empty hours as 0.
    pub boots_per_hour: Vec<HourCount>,
    /// Phones whose latest fetch failed, newest first; at most 500.
    pub failing: Vec<Failing>,
    pub failing_total: usize,
}

fn bounded(value: Option<i64>, default: i64, max: i64, name: &str) -> Result<i64, ApiError> {
    let value = value.unwrap_or(default);
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "{name} must be between 1 and {max}, not {value}"
        )))
    }
}

/// The short class of a recorded outcome and its reason; `None` for a
/// success. The history keeps the provisioning error's text, so the class
/// is read back from it.
fn failure(outcome: &str) -> Option<(&'static str, String)> {
    if outcome == "ok" {
        return None;
    }
    if outcome == "not-found" || outcome == "not_found" {
        return Some(("not_found", "no such file for this phone".into()));
    }
    if let Some(reason) = outcome.strip_prefix("not-found: ") {
        let class = if reason.starts_with(dialtone_tftp::FAMILY_MISMATCH) {
            "family_mismatch"
        } else {
            "not_found"
        };
        return Some((class, reason.to_string()));
    }
    // A TFTP transfer's end, as its history line says it. Cut by a
    // node's shutdown, or given up for another file the phone asked for,
    // says nothing of the phone: it asks again.
    for (prefix, class) in [
        ("client-error", "client_refused"),
        ("stalled", "stalled"),
        ("too-slow", "too_slow"),
        ("client-gone", "client_gone"),
        ("shutdown", ""),
        ("replaced", ""),
    ] {
        if outcome.starts_with(prefix) {
            return (!class.is_empty()).then(|| (class, outcome.to_string()));
        }
    }
    let reason = outcome.strip_prefix("error: ").unwrap_or(outcome);
    let class = if reason.starts_with("source banned") {
        "banned"
    } else if reason.starts_with("device authentication") {
        "auth"
    } else if reason.starts_with("template") || reason.starts_with("cannot render") {
        "render_error"
    } else if reason.starts_with("too many renders") {
        "busy"
    } else if reason.starts_with("refused path") {
        "refused"
    } else {
        "error"
    };
    Some((class, reason.to_string()))
}

/// `banned` when the source of `last` is banned on this node now and the
/// ban does not let `phone`'s own files through there: it fetched them
/// from that source on this node before, or the source is in its
/// tenant's own networks (`site`), its office. A refused request writes
/// no history, so without this such a phone looked as fine as its last
/// fetch. Only a source the phone is known to have used: a TFTP request
/// that was refused may have had any source written in, and a tenant
/// naming its own phone from an address would learn whether that
/// address (another tenant's office) is banned.
fn banned_here(
    guard: &Guard,
    site: &[IpNet],
    phone: &Phone,
    last: &BootRecord,
) -> Option<(&'static str, String)> {
    let proven = match last.protocol.as_str() {
        "http" | "https" => true,
        "tftp" => last.outcome == "ok",
        _ => false,
    };
    let source: IpAddr = last.remote_ip.parse().ok()?;
    if !proven
        || !guard.is_banned(source)
        || guard.known().knows_phone(source, phone)
        || listed_in(site, source)
    {
        return None;
    }
    Some((
        "banned",
        format!(
            "its last source, {}, is banned on this node after repeated misses from there, \
             and until the ban ends the phone gets no files there",
            source_text(source_key(source))
        ),
    ))
}

/// The tenant's `provisioning_networks`, read as the provisioning server
/// reads them (entries that are not networks skipped).
fn site_networks(settings: &str) -> Vec<IpNet> {
    if !settings.contains("provisioning_networks") {
        return Vec::new();
    }
    let Ok(settings) = serde_json::from_str::<serde_json::Value>(settings) else {
        return Vec::new();
    };
    let listed = settings
        .get("provisioning_networks")
        .and_then(serde_json::Value::as_array);
    listed
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .filter_map(dialtone_tftp::tftp::parse_network)
        .collect()
}

#[utoipa::path(get, operation_id = "tenants_fleet", path = "/v1/tenants/{slug}/fleet", tag = "tenants",
    params(("slug" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "acme"), FleetParams),
    responses((status = 200, body = FleetView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn fleet(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(slug): ApiPath<String>,
    ApiQuery(params): ApiQuery<FleetParams>,
) -> Result<Response, ApiError> {
    let days = bounded(params.days, 7, 365, "days")?;
    let hours = bounded(params.hours, 72, 168, "hours")?;
    let mirror = state.mirror.load();
    let tenant = tenant_of(&mirror, &principal, &slug, false)?;
    // A large tenant's phones are sorted off the async workers, as the
    // lists are.
    let id = tenant.id;
    let (total, phones) = off_workers(&state, &principal, move || {
        let mut phones: Vec<_> = mirror.phones_of(id).cloned().collect();
        let total = phones.len();
        phones.sort_unstable_by_key(|p| p.mac);
        phones.truncate(PHONE_LIMIT);
        (total, phones)
    })
    .await?;

    let now = now_millis();
    let first_hour = (now / HOUR - (hours - 1)) * HOUR;
    let macs: Vec<Mac> = phones.iter().map(|p| p.mac).collect();
    let history = state
        .store
        .fleet_history(tenant.id, &macs, first_hour)
        .await?;
    let latest: HashMap<String, BootRecord> = history
        .latest
        .into_iter()
        .map(|r| (r.mac.clone(), r))
        .collect();

    let guard = state.provisioner.guard();
    let site = site_networks(&tenant.settings);
    let mut models = BTreeMap::<(String, Option<String>, Option<String>), usize>::new();
    let mut not_seen = Vec::new();
    let mut failing = Vec::new();
    let cutoff = now - days * DAY;
    let trusted = trusted_until(now);
    for phone in &phones {
        let mac = phone.mac.to_string();
        let last = latest.get(&mac);
        let model = phone
            .model
            .as_deref()
            .map(str::to_string)
            .or_else(|| last.and_then(|l| l.model.clone()));
        let firmware = last.and_then(|l| l.firmware.clone());
        *models
            .entry((phone.family.as_str().to_string(), model.clone(), firmware))
            .or_default() += 1;
        // A latest fetch stamped past `trusted_until` (the store ranks
        // such rows last, so the phone has no other) says it fetched at
        // some time, not that it did within `days`.
        match last {
            Some(l) if l.at >= cutoff && l.at <= trusted => {}
            _ => not_seen.push(NotSeen {
                mac: mac.clone(),
                model,
                last_seen: last.map(|l| l.at),
            }),
        }
        let failed =
            last.and_then(|l| banned_here(guard, &site, phone, l).or_else(|| failure(&l.outcome)));
        if let (Some((class, reason)), Some(l)) = (failed, last) {
            failing.push(Failing {
                mac,
                at: l.at,
                outcome: class.into(),
                reason,
                source: l.remote_ip.clone(),
                protocol: l.protocol.clone(),
                file: l.file.clone(),
            });
        }
    }
    // Never seen (None) sorts before any time: those need a look first.
    not_seen.sort_by_key(|n| n.last_seen);
    failing.sort_by_key(|f| std::cmp::Reverse(f.at));
    let (not_seen_total, failing_total) = (not_seen.len(), failing.len());
    not_seen.truncate(LIST_LIMIT);
    failing.truncate(LIST_LIMIT);

    let counted: HashMap<i64, i64> = history.boots_per_hour.into_iter().collect();
    let boots_per_hour = (0..hours)
        .map(|i| {
            let hour = first_hour + i * HOUR;
            HourCount {
                hour,
                boots: counted.get(&hour).copied().unwrap_or(0),
            }
        })
        .collect();
    Ok(axum::Json(FleetView {
        tenant: tenant.slug.to_string(),
        days,
        hours,
        phones: total,
        examined: phones.len(),
        truncated: total > phones.len(),
        models: models
            .into_iter()
            .map(|((family, model, firmware), phones)| ModelCount {
                family,
                model,
                firmware,
                phones,
            })
            .collect(),
        not_seen,
        not_seen_total,
        boots_per_hour,
        failing,
        failing_total,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::failure;

    #[test]
    fn recorded_outcomes_are_classed() {
        assert_eq!(failure("ok"), None);
        assert_eq!(failure("not-found").unwrap().0, "not_found");
        let mismatch =
            failure("not-found: family mismatch: recorded as yealink, the User-Agent is poly")
                .unwrap();
        assert_eq!(mismatch.0, "family_mismatch");
        assert!(mismatch.1.contains("recorded as yealink"), "{mismatch:?}");
        assert_eq!(failure("error: source banned").unwrap().0, "banned");
        let (class, reason) = failure("error: template {mac}.cfg at 3:1: boom").unwrap();
        assert_eq!(
            (class, reason.as_str()),
            ("render_error", "template {mac}.cfg at 3:1: boom")
        );
        assert_eq!(failure("error: something new").unwrap().0, "error");
        let refused = failure("client-error 3 (disk full or allocation exceeded): \"full\"");
        assert_eq!(refused.unwrap().0, "client_refused");
        assert_eq!(
            failure("stalled: no acknowledgement within the retries")
                .unwrap()
                .0,
            "stalled"
        );
        assert_eq!(failure("shutdown: cut by the server's shutdown"), None);
        assert_eq!(failure("replaced: the client asked for another file"), None);
    }
}

//! Who may fetch a known phone's files, decided once per request from the
//! mirror state and phone the core already looked up.

use std::net::IpAddr;

use dialtone_sync::{MirrorState, Phone, Tenant};

use crate::provision::{Protocol, Request};

/// False means "answer as if the phone did not exist".
pub(crate) fn admitted(state: &MirrorState, phone: Option<&Phone>, request: &Request<'_>) -> bool {
    let Some(phone) = phone else { return true };
    // Credentials protect a phone over HTTP; TFTP cannot carry them, so
    // such a phone's files are not served over TFTP at all.
    if request.protocol == Protocol::Tftp && phone.http_user.is_some() {
        return false;
    }
    if !tenant_prefix_matches(state, request.path, phone) {
        return false;
    }
    match (request.remote, state.tenant(phone.tenant_id)) {
        (Some(remote), Some(tenant)) => network_allowed(tenant, remote),
        _ => true,
    }
}

/// `/{tenant}/{file}`: when the first folder names a tenant, the phone must
/// belong to it, so one tenant's URL never serves another's phone.
fn tenant_prefix_matches(state: &MirrorState, path: &str, phone: &Phone) -> bool {
    match path.trim_start_matches('/').split_once('/') {
        Some((first, _)) => state
            .tenant_by_slug(first)
            .is_none_or(|t| t.id == phone.tenant_id),
        None => true,
    }
}

/// A tenant may restrict its phones to source networks (tenant setting
/// `provisioning_networks`, a list of CIDRs or addresses).
fn network_allowed(tenant: &Tenant, remote: IpAddr) -> bool {
    // Most tenants have no list: skip parsing their settings on every fetch.
    if !tenant.settings.contains("provisioning_networks") {
        return true;
    }
    let Ok(serde_json::Value::Object(settings)) =
        serde_json::from_str::<serde_json::Value>(&tenant.settings)
    else {
        return true;
    };
    let Some(serde_json::Value::Array(networks)) = settings.get("provisioning_networks") else {
        return true;
    };
    let allowed = networks
        .iter()
        .filter_map(|n| n.as_str())
        .filter_map(|n| {
            n.parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| n.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
        })
        .any(|net| net.contains(&remote));
    if !allowed {
        tracing::info!(%remote, tenant = %tenant.slug, "fetch from outside the tenant's provisioning networks");
    }
    allowed
}

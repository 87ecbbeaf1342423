//! Who may fetch a known phone's files, decided once per request from the
//! mirror state and phone the core already looked up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, RwLock, Weak};

use dialtone_sync::{Id, MirrorState, Phone, Tenant};

mod refusal;
pub(crate) use refusal::Refusal;
use refusal::{family_mismatch, refuse_mismatch};

use crate::identify::{IdentifyError, Identity};
use crate::provision::{Protocol, Request};
use crate::tenant_networks::NetworkIndex;

/// Who a request is answered for, settled once in `decide` and read again
/// by `conclude` (history, misses, known pairs).
pub(crate) struct Decision {
    pub identity: Result<Identity, IdentifyError>,
    /// The phone whose MAC the request carries (path or User-Agent).
    pub named: Option<Arc<Phone>>,
    /// `named`, when admitted and of a family the file belongs to: the
    /// phone the answer is made for.
    pub served: Option<Arc<Phone>>,
    /// `named` was refused for a source its tenant's phones are not served
    /// from (outside its networks, or inside another tenant's site). Its
    /// tenant does not see such a fetch: a MAC is no secret, and a tenant
    /// that created a phone by another organization's device's MAC would
    /// read that device's office address, User-Agent and boot times.
    pub foreign: bool,
    /// The file name carries a MAC not answered for here: "not found".
    pub refused: bool,
    /// Why `named` was not served, for its history: the answer is "not
    /// found" whatever the reason.
    pub refusal: Option<Refusal>,
    /// A common file asked for with a MAC it is not answered for here: it
    /// gets the answer an unknown MAC gets, and costs a miss like one, so
    /// neither the answer nor its cost tells a known MAC from an unknown.
    pub blind: bool,
    /// A model-common or boot file for a model no phone here has and no
    /// stored template names (`models.rs`): "not found", and a miss.
    pub unmodeled: bool,
    /// A phone's own file in a spelling other than the one its render is
    /// cached under (`render_cache.rs`), from a source not known for the
    /// phone: rendered, and a miss.
    pub respelled: bool,
}

impl Decision {
    /// The phone whose own file (its MAC in the name) this request is.
    pub fn owner(&self) -> Option<&Arc<Phone>> {
        let own = self.identity.as_ref().is_ok_and(Identity::mac_in_path);
        self.served.as_ref().filter(|_| own)
    }

    /// The phone whose history this request belongs to: one it named in
    /// the file name (served or not), or the one a common file was made for.
    pub fn history_phone(&self) -> Option<&Arc<Phone>> {
        let own = self.identity.as_ref().is_ok_and(Identity::mac_in_path);
        if own {
            self.named.as_ref()
        } else {
            self.served.as_ref()
        }
    }
}

/// Admission first, for every file: a known phone outside its tenant's
/// networks, prefix or transport is answered exactly as an unknown MAC.
pub(crate) fn screen(
    state: &Arc<MirrorState>,
    sites: Option<&NetworkIndex>,
    identity: Result<Identity, IdentifyError>,
    named: Option<Arc<Phone>>,
    request: &Request<'_>,
) -> Decision {
    let mut refusal = None;
    let (served, refused, blind) = match &identity {
        Err(_) => (None, false, false),
        Ok(id) => {
            let served = named.clone().filter(|phone| {
                refusal = why_not(state, sites, id, phone, request);
                if let Some(Refusal::UserAgent(said)) = refusal {
                    refuse_mismatch(state, phone, said);
                }
                refusal.is_none()
            });
            if id.mac_in_path() {
                let refused = named.is_some() && served.is_none();
                (served, refused, false)
            } else {
                let blind = id.mac.is_some() && served.is_none();
                (served, false, blind)
            }
        }
    };
    // Only for refusals: a served phone was admitted from its own networks.
    let foreign = served.is_none()
        && named
            .as_ref()
            .is_some_and(|phone| !tenant_sees(state, sites, phone, request));
    Decision {
        identity,
        named,
        served,
        foreign,
        refused,
        blind,
        refusal,
        unmodeled: false,
        respelled: false,
    }
}

/// Whether `phone` is served this file for `request`, as [`screen`]
/// decides: a ban check for a phone at its tenant's site asks before the
/// rest of the decision is made.
pub(crate) fn admits(
    state: &Arc<MirrorState>,
    sites: Option<&NetworkIndex>,
    identity: &Result<Identity, IdentifyError>,
    phone: &Phone,
    request: &Request<'_>,
) -> bool {
    identity
        .as_ref()
        .is_ok_and(|id| why_not(state, sites, id, phone, request).is_none())
}

/// Why `phone` is not served `id` for `request`, or `None` when it is.
fn why_not(
    state: &Arc<MirrorState>,
    sites: Option<&NetworkIndex>,
    id: &Identity,
    phone: &Phone,
    request: &Request<'_>,
) -> Option<Refusal> {
    if !id.candidates.contains(&phone.family) {
        return Some(Refusal::OtherFamilysName);
    }
    if let Err(refusal) = admitted(state, sites, phone, request) {
        return Some(refusal);
    }
    family_mismatch(id, phone).map(Refusal::UserAgent)
}

/// An error means "answer as if the phone did not exist".
fn admitted(
    state: &Arc<MirrorState>,
    sites: Option<&NetworkIndex>,
    phone: &Phone,
    request: &Request<'_>,
) -> Result<(), Refusal> {
    // Credentials protect a phone over HTTP; TFTP cannot carry them, so
    // such a phone's files are not served over TFTP at all.
    if request.protocol == Protocol::Tftp && crate::device_auth::needs_credentials(phone) {
        return Err(Refusal::LoginOverTftp);
    }
    if !tenant_prefix_matches(state, request.path, phone) {
        return Err(Refusal::Unsaid);
    }
    // Without its tenant a phone's networks cannot be checked. Only a full
    // load read while a first import committed (rows written frozen, seen
    // beside an older snapshot's tenants) holds such a phone, until the
    // reload that import forces.
    let Some(tenant) = state.tenant(phone.tenant_id) else {
        return Err(Refusal::Unsaid);
    };
    match request.remote {
        None => Ok(()),
        Some(remote) => network_allowed(state, sites, tenant, remote).map_err(Refusal::Source),
    }
}

/// Whether a fetch from `request`'s source is one `phone`'s tenant may
/// see: from where its phones are served, whatever else refused it.
fn tenant_sees(
    state: &Arc<MirrorState>,
    sites: Option<&NetworkIndex>,
    phone: &Phone,
    request: &Request<'_>,
) -> bool {
    let Some(tenant) = state.tenant(phone.tenant_id) else {
        return false;
    };
    request
        .remote
        .is_none_or(|remote| where_from(state, sites, tenant, remote).is_ok())
}

/// `/{tenant}/{file}`: when the first folder names a tenant, the phone must
/// belong to it, so one tenant's URL never serves another's phone. The
/// folder is read as identification reads the path (`.` and empty
/// segments dropped, any case): a spelling identification accepts but
/// this check did not recognize as the tenant would skip the check.
fn tenant_prefix_matches(state: &MirrorState, path: &str, phone: &Phone) -> bool {
    // Identification already accepted this path, so this cannot fail; a
    // path it would refuse names no phone to serve either way.
    let Ok(segments) = crate::identify::sanitize_path(path) else {
        return false;
    };
    let [first, _, ..] = segments.as_slice() else {
        return true;
    };
    let folder = first.to_ascii_lowercase();
    // Phones fetch through vendor folders of their own (Cisco MPP's
    // `/Cisco/$PN/` fallback) and operators point them at `/yealink/`: a
    // tenant whose slug is such a name would otherwise refuse every other
    // tenant's phones there.
    if is_vendor_folder(&folder) {
        return true;
    }
    // Slugs are validated lower-case; the exact spelling is still tried
    // so a row that somehow escaped that check is not skipped either.
    let tenant = state
        .tenant_by_slug(&folder)
        .or_else(|| state.tenant_by_slug(first));
    tenant.is_none_or(|t| t.id == phone.tenant_id)
}

/// Folder names that belong to vendors, not tenants: every family's name
/// and the vendors' own spellings. `folder` is lower-case.
pub fn is_vendor_folder(folder: &str) -> bool {
    const VENDORS: [&str; 6] = [
        "cisco",
        "polycom",
        "linksys",
        "grandstream",
        "snom",
        "fanvil",
    ];
    VENDORS.contains(&folder)
        || dialtone_sync::Family::ALL
            .iter()
            .any(|family| family.as_str() == folder)
}

/// A tenant's phones are served inside its source networks (tenant
/// setting `provisioning_networks`, a list of CIDRs or addresses, set by
/// a global admin). A tenant without any has its phones served anywhere
/// but inside another tenant's site-sized network: a MAC is no secret,
/// and a phone created under one tenant by another organization's MAC
/// would otherwise get that tenant's configuration at the other's office
/// (unless the operator turned `sites_exclusive` off: `sites` is `None`).
fn network_allowed(
    state: &Arc<MirrorState>,
    sites: Option<&NetworkIndex>,
    tenant: &Arc<Tenant>,
    remote: IpAddr,
) -> Result<(), Barred> {
    let from = where_from(state, sites, tenant, remote);
    if from == Err(Barred::AnotherTenantsSite) {
        metrics::counter!("dialtone_provisioning_refused_total", "reason" => "another_tenants_network")
            .increment(1);
        static INSIDE_LOG: dialtone_sync::TenantLogLimit = dialtone_sync::TenantLogLimit::new();
        if let Some(skipped) = INSIDE_LOG.allow(tenant.id) {
            tracing::warn!(%remote, tenant = %tenant.slug, skipped, "a phone of a tenant without provisioning networks asked from inside another tenant's; not served (logged at most once a second per tenant)");
        }
    }
    // A forged UDP source can cause one of these per packet, naming any
    // tenant's phone: per tenant, so it hides no other tenant's line.
    static OUTSIDE_LOG: dialtone_sync::TenantLogLimit = dialtone_sync::TenantLogLimit::new();
    if from == Err(Barred::OutsideItsNetworks) {
        if let Some(skipped) = OUTSIDE_LOG.allow(tenant.id) {
            tracing::info!(%remote, tenant = %tenant.slug, skipped, "fetch from outside the tenant's provisioning networks (logged at most once a second per tenant)");
        }
    }
    from
}

/// Where a fetch comes from that a tenant's phones are not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Barred {
    OutsideItsNetworks,
    AnotherTenantsSite,
}

fn where_from(
    state: &Arc<MirrorState>,
    sites: Option<&NetworkIndex>,
    tenant: &Arc<Tenant>,
    remote: IpAddr,
) -> Result<(), Barred> {
    match provisioning_networks(tenant) {
        // As the site index and bans read it: a NAT64 phone of a global
        // IPv4 host is at that host's site.
        Some(networks) if crate::guard::listed_in(&networks, remote) => Ok(()),
        Some(_) => Err(Barred::OutsideItsNetworks),
        None if sites.is_some_and(|index| index.held_by_another(state, tenant.id, remote)) => {
            Err(Barred::AnotherTenantsSite)
        }
        None => Ok(()),
    }
}

/// The tenant's `provisioning_networks`, `None` when it sets none (or its
/// settings are not an object). Entries that are not networks are skipped.
/// Read once per version of the tenant's row: every fetch naming one of
/// its phones asks, and parsing the settings (up to 64 KiB of the tenant's
/// own JSON) each time let a tenant's fetches of its own cached file cost
/// the listener twenty times what another's did.
pub(crate) fn provisioning_networks(tenant: &Arc<Tenant>) -> Option<Arc<[ipnet::IpNet]>> {
    // Most tenants have no list: skip parsing their settings on every fetch.
    if !tenant.settings.contains("provisioning_networks") {
        return None;
    }
    type Parsed = (Weak<Tenant>, Option<Arc<[ipnet::IpNet]>>);
    static PARSED: LazyLock<RwLock<HashMap<Id, Parsed>>> = LazyLock::new(Default::default);
    // A `Weak` keeps its allocation, so an address that matches is this
    // version of the row, never a later one put where it was.
    let same = |(row, _): &Parsed| std::ptr::eq(row.as_ptr(), Arc::as_ptr(tenant));
    if let Some(entry) = PARSED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&tenant.id)
        .filter(|e| same(e))
    {
        return entry.1.clone();
    }
    let parsed = parse_networks(tenant).map(Arc::from);
    let mut memo = PARSED.write().unwrap_or_else(|e| e.into_inner());
    // Only global admins add tenants; deleted ones' entries go now and then.
    if memo.len() >= MEMO_TENANTS {
        memo.retain(|_, (row, _)| row.strong_count() > 0);
    }
    if memo.len() < MEMO_TENANTS {
        memo.insert(tenant.id, (Arc::downgrade(tenant), parsed.clone()));
    }
    parsed
}

/// Tenants whose parsed networks are kept, at most.
const MEMO_TENANTS: usize = 100_000;

fn parse_networks(tenant: &Tenant) -> Option<Vec<ipnet::IpNet>> {
    let Ok(serde_json::Value::Object(settings)) =
        serde_json::from_str::<serde_json::Value>(&tenant.settings)
    else {
        return None;
    };
    let Some(serde_json::Value::Array(networks)) = settings.get("provisioning_networks") else {
        return None;
    };
    Some(
        networks
            .iter()
            .filter_map(|n| n.as_str())
            .filter_map(crate::tftp::parse_network)
            .collect(),
    )
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;

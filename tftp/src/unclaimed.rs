//! Which fetches by unknown phones are worth telling an admin about, and
//! under which tenant: the one whose `provisioning_networks` hold the
//! source (when two tenants' do, neither), or, when the operator asks
//! for it, the unassigned list. The answer to the phone does not change.

use std::net::IpAddr;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use dialtone_sync::store::UNASSIGNED;
use dialtone_sync::unclaimed::{Sighting, UnclaimedSink};
use dialtone_sync::{Id, MirrorState};
use ipnet::IpNet;

use crate::admission::{provisioning_networks, Decision};
use crate::identify::FileKind;
use crate::provision::{Protocol, Request};

/// Every tenant network narrow enough to list phones, for one mirror state.
struct Networks {
    state: Weak<MirrorState>,
    by_prefix: Vec<(IpNet, Id)>,
}

pub(crate) struct Unclaimed {
    sink: UnclaimedSink,
    /// Record fetches from outside every tenant's networks too.
    anywhere: bool,
    networks: NetworkIndex,
}

/// Rebuilt when the mirror state changes; only misses read it.
#[derive(Default)]
struct NetworkIndex(ArcSwapOption<Networks>);

impl Unclaimed {
    pub(crate) fn new(sink: UnclaimedSink, anywhere: bool) -> Self {
        Unclaimed {
            sink,
            anywhere,
            networks: NetworkIndex::default(),
        }
    }

    /// Records the request if it is an unknown phone's fetch.
    pub(crate) fn note(
        &self,
        state: &Arc<MirrorState>,
        request: &Request<'_>,
        decision: &Decision,
    ) {
        let (Some(remote), Ok(id)) = (request.remote, &decision.identity) else {
            return;
        };
        // A MAC some tenant has is claimed, wherever it asks from.
        let (Some(mac), None) = (id.mac, &decision.named) else {
            return;
        };
        if request.protocol == Protocol::Render || id.kind == FileKind::LogUpload {
            return;
        }
        let tenant_id = match self.networks.tenant_of(state, remote) {
            Some(tenant) => tenant,
            None if self.anywhere => UNASSIGNED,
            None => return,
        };
        self.sink.record(Sighting {
            tenant_id,
            mac,
            family: id.family.map(|f| f.as_str()),
            model: id.model.clone(),
            firmware: id.firmware.clone(),
            source: remote,
            at: dialtone_sync::now_millis(),
        });
    }
}

impl NetworkIndex {
    /// The one tenant whose networks hold `remote`; none when another
    /// tenant's do too. Only the operator sets networks (a tenant's token
    /// cannot), but the rule holds for a slip too: a narrower one inside
    /// another tenant's is no claim to that tenant's phones: with
    /// "most specific wins", a tenant listing a /32 of a neighbour's /24
    /// would see (and could claim) the neighbour's new phones.
    fn tenant_of(&self, state: &Arc<MirrorState>, remote: IpAddr) -> Option<Id> {
        let networks = self.networks_for(state);
        let mut holders = networks
            .by_prefix
            .iter()
            .filter(|(net, _)| net.contains(&remote));
        let (_, tenant) = holders.clone().next()?;
        // Wide networks count as holders too: a tenant's /8 holding
        // another's /24 lists for neither, as two /24s would.
        let one_holder = holders.clone().all(|(_, other)| other == tenant);
        let narrow = holders.any(|(net, _)| narrow_enough(net));
        (one_holder && narrow).then_some(*tenant)
    }

    fn networks_for(&self, state: &Arc<MirrorState>) -> Arc<Networks> {
        if let Some(current) = self.0.load_full() {
            if std::ptr::eq(current.state.as_ptr(), Arc::as_ptr(state)) {
                return current;
            }
        }
        let mut by_prefix: Vec<(IpNet, Id)> = state
            .tenants()
            .filter_map(|t| Some((provisioning_networks(t)?, t.id)))
            .flat_map(|(nets, id)| nets.iter().map(|n| (n.trunc(), id)).collect::<Vec<_>>())
            .collect();
        by_prefix.sort_unstable();
        by_prefix.dedup();
        let built = Arc::new(Networks {
            state: Arc::downgrade(state),
            by_prefix,
        });
        self.0.store(Some(built.clone()));
        built
    }
}

/// A wide network would list phones booting at other organizations (their
/// addresses, MACs and models), so only a site-sized one (IPv4 /16, IPv6
/// /48 or narrower) lists any; networks set before they were the
/// operator's alone may still be a tenant's own.
fn narrow_enough(net: &IpNet) -> bool {
    match net {
        IpNet::V4(v4) => v4.prefix_len() >= 16,
        IpNet::V6(v6) => v6.prefix_len() >= 48,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_sync::{Cursor, Dataset, LoadedFrom, Meta, Mirror, Tenant};

    fn tenant(id: Id, networks: &[&str]) -> Tenant {
        Tenant {
            id,
            slug: format!("t{id}").into(),
            name: "T".into(),
            default_region: "US".into(),
            settings: serde_json::json!({ "provisioning_networks": networks })
                .to_string()
                .into(),
            updated_at: 1,
        }
    }

    #[test]
    fn only_a_source_no_other_tenant_holds_is_listed() {
        let mirror = Mirror::new();
        let tenants = vec![
            tenant(1, &["10.0.0.0/16", "11.0.0.0/8", "2001:db8::/32"]),
            tenant(2, &["10.0.1.0/24", "not a network"]),
            tenant(3, &["10.2.0.0/16"]),
            tenant(4, &["10.2.0.0/16", "10.2.0.9"]),
            tenant(6, &["10.5.0.0/16", "10.5.1.0/24"]),
            tenant(7, &["172.16.0.0/12"]),
            tenant(8, &["172.16.5.0/24"]),
            Tenant {
                settings: "{}".into(),
                ..tenant(5, &[])
            },
        ];
        let data = Dataset {
            tenants,
            ..Default::default()
        };
        mirror.reset(
            data,
            Cursor::default(),
            Meta::default(),
            LoadedFrom::Database,
        );
        let index = NetworkIndex::default();
        let state = mirror.load();
        let of = |ip: &str| index.tenant_of(&state, ip.parse().unwrap());
        // A narrower network inside another tenant's: neither.
        assert_eq!(of("10.0.1.3"), None);
        assert_eq!(of("10.0.3.1"), Some(1));
        // Wider than a site lists nothing.
        assert_eq!(of("11.3.0.1"), None);
        assert_eq!(of("2001:db8::1"), None);
        assert_eq!(of("172.17.0.1"), None);
        // But it still holds what it holds: a site inside another tenant's
        // wide network lists for neither.
        assert_eq!(of("172.16.5.1"), None);
        assert_eq!(of("10.2.0.1"), None);
        assert_eq!(of("10.2.0.9"), None);
        // A tenant's own networks may nest.
        assert_eq!(of("10.5.1.1"), Some(6));
        assert_eq!(of("192.0.2.1"), None);
        // Built once per mirror state.
        let first = index.0.load_full().unwrap();
        of("10.0.1.3");
        assert!(Arc::ptr_eq(&first, &index.0.load_full().unwrap()));
    }
}

//! Which fetches by unknown phones are worth telling an admin about, and
//! under which tenant: the one whose `provisioning_networks` hold the
//! source (when two tenants' do, neither), or, when the operator asks
//! for it, the unassigned list. The answer to the phone does not change.

use std::sync::Arc;

use dialtone_sync::store::UNASSIGNED;
use dialtone_sync::unclaimed::{Sighting, UnclaimedSink};
use dialtone_sync::MirrorState;

use crate::admission::Decision;
use crate::identify::FileKind;
use crate::provision::{Protocol, Request};
use crate::tenant_networks::NetworkIndex;

pub(crate) struct Unclaimed {
    sink: UnclaimedSink,
    /// Record fetches from outside every tenant's networks too.
    anywhere: bool,
    networks: Arc<NetworkIndex>,
}

impl Unclaimed {
    pub(crate) fn new(sink: UnclaimedSink, anywhere: bool, networks: Arc<NetworkIndex>) -> Self {
        Unclaimed {
            sink,
            anywhere,
            networks,
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

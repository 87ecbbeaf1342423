//! A queued resync is planned again when its turn comes. It may wait
//! minutes (a tenant's thousands drain at its own rate), and meanwhile a
//! global admin may give the SIP domain to another tenant, the phone may
//! be deleted or move to another tenant, or its tenant be deleted: sent
//! as planned, the NOTIFY would reach whoever holds that address of record
//! now. Only what the mirror allows at sending time goes out.

use std::sync::Arc;

use dialtone_sync::{Id, Mac, MirrorState, Tenant};

use super::track::Entry;
use super::{plan, Job, ResyncService, SipDomains};

/// A resync as the mirror allows it now.
pub(super) struct Current {
    pub job: Job,
    pub tenant: Arc<Tenant>,
}

/// `tenant`'s phone `mac` planned again from `state`, or why it is not
/// sent. The tenant that asked reads the reason, and the phone may be
/// another tenant's now: it says only that the phone is no longer this
/// tenant's, never where it went.
pub(super) fn recheck(state: &MirrorState, tenant: Id, mac: &Mac) -> Result<Current, String> {
    let Some(row) = state.tenant(tenant) else {
        return Err("not sent: the tenant was deleted after the resync was queued".into());
    };
    let phone = state
        .phone_by_mac(mac)
        .filter(|p| p.tenant_id == tenant)
        .ok_or("not sent: the phone was deleted or left the tenant after the resync was queued")?;
    let job =
        plan(state, phone, &SipDomains::of(row)).map_err(|reason| format!("not sent: {reason}"))?;
    Ok(Current {
        job,
        tenant: row.clone(),
    })
}

impl ResyncService {
    /// Resync `seq` planned again from the mirror; its entry then shows
    /// what is sent (the line may have changed within what is allowed).
    pub(super) fn replan(&self, seq: u64, entry: &Entry) -> Result<Current, String> {
        // Set by the first enqueue, so always there for a queued resync;
        // without it nothing can be checked, and nothing is sent.
        let Some(mirror) = self.inner.mirror.get() else {
            return Err("not sent: the phone's data could not be read".into());
        };
        let current = recheck(&mirror.load(), entry.tenant_id, &entry.mac)?;
        if let Some(e) = self.book().table.get_mut(seq) {
            e.view.target.clone_from(&current.job.target);
            e.view.event = current.job.event.to_string();
            e.view.family = current.job.family.to_string();
        }
        Ok(current)
    }
}

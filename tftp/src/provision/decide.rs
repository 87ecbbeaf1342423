//! A request's decision and its end: identification, the ban, admission,
//! device credentials and the caches before a render (`decide`), the miss
//! a refusal costs, and the history and known sources after (`conclude`).
//! One decision for both transports; `provision.rs` runs the render
//! between.

use std::sync::Arc;

use dialtone_sync::{MirrorState, Phone};

use crate::admission::{self, Decision};
use crate::error::ProvisionError;
use crate::files::Step;
use crate::guard;
use crate::identify::{identify, FileKind, IdentifyError, Identity};
use crate::outcome::{count_request, outcome_label};

use super::*;

impl Provisioner {
    /// Everything but the render: identification, the ban (which a phone
    /// known at that source passes for its own files), admission, device
    /// credentials, the caches. One decision for both entry points.
    pub(super) fn decide(
        &self,
        state: &Arc<MirrorState>,
        request: &Request<'_>,
    ) -> Result<(Decision, Step), ProvisionError> {
        let identity =
            identify(request.path, request.user_agent).or_else(|e| self.unnamed_static(request, e));
        let named = identity
            .as_ref()
            .ok()
            .and_then(|id| id.mac)
            .and_then(|mac| state.phone_by_mac(&mac))
            .cloned();
        let banned = request.remote.filter(|ip| self.guard.is_banned(*ip));
        let sites = self.options.sites_exclusive.then_some(&*self.networks);
        if let Some(ip) = banned {
            // The source is the phone's tenant's site (its office): new
            // phones' and stale passwords' misses there must not lock out
            // the office's phones that have not fetched from it on this
            // node yet. A forged TFTP source gains nothing: the answer
            // goes to the office.
            let at_site = |phone: Option<&Phone>| {
                let site = self.networks.tenant_of(state, ip);
                match phone {
                    Some(phone) => {
                        site == Some(phone.tenant_id)
                            && admission::admits(state, sites, &identity, phone, request)
                    }
                    None => site.is_some(),
                }
            };
            if !self
                .guard
                .lets_through(ip, &identity, named.as_deref(), at_site)
            {
                return Err(ProvisionError::Banned);
            }
        }
        let mut decision = admission::screen(state, sites, identity, named, request);
        let mut step = match &decision.identity {
            Err(e) => Step::Done(Err(e.clone().into())),
            Ok(_) if decision.refused => Step::Done(Err(ProvisionError::NotFound)),
            Ok(id) => match decision
                .served
                .as_ref()
                .map(|p| self.check_device(p, request))
            {
                Some(Err(refused)) => {
                    if let (
                        Some(ip),
                        Some(phone),
                        ProvisionError::Unauthorized {
                            stale: false,
                            unchecked: false,
                        },
                    ) = (request.remote, decision.served.as_ref(), &refused)
                    {
                        if request.auth.is_some_and(|a| a.authorization.is_some()) {
                            self.guard.credentials_failed(ip, phone);
                        }
                    }
                    Step::Done(Err(refused))
                }
                _ => self.serve_identified(state, decision.served.as_ref(), id, request),
            },
        };
        // Only a render about to start is checked: cache hits stay free.
        // Still served: a phone recorded without a model needs its common
        // file, and one miss per render is far below a ban.
        if let (Step::Render(job), Ok(id)) = (&mut step, &decision.identity) {
            decision.unmodeled = self.names_unknown_model(state, id, job);
            // Kept apart unless asked from where phones of the family are
            // known to fetch: an office's phones recorded without a model
            // (a Yealink's generic `y000000000000.cfg` over TFTP) keep
            // their file where a flood of made-up names cannot reach it.
            // A forger spoofing that address is charged its misses, and
            // banned, a banned source gets no such render at all (below).
            job.asker.made_up = decision.unmodeled;
            job.asker.unmodeled = (decision.unmodeled || Self::code_names_no_model(id))
                && !request
                    .remote
                    .is_some_and(|ip| self.guard.known().knows_family(ip, &[job.family()]));
            job.asker.from_known = request
                .remote
                .zip(decision.owner())
                .is_some_and(|(ip, phone)| self.guard.known().knows(ip, phone.id));
            if let Some(held_by_known) = self.other_spelling(job) {
                // Another spelling than the one cached: a miss, unless it
                // comes from where the phone is known to fetch (TFTP and
                // HTTP clients spell a name differently, and someone
                // else's spelling in the cache must not cost the office
                // misses). It replaces the cached one unless a known
                // source filled that: the phone's own stays put.
                decision.respelled = !job.asker.from_known;
                job.fill = !held_by_known;
            }
        }
        // A ban passed for a known phone's family does not cover a common
        // file that would cost a miss: the miss is what bounds such
        // requests, and a banned source's misses no longer add up to
        // anything. (A respelled own file still passes: someone else's
        // spelling in the cache must not lock the phone out, and through
        // a site's pass a forger of the office's address, after a restart,
        // would choose the cached spelling and lock the office's phones
        // out with it; its entries stay one per rule whatever the source
        // asks, each respelling a render in its tenant's share.)
        if banned.is_some() && (decision.blind || decision.unmodeled) {
            return Err(ProvisionError::Banned);
        }
        if let Step::Directory(job) = &step {
            self.charge_directory_build(request, job, banned.is_some())?;
        }
        Ok((decision, step))
    }

    /// A name no rule knows, if it names a file in the static index: the
    /// operator put it there to be served (a CA certificate, a ring list,
    /// a firmware's version file), and every phone of an office fetching
    /// it must not cost the office a miss each. Rules come first, so a
    /// rendered name in the folder stays rendered. Any other name stays
    /// "not found" and a miss.
    pub(super) fn unnamed_static(
        &self,
        request: &Request<'_>,
        unknown: IdentifyError,
    ) -> Result<Identity, IdentifyError> {
        if unknown != IdentifyError::NotFound {
            return Err(unknown);
        }
        let segments = crate::identify::sanitize_path(request.path)?;
        match (self.statics.load().find(&segments), segments.last()) {
            (Some(_), Some(file)) => Ok(Identity::unnamed_static(file)),
            _ => Err(unknown),
        }
    }

    pub(super) fn serve_identified(
        &self,
        state: &Arc<MirrorState>,
        phone: Option<&Arc<Phone>>,
        id: &Identity,
        request: &Request<'_>,
    ) -> Step {
        match id.kind {
            FileKind::DeviceConfig | FileKind::ModelCommon | FileKind::Boot => {
                self.render_file(state, phone, id)
            }
            FileKind::PhoneDirectory => self.directory_step(state, phone, id, request.query),
            FileKind::Static => Step::Done(self.static_file(request.path, id)),
            // Log uploads are writes; this core only reads.
            FileKind::LogUpload => Step::Done(Err(ProvisionError::NotFound)),
        }
    }

    /// A miss toward `ip`'s ban, and the device it names noted as
    /// unclaimed. `found`: the request got a file (or, dropped mid-render,
    /// was about to).
    pub(super) fn charge_miss(
        &self,
        ip: std::net::IpAddr,
        kind: &'static str,
        request: &Request<'_>,
        decision: &Decision,
        found: bool,
    ) {
        metrics::counter!("dialtone_provisioning_misses_total", "kind" => kind).increment(1);
        let state = self.mirror.load();
        let via = request.protocol.via();
        if self.new_phone_at_site(&state, ip, kind, decision, found) {
            self.guard.part_of_a_miss(ip, SITE_MISS_PARTS, via);
        } else {
            self.guard.miss_via(ip, via);
        }
        if let Some(unclaimed) = &self.unclaimed {
            unclaimed.note(&state, request, decision);
        }
    }

    /// A file named by a MAC not answered for here, asked from inside one
    /// tenant's site: a new phone there, listed as that tenant's unclaimed
    /// device, asks for its files at every boot and retry, and a few such
    /// phones would ban the office. Such a miss costs a part of one
    /// ([`SITE_MISS_PARTS`]), whether or not another tenant has the MAC, so
    /// the cost says nothing about a MAC there either: its own files, and
    /// common files (a User-Agent with its MAC) that exist for a model this
    /// deployment has. Failed logins, refused paths, unknown names and
    /// renders of unknown models cost a whole miss, and so does everything
    /// from outside every site, or from any site where sites are not
    /// exclusive (another tenant's phones without networks are served
    /// there, and a site's free misses would find them).
    pub(super) fn new_phone_at_site(
        &self,
        state: &Arc<MirrorState>,
        ip: std::net::IpAddr,
        kind: &'static str,
        decision: &Decision,
        found: bool,
    ) -> bool {
        let Ok(id) = &decision.identity else {
            return false;
        };
        if !self.options.sites_exclusive {
            return false;
        }
        let new_phones = match kind {
            "not_found" => id.mac_in_path() && decision.served.is_none(),
            "blind" => found && !decision.unmodeled,
            _ => false,
        };
        new_phones && self.networks.tenant_of(state, ip).is_some()
    }

    /// Counts misses toward a ban (or remembers the source of a phone's
    /// own fetch; over TFTP returns it, to be remembered once the client
    /// acknowledges), records history (over TFTP, a served fetch's line is
    /// returned too, for its transfer's end), counts the outcome.
    pub(super) fn conclude(
        &self,
        request: &Request<'_>,
        decision: &Decision,
        result: &Result<Rendered, ProvisionError>,
    ) -> Option<Box<Unproven>> {
        let mut unproven = None;
        if let (Some(ip), false) = (request.remote, request.protocol == Protocol::Render) {
            if let Some(kind) = guard::miss_kind(request, decision, result) {
                let found = !matches!(result, Err(ProvisionError::NotFound));
                self.charge_miss(ip, kind, request, decision, found);
            } else if let (Ok(_), Some(phone)) = (result, decision.owner()) {
                let source = KnownSource {
                    ip,
                    phone: phone.id,
                    family: phone.family,
                    learned_under: crate::known::fingerprint(phone),
                };
                match request.protocol {
                    Protocol::Tftp => unproven = Some(source),
                    _ => source.record(self),
                }
            }
        }
        let identity = &decision.identity;
        let mut deferred = None;
        // Only phones we know: a scanner's misses must not fill the table.
        // A 401 to a request without credentials is Digest's normal first
        // step, and one for an expired nonce its normal next; neither is a
        // fetch. A wrong answer is: a phone still sending the password it
        // had before an admin changed it fails at every boot, and support
        // looks for that in its history.
        // An answer refused unchecked (credentials closed) is a line, as a
        // wrong one: it is why that phone gets nothing.
        let challenged = matches!(
            result,
            Err(ProvisionError::Unauthorized {
                unchecked: false,
                ..
            })
        ) && !guard::wrong_login(request, result);
        if let (Some(history), Ok(identity), Some(phone), false) = (
            &self.history,
            identity,
            decision.history_phone(),
            challenged,
        ) {
            deferred = self
                .record(history, request, identity, phone, decision, result)
                .map(|(record, content)| (history.clone(), record, content));
        }
        let vendor = match (result, identity) {
            (Ok(file), _) if file.family.is_some() => file.family.map_or("unknown", |f| f.as_str()),
            (_, Ok(id)) => id.family.map_or("unknown", |f| f.as_str()),
            _ => "unknown",
        };
        count_request(request, vendor, outcome_label(result));
        (unproven.is_some() || deferred.is_some()).then(|| {
            Box::new(Unproven {
                known: unproven,
                history: deferred,
            })
        })
    }
}

/// A request dropped before its render or phonebook ended (a client gone,
/// a TFTP request replaced by the next one from its port) still pays the
/// miss its decision named: renders for unknown models are what that miss
/// is for, each name a new one, and a client hanging up on each before
/// it ended was never charged.
pub(super) struct Unfinished<'a, 'r> {
    pub(super) provisioner: &'a Provisioner,
    pub(super) request: &'a Request<'r>,
    pub(super) decision: &'a Decision,
    pub(super) armed: bool,
}

impl Unfinished<'_, '_> {
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Unfinished<'_, '_> {
    fn drop(&mut self) {
        let Some(ip) = self.request.remote.filter(|_| self.armed) else {
            return;
        };
        if self.request.protocol == Protocol::Render {
            return;
        }
        if let Some(kind) = guard::decided_miss(self.decision) {
            self.provisioner
                .charge_miss(ip, kind, self.request, self.decision, true);
        }
    }
}

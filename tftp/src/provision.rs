//! The one core both transports call: identify the request, find the phone
//! in the mirror, resolve and render the template, and cache the result.
//!
//! A cached file is served only while the inputs it was rendered from are
//! the mirror's current ones (see `render_cache`), so an edit reaches a
//! phone's next fetch and nothing else is re-rendered. Nothing here touches
//! the database.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use dialtone_sync::{ChangeEvent, Family, Id, Mirror, MirrorState, Phone, SecretKey};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;

use dialtone_sync::history::HistorySink;
use dialtone_sync::store::BootRecord;

use crate::admission::{self, Decision};
use crate::compiled::CompiledCache;
use crate::device_auth::HttpAuth;
use crate::digest::DigestAuth;
use crate::engine::Budget;
use crate::error::ProvisionError;
use crate::files::Step;
use crate::guard::{self, Guard, GuardOptions};
use crate::identify::{identify, FileKind, IdentifyError, Identity};
use crate::outcome::{count_if_banned, count_request, outcome_label};
use crate::pool::{PoolOptions, RenderPool, RENDERS, WALKS};
use crate::render_cache::{Inputs, RenderCache};
use crate::statics::{StaticFile, StaticIndex};
use crate::templates::Shipped;

#[derive(Clone, Debug)]
pub struct ProvisionOptions {
    /// How phones reach us over HTTP; templates build URLs from it.
    pub base_url: String,
    /// Names plain-HTTP requests may give in `Host` besides `base_url`'s
    /// (`host_names.rs`); `*` for any.
    pub host_names: Vec<String>,
    /// Bound of the render cache, in bytes of rendered output.
    pub render_cache_bytes: u64,
    /// Bound of the compiled-template cache, in bytes as `Compiled::weight`
    /// reckons them.
    pub compiled_cache_bytes: u64,
    pub guard: GuardOptions,
    /// What each render may spend.
    pub budget: Budget,
    pub pool: PoolOptions,
    /// A phone whose tenant sets no provisioning networks is not served
    /// inside another tenant's site-sized network (`admission.rs`).
    pub sites_exclusive: bool,
}

impl Default for ProvisionOptions {
    fn default() -> Self {
        ProvisionOptions {
            base_url: "http://127.0.0.1:8081".into(),
            host_names: Vec::new(),
            render_cache_bytes: 64 << 20,
            compiled_cache_bytes: 128 << 20,
            guard: GuardOptions::default(),
            budget: Budget::default(),
            pool: PoolOptions::default(),
            sites_exclusive: true,
        }
    }
}

/// A rendered file: identical bytes for identical inputs.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub body: Arc<[u8]>,
    /// Strong ETag: a hash of the bytes.
    pub etag: Arc<str>,
    pub content_type: &'static str,
    pub kind: FileKind,
    /// The family it was rendered for; `None` for static files.
    pub family: Option<Family>,
    /// A static file to stream instead of `body` (which is then empty).
    pub file: Option<Arc<StaticFile>>,
    /// What a rendered (cacheable) file was made from.
    pub(crate) inputs: Option<Arc<Inputs>>,
    /// What a TFTP answer leaves for its transfer ([`Unproven::prove`],
    /// [`Unproven::ended`]); set per answer, never cached.
    pub(crate) unproven: Option<Box<Unproven>>,
}

/// A TFTP request's source, made known for the phone whose own file this
/// is once the client acknowledges a packet (before, the source may be
/// forged), and the fetch's history line, written once the transfer ends
/// and only if the client acknowledged one: it says how the transfer
/// ended and what the client acknowledged, not what we meant to send.
/// The line goes with the served file's ETag (`HistorySink::record_served`).
#[derive(Clone)]
pub(crate) struct Unproven {
    known: Option<KnownSource>,
    history: Option<(HistorySink, BootRecord, Option<Arc<str>>)>,
}

/// A served fetch's line, told from a repeat by its bytes where they say
/// something (`content`), by the fetch alone where not (a directory page).
pub(crate) fn record_served(history: &HistorySink, record: BootRecord, content: Option<&str>) {
    match content {
        Some(content) => history.record_served(record, content),
        None => history.record(record),
    }
}

impl std::fmt::Debug for Unproven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unproven")
            .field("known", &self.known)
            .field(
                "history",
                &self.history.as_ref().map(|(_, record, _)| record),
            )
            .finish()
    }
}

impl Unproven {
    /// At the client's first acknowledgement.
    pub(crate) fn prove(&mut self, provisioner: &Provisioner) {
        if let Some(known) = self.known.take() {
            known.record(provisioner);
        }
    }

    /// Once the transfer is over, if [`Unproven::prove`] ran.
    pub(crate) fn ended(self, outcome: String, acknowledged: u64) {
        if let Some((history, mut record, content)) = self.history {
            record.outcome = outcome;
            record.bytes = i64::try_from(acknowledged).unwrap_or(i64::MAX);
            record_served(&history, record, content.as_deref());
        }
    }

    /// A transfer its client ended before acknowledging a packet: no line
    /// for the phone (the source may be forged), but a log line naming
    /// it, per tenant at most once a second. A phone behind a firewall or
    /// NAT that drops the server's packets from a new port asks again and
    /// again, and without this no trace of it was anywhere.
    pub(crate) fn unanswered(self, how: &str) {
        static UNANSWERED_LOG: dialtone_sync::TenantLogLimit = dialtone_sync::TenantLogLimit::new();
        let Some((_, record, _)) = &self.history else {
            return;
        };
        let Some(skipped) = UNANSWERED_LOG.allow(record.tenant_id.unwrap_or_default()) else {
            return;
        };
        let (mac, remote) = (&record.mac, &record.remote_ip);
        let file = dialtone_sync::log_text(&record.file);
        // A client's ERROR says it got our packet and said no (the options,
        // the size); silence or a refused port says it never did.
        if how.starts_with("client-error") {
            tracing::info!(%mac, %remote, %file, how, skipped, "a phone refused its file over TFTP before acknowledging any of it (logged at most once a second per tenant)");
        } else {
            tracing::info!(%mac, %remote, %file, how, skipped, "a phone's file was answered over TFTP and the client acknowledged nothing: a firewall or NAT dropping the server's packets from a new port (see tftp_single_port), or a forged source (logged at most once a second per tenant)");
        }
    }

    /// Without a transfer (tools and tests ask as TFTP): as answered.
    fn answered(mut self, provisioner: &Provisioner) {
        self.prove(provisioner);
        if let Some((history, record, content)) = self.history {
            record_served(&history, record, content.as_deref());
        }
    }
}

/// A source that fetched a phone's own file, and the phone. Over TFTP the
/// source may be forged until the client's first ACK: made known at once,
/// four forged sources of a phone took its places, and its office's own
/// address, banned by forged misses, could then never pass its ban for
/// the phone's files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KnownSource {
    ip: std::net::IpAddr,
    phone: Id,
    family: Family,
    /// The phone's fingerprint as it was answered (`known::fingerprint`).
    learned_under: u64,
}

impl KnownSource {
    pub(crate) fn record(self, provisioner: &Provisioner) {
        provisioner
            .guard
            .known()
            .record(self.ip, self.phone, self.family, self.learned_under);
    }
}

/// Who asks: decides admission (credentials, TFTP) and labels history and
/// metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Tftp,
    Http,
    Https,
    /// `dialtone render`: the operator's review tool, which sees every
    /// phone's files as the phone would get them.
    Render,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tftp => "tftp",
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Render => "render",
        }
    }

    /// Whether a request's source address could be forged.
    pub(crate) fn via(self) -> crate::guard::Via {
        match self {
            Protocol::Tftp => crate::guard::Via::Datagram,
            Protocol::Http | Protocol::Https | Protocol::Render => crate::guard::Via::Connection,
        }
    }
}

/// A request as either transport sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// TFTP file name or (decoded) HTTP path.
    pub path: &'a str,
    pub user_agent: Option<&'a str>,
    /// The source address: for bans and history. `None` in tools and tests.
    pub remote: Option<std::net::IpAddr>,
    pub protocol: Protocol,
    /// What an HTTP request brings to prove it is the phone.
    pub auth: Option<HttpAuth<'a>>,
    /// The HTTP query string (directory paging and search).
    pub query: Option<&'a str>,
}

impl Request<'_> {
    /// With the source as IPv4 when a dual-stack socket (`[::]`) gave an
    /// IPv4 phone as `::ffff:a.b.c.d`: tenants' networks, bans and history
    /// all speak of IPv4 phones in IPv4, and a mapped address would match
    /// none of their IPv4 networks.
    fn canonical(&self) -> Self {
        Request {
            remote: self.remote.map(|ip| ip.to_canonical()),
            ..*self
        }
    }
}

pub struct Provisioner {
    pub(crate) mirror: Arc<Mirror>,
    pub(crate) key: SecretKey,
    pub(crate) options: ProvisionOptions,
    pub(crate) shipped: ArcSwap<Shipped>,
    pub(crate) compiled: CompiledCache,
    pub(crate) rendered: RenderCache,
    guard: Guard,
    history: Option<HistorySink>,
    unclaimed: Option<crate::unclaimed::Unclaimed>,
    /// Tenants' provisioning networks, shared with `unclaimed`.
    networks: Arc<crate::tenant_networks::NetworkIndex>,
    digest: DigestAuth,
    pub(crate) statics: ArcSwap<StaticIndex>,
    pool: RenderPool,
    /// Admin list walks: their own lane, so no walk holds a render slot.
    walks: RenderPool,
    pub(crate) models: crate::models::ModelIndex,
}

/// How many of a new phone's misses at its tenant's site make one: an
/// office's few unboxed phones retrying their boot every minute stay far
/// under a ban, while a flood (forged TFTP from a site's address, each
/// miss a history row and an unclaimed sighting) is still banned, later.
const SITE_MISS_PARTS: u32 = 8;

impl Provisioner {
    /// What this provisioner renders with: the budget and base URL a trial
    /// render elsewhere (an import's template checks) must use too.
    pub fn options(&self) -> &ProvisionOptions {
        &self.options
    }

    pub fn new(
        mirror: Arc<Mirror>,
        key: SecretKey,
        shipped: Shipped,
        options: ProvisionOptions,
    ) -> Provisioner {
        let digest_key: [u8; 32] =
            Sha256::digest(key.derive("http-digest-nonces", 64).as_bytes()).into();
        Provisioner {
            mirror,
            key,
            shipped: ArcSwap::from_pointee(shipped),
            compiled: CompiledCache::new(options.compiled_cache_bytes),
            rendered: RenderCache::new(options.render_cache_bytes),
            guard: Guard::new(options.guard.clone()),
            history: None,
            unclaimed: None,
            networks: Default::default(),
            statics: ArcSwap::from_pointee(StaticIndex::default()),
            pool: RenderPool::new(options.pool, RENDERS),
            walks: RenderPool::new(options.pool.walk_lane(), WALKS),
            models: Default::default(),
            // Every node derives the same nonce key, so a nonce one issued
            // is good at another behind the same load balancer.
            digest: DigestAuth::new(digest_key, std::time::Duration::from_secs(300), 100_000),
            options,
        }
    }

    /// Records every fetch (and miss by a known MAC) in the provisioning
    /// history, off the hot path.
    pub fn with_history(mut self, sink: HistorySink) -> Self {
        self.history = Some(sink);
        self
    }

    /// Lists fetches by unknown phones for admins to claim: from a tenant's
    /// networks under that tenant, from elsewhere only if `anywhere`.
    pub fn with_unclaimed(
        mut self,
        sink: dialtone_sync::unclaimed::UnclaimedSink,
        anywhere: bool,
    ) -> Self {
        self.unclaimed = Some(crate::unclaimed::Unclaimed::new(
            sink,
            anywhere,
            self.networks.clone(),
        ));
        self
    }

    /// Runs `job` (a preview, a check) on the render pool under `tenant`'s
    /// share, waiting at most the render time budget once it runs.
    pub async fn on_pool<T, F>(&self, tenant: Option<Id>, job: F) -> Result<T, ProvisionError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ProvisionError> + Send + 'static,
    {
        self.pool
            .run(tenant, self.options.budget.time, "the template", job)
            .await
    }

    /// Runs `job` (a walk over a tenant's data for an admin list) on the
    /// walk lane, one of `tenant`'s at a time, waiting at most `time` once
    /// it runs. `ProvisionError::Busy`: too many walks are waiting.
    pub async fn walk<T, F>(
        &self,
        tenant: Id,
        time: std::time::Duration,
        job: F,
    ) -> Result<T, ProvisionError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.walks
            .run(Some(tenant), time, "the list", move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                    .map_err(|_| ProvisionError::Internal("the list's walk"))
            })
            .await
    }

    /// Renders (and previews, checks) waiting for a slot of the render
    /// pool. For tests and monitoring.
    pub fn renders_waiting(&self) -> usize {
        self.pool.waiting()
    }

    /// Admin list walks waiting for a slot of the walk lane. For tests and
    /// monitoring.
    pub fn walks_waiting(&self) -> usize {
        self.walks.waiting()
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    pub fn digest(&self) -> &DigestAuth {
        &self.digest
    }

    /// Re-reads the shipped templates from where they came from (SIGHUP).
    /// On error the running set stays. Unchanged files change nothing: a
    /// SIGHUP for logrotate must not make every phone's next fetch a
    /// render. The count, and whether anything changed.
    pub fn reload_shipped(&self) -> Result<(usize, bool), ProvisionError> {
        let current = self.shipped.load();
        let shipped = Shipped::from_source(&current.source, current.generation + 1)?;
        let count = shipped.len();
        if shipped.same_files(&current) {
            return Ok((count, false));
        }
        self.shipped.store(Arc::new(shipped));
        self.rendered.clear();
        Ok((count, true))
    }

    /// Indexes the static-file folder (start, SIGHUP). On error the
    /// running index stays.
    pub fn reload_static(&self, dir: &Path) -> Result<usize, ProvisionError> {
        let index = StaticIndex::load(dir)?;
        let count = index.len();
        self.statics.store(Arc::new(index));
        Ok(count)
    }

    pub fn shipped_count(&self) -> usize {
        self.shipped.load().len()
    }

    /// The shipped (on-disk) templates by family and name, sorted: what a
    /// stored template overrides, and where an admin starts one from.
    pub fn shipped_names(&self) -> Vec<(Family, String)> {
        let mut names: Vec<(Family, String)> = self
            .shipped
            .load()
            .names()
            .map(|(family, name)| (family, name.to_string()))
            .collect();
        names.sort();
        names
    }

    pub fn shipped_body(&self, family: Family, name: &str) -> Option<Arc<str>> {
        self.shipped.load().get(family, name).cloned()
    }

    /// Serves one request. Safe to call from any thread; never blocks on I/O.
    /// Serves one request, rendering on the calling thread: for tools and
    /// tests. Servers use [`Provisioner::provision_async`].
    pub fn provision(&self, request: &Request<'_>) -> Result<Rendered, ProvisionError> {
        self.provision_at(&self.mirror.load(), request)
    }

    /// Serves one request from `state`: identified, admitted and rendered
    /// from this one mirror version.
    pub(crate) fn provision_at(
        &self,
        state: &Arc<MirrorState>,
        request: &Request<'_>,
    ) -> Result<Rendered, ProvisionError> {
        let request = &request.canonical();
        let (decision, step) = self
            .decide(state, request)
            .inspect_err(|e| count_if_banned(request, e))?;
        let result = match step {
            Step::Done(result) => result,
            Step::Render(job) => self.finish(*job),
            Step::Directory(job) => self.build_directory(*job),
        };
        // No transfer to wait for an acknowledgement of.
        if let Some(unproven) = self.conclude(request, &decision, &result) {
            unproven.answered(self);
        }
        result
    }

    /// Serves one request; a render (a cache miss) runs on the render pool,
    /// under its tenant's share, so this never blocks the caller's thread.
    pub async fn provision_async(
        self: &Arc<Self>,
        request: &Request<'_>,
    ) -> Result<Rendered, ProvisionError> {
        let request = &request.canonical();
        let state = self.mirror.load();
        let (decision, step) = self
            .decide(&state, request)
            .inspect_err(|e| count_if_banned(request, e))?;
        let unfinished = Unfinished {
            provisioner: self,
            request,
            decision: &decision,
            armed: true,
        };
        let result = match step {
            Step::Done(result) => result,
            Step::Render(job) => {
                let this = self.clone();
                let tenant = job.phone.as_ref().map(|p| p.tenant_id);
                let label = job.file.clone();
                // Boxed: only a miss pays for the pool's (large) future, and
                // the hit path's future stays small.
                Box::pin(
                    self.pool
                        .run(tenant, self.options.budget.time, &label, move || {
                            this.finish(*job)
                        }),
                )
                .await
            }
            Step::Directory(job) => {
                let this = self.clone();
                let (tenant, label) = (job.tenant(), job.file.clone());
                Box::pin(
                    self.pool
                        .run(tenant, self.options.budget.time, &label, move || {
                            this.build_directory(*job)
                        }),
                )
                .await
            }
        };
        unfinished.disarm();
        let unproven = self.conclude(request, &decision, &result);
        result.map(|rendered| Rendered {
            unproven,
            ..rendered
        })
    }

    /// Everything but the render: identification, the ban (which a phone
    /// known at that source passes for its own files), admission, device
    /// credentials, the caches. One decision for both entry points.
    fn decide(
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
                    if let (Some(ip), Some(phone), ProvisionError::Unauthorized { stale: false }) =
                        (request.remote, decision.served.as_ref(), &refused)
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
    fn unnamed_static(
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

    fn serve_identified(
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
    fn charge_miss(
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
    fn new_phone_at_site(
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
    fn conclude(
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
        let challenged = matches!(result, Err(ProvisionError::Unauthorized { .. }))
            && !guard::wrong_login(request, result);
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

    /// Drops the cached files a mirror change makes outdated, to free
    /// memory early; reads check every entry's inputs regardless.
    pub fn invalidate(&self, event: &ChangeEvent) {
        self.rendered.invalidate(&self.mirror.load(), event);
    }

    /// Follows the mirror's change stream until `shutdown` completes or the
    /// stream closes. A lagging receiver lost events, so it drops everything.
    pub async fn follow(
        self: Arc<Self>,
        mut events: tokio::sync::broadcast::Receiver<ChangeEvent>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let received = tokio::select! {
                _ = &mut shutdown => break,
                received = events.recv() => received,
            };
            match received {
                Ok(event) => self.invalidate(&event),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "render cache fell behind the change stream; dropping it"
                    );
                    self.rendered.clear();
                }
                Err(RecvError::Closed) => break,
            }
        }
    }

    /// A render cache of a new size, empty (SIGHUP); a no-op when unchanged.
    pub fn resize_render_cache(&self, bytes: u64) -> bool {
        self.rendered.resize(bytes)
    }

    /// Empties the render cache (benchmarks of the render path, SIGHUP).
    pub fn clear_render_cache(&self) {
        self.rendered.clear();
    }

    pub fn cached_files(&self) -> u64 {
        self.rendered.len()
    }
}

/// A request dropped before its render or phonebook ended (a client gone,
/// a TFTP request replaced by the next one from its port) still pays the
/// miss its decision named: renders for unknown models are what that miss
/// is for, each name a new one, and a client hanging up on each before
/// it ended was never charged.
struct Unfinished<'a, 'r> {
    provisioner: &'a Provisioner,
    request: &'a Request<'r>,
    decision: &'a Decision,
    armed: bool,
}

impl Unfinished<'_, '_> {
    fn disarm(mut self) {
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

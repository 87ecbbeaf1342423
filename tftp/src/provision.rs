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
use dialtone_sync::{ChangeEvent, Family, Id, Mirror, MirrorState, SecretKey};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;

use dialtone_sync::history::HistorySink;
use dialtone_sync::store::BootRecord;

use crate::compiled::CompiledCache;
use crate::device_auth::HttpAuth;
use crate::digest::DigestAuth;
use crate::engine::Budget;
use crate::error::ProvisionError;
use crate::files::Step;
use crate::guard::{Guard, GuardOptions};
use crate::identify::FileKind;
use crate::outcome::count_if_banned;
use crate::pool::{PoolOptions, RenderPool, RENDERS, WALKS};
use crate::render_cache::{Inputs, RenderCache};
use crate::statics::{StaticFile, StaticIndex};
use crate::templates::Shipped;

mod decide;
mod request;

use decide::Unfinished;
pub(crate) use request::{record_served, KnownSource, Unproven};
pub use request::{Protocol, ProvisionOptions, Rendered, Request};

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

    /// The shipped templates by family and name, sorted: what a stored
    /// template overrides, and where an admin starts one from. The set
    /// this node serves, or with `product_only` the built-in set alone
    /// (what tenants may read).
    pub fn shipped_names(&self, product_only: bool) -> Vec<(Family, String)> {
        let serving = self.shipped.load();
        let set = if product_only {
            crate::templates::product_set()
        } else {
            &serving
        };
        let mut names: Vec<(Family, String)> = set
            .names()
            .map(|(family, name)| (family, name.to_string()))
            .collect();
        names.sort();
        names
    }

    /// A shipped template's body, from the set [`Self::shipped_names`] lists.
    pub fn shipped_body(&self, family: Family, name: &str, product_only: bool) -> Option<Arc<str>> {
        if product_only {
            return crate::templates::product_set().get(family, name).cloned();
        }
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

//! The render pool: where template renders run, so that none runs on the
//! TFTP listener or blocks an async worker, and one tenant's renders cannot
//! take every core.
//!
//! A render needs a permit of its tenant (at most `per_tenant` at once)
//! and then one of the pool (`threads`), and runs on tokio's blocking
//! threads holding both until it really ends. A caller stops waiting at the
//! render's time budget; the render itself stops on its fuel soon after,
//! and only then frees its permits, so the pool's bound is real. Waiting is
//! bounded too: per tenant and overall, past which a request is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialtone_sync::Id;
use tokio::sync::Semaphore;

use crate::error::ProvisionError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Renders running at once; 0: one per core.
    pub threads: usize,
    /// Renders one tenant may run at once; 0: half the threads (at least 1).
    pub per_tenant: usize,
    /// Renders waiting for a slot, all tenants together.
    pub queue: usize,
    /// Renders one tenant may have waiting.
    pub tenant_queue: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            threads: 0,
            per_tenant: 0,
            queue: 4096,
            tenant_queue: 1024,
        }
    }
}

impl PoolOptions {
    fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    fn per_tenant(&self) -> usize {
        match self.per_tenant {
            0 => (self.threads() / 2).max(1),
            n => n.min(self.threads()),
        }
    }
}

struct TenantSlots {
    running: Arc<Semaphore>,
    waiting: usize,
}

pub struct RenderPool {
    slots: Arc<Semaphore>,
    per_tenant: usize,
    queue: usize,
    tenant_queue: usize,
    waiting: AtomicUsize,
    /// Only tenants with renders waiting or running; `None` is renders for
    /// no known phone (common files).
    tenants: Mutex<HashMap<Option<Id>, TenantSlots>>,
}

/// Counts a caller as waiting, per tenant and overall, until dropped.
struct Waiting<'a> {
    pool: &'a RenderPool,
    tenant: Option<Id>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pool.waiting.fetch_sub(1, Ordering::AcqRel);
        let mut tenants = self.pool.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = tenants.get_mut(&self.tenant) {
            slots.waiting -= 1;
        }
    }
}

impl RenderPool {
    pub fn new(options: PoolOptions) -> Self {
        RenderPool {
            slots: Arc::new(Semaphore::new(options.threads())),
            per_tenant: options.per_tenant(),
            queue: options.queue.max(1),
            tenant_queue: options.tenant_queue.max(1),
            waiting: AtomicUsize::new(0),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn enter(&self, tenant: Option<Id>) -> Result<(Waiting<'_>, Arc<Semaphore>), ProvisionError> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        // Forget tenants that have nothing waiting or running, so the map
        // stays as small as the work in flight.
        if tenants.len() > 64 {
            tenants.retain(|_, s| s.waiting > 0 || Arc::strong_count(&s.running) > 1);
        }
        let slots = tenants.entry(tenant).or_insert_with(|| TenantSlots {
            running: Arc::new(Semaphore::new(self.per_tenant)),
            waiting: 0,
        });
        if slots.waiting >= self.tenant_queue || self.waiting.load(Ordering::Acquire) >= self.queue
        {
            metrics::counter!("dialtone_render_pool_refused_total").increment(1);
            return Err(ProvisionError::Busy);
        }
        slots.waiting += 1;
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let running = slots.running.clone();
        Ok((Waiting { pool: self, tenant }, running))
    }

    /// Runs `job` for `tenant` on the pool; waits for it at most `time`
    /// once it has started. `label` names the work in errors.
    pub async fn run<T, F>(
        &self,
        tenant: Option<Id>,
        time: Duration,
        label: &str,
        job: F,
    ) -> Result<T, ProvisionError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ProvisionError> + Send + 'static,
    {
        let (waiting, running) = self.enter(tenant)?;
        let queued = std::time::Instant::now();
        let closed = |_| ProvisionError::Busy;
        let tenant_permit = running.acquire_owned().await.map_err(closed)?;
        let pool_permit = self.slots.clone().acquire_owned().await.map_err(closed)?;
        drop(waiting);
        metrics::histogram!("dialtone_render_pool_wait_seconds")
            .record(queued.elapsed().as_secs_f64());
        let task = tokio::task::spawn_blocking(move || {
            let _permits = (tenant_permit, pool_permit);
            job()
        });
        // The engine checks the same deadline itself; the slack covers a
        // render that is between two checks.
        match tokio::time::timeout(time + Duration::from_millis(50), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProvisionError::Render {
                template: label.to_string(),
                line: None,
                column: None,
                message: "the render failed".into(),
            }),
            Err(_) => {
                metrics::counter!("dialtone_render_pool_timeouts_total").increment(1);
                Err(ProvisionError::Render {
                    template: label.to_string(),
                    line: None,
                    column: None,
                    message: format!(
                        "the render passed its time budget of {} ms",
                        time.as_millis()
                    ),
                })
            }
        }
    }
}

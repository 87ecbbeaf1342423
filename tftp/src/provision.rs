//! The one core both transports call: identify the request, find the phone
//! in the mirror, resolve and render the template, and cache the result.
//!
//! The render cache is keyed by what a file depends on and invalidated from
//! the mirror's change stream, so an edit reaches a phone's next fetch and
//! nothing else is re-rendered. Nothing here touches the database.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use dialtone_sync::{ChangeEvent, Entity, Family, Id, Mirror, MirrorState, Phone, SecretKey};
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;

use dialtone_sync::history::HistorySink;
use dialtone_sync::store::BootRecord;

use crate::admission;
use crate::digest::DigestAuth;
use crate::error::ProvisionError;
use crate::guard::{Guard, GuardOptions};
use crate::identify::{identify, FileKind, Identity};
use crate::phonebook;
use crate::render::{compile, content_type, render, Subject};
use crate::statics::{StaticFile, StaticIndex};
use crate::templates::{resolve, Origin, Shipped};

#[derive(Clone, Debug)]
pub struct ProvisionOptions {
    /// How phones reach us over HTTP; templates build URLs from it.
    pub base_url: String,
    /// Bound of the render cache, in bytes of rendered output.
    pub render_cache_bytes: u64,
    /// Bound of the compiled-template cache, in templates.
    pub compiled_cache_entries: u64,
    pub guard: GuardOptions,
}

impl Default for ProvisionOptions {
    fn default() -> Self {
        ProvisionOptions {
            base_url: "http://127.0.0.1:8081".into(),
            render_cache_bytes: 64 << 20,
            compiled_cache_entries: 2048,
            guard: GuardOptions::default(),
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
    deps: Deps,
}

/// What a cached file was made from, for invalidation.
#[derive(Clone, Debug, Default)]
struct Deps {
    phone: Option<Id>,
    tenant: Option<Id>,
    lines: Arc<[Id]>,
    template: Option<Origin>,
    family: Option<Family>,
    name: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RenderKey {
    family: Family,
    file: Box<str>,
    phone: Option<Id>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CompiledKey {
    Stored {
        id: Id,
        version: i64,
    },
    Shipped {
        generation: u64,
        family: Family,
        name: &'static str,
    },
}

/// A request as either transport sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// TFTP file name or (decoded) HTTP path.
    pub path: &'a str,
    pub user_agent: Option<&'a str>,
    /// The source address: for bans and history. `None` in tools and tests.
    pub remote: Option<std::net::IpAddr>,
    /// `tftp`, `http` or `https`, for history.
    pub protocol: &'static str,
    /// The HTTP query string (directory paging and search).
    pub query: Option<&'a str>,
}

fn render_cache(bytes: u64) -> Cache<RenderKey, Rendered> {
    Cache::builder()
        .max_capacity(bytes)
        .weigher(|k: &RenderKey, v: &Rendered| {
            (v.body.len() + v.etag.len() + k.file.len() + 128)
                .try_into()
                .unwrap_or(u32::MAX)
        })
        .support_invalidation_closures()
        .build()
}

/// The `outcome` label of a provisioning request: a short, bounded set.
fn outcome_label(result: &Result<Rendered, ProvisionError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ProvisionError::NotFound) => "not_found",
        Err(ProvisionError::Banned) => "banned",
        Err(ProvisionError::BadPath(_)) => "refused",
        Err(ProvisionError::Render { .. }) => "render_error",
        Err(_) => "error",
    }
}

pub struct Provisioner {
    pub(crate) mirror: Arc<Mirror>,
    pub(crate) key: SecretKey,
    pub(crate) options: ProvisionOptions,
    pub(crate) shipped: ArcSwap<Shipped>,
    compiled: Cache<CompiledKey, Arc<tera::Tera>>,
    /// Swapped whole (emptied) when its size changes on SIGHUP.
    rendered: ArcSwap<Cache<RenderKey, Rendered>>,
    guard: Guard,
    history: Option<HistorySink>,
    digest: DigestAuth,
    statics: ArcSwap<StaticIndex>,
}

impl Provisioner {
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
            compiled: Cache::builder()
                .max_capacity(options.compiled_cache_entries)
                .build(),
            rendered: ArcSwap::from_pointee(render_cache(options.render_cache_bytes)),
            guard: Guard::new(options.guard.clone()),
            history: None,
            statics: ArcSwap::from_pointee(StaticIndex::default()),
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

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    pub fn digest(&self) -> &DigestAuth {
        &self.digest
    }

    /// The per-device HTTP credentials of the phone a request names, if it
    /// has any: such a phone's files are served only to requests that
    /// prove them.
    pub fn device_credentials(&self, request: &Request<'_>) -> Option<(String, String)> {
        let identity = identify(request.path, request.user_agent).ok()?;
        let state = self.mirror.load();
        let phone = state.phone_by_mac(&identity.mac?)?;
        let user = phone.http_user.as_deref()?.to_string();
        let password = match &phone.http_password {
            Some(sealed) => match self
                .key
                .open(dialtone_sync::Purpose::DeviceHttpPassword, sealed)
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(mac = %phone.mac, error = %e, "device HTTP password will not open; refusing");
                    // Nothing can match this: the phone is locked out, not opened up.
                    format!("\0unusable-{}", rand_suffix())
                }
            },
            None => String::new(),
        };
        Some((user, password))
    }

    /// Re-reads the shipped templates (start, SIGHUP). On error the running
    /// set stays.
    pub fn reload_shipped(&self, dir: &Path) -> Result<usize, ProvisionError> {
        let generation = self.shipped.load().generation + 1;
        let shipped = Shipped::load(dir, generation)?;
        let count = shipped.len();
        self.shipped.store(Arc::new(shipped));
        self.rendered.load().invalidate_all();
        Ok(count)
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
    pub fn provision(&self, request: &Request<'_>) -> Result<Rendered, ProvisionError> {
        if request.remote.is_some_and(|ip| self.guard.is_banned(ip)) {
            return Err(ProvisionError::Banned);
        }
        let identity = identify(request.path, request.user_agent);
        let state = self.mirror.load();
        let phone = identity
            .as_ref()
            .ok()
            .and_then(|id| id.mac)
            .and_then(|mac| state.phone_by_mac(&mac));
        let result = match &identity {
            Err(e) => Err(e.clone().into()),
            Ok(_) if !admission::admitted(&state, phone.map(|p| &**p), request) => {
                Err(ProvisionError::NotFound)
            }
            Ok(id) => match id.kind {
                FileKind::DeviceConfig | FileKind::ModelCommon | FileKind::Boot => {
                    self.render_file(&state, phone, id)
                }
                FileKind::PhoneDirectory => self.render_directory(&state, phone, id, request.query),
                FileKind::Static => self.static_file(request.path, id),
                // Log uploads are writes; this core only reads.
                FileKind::LogUpload => Err(ProvisionError::NotFound),
            },
        };
        if let (Err(ProvisionError::NotFound | ProvisionError::BadPath(_)), Some(ip)) =
            (&result, request.remote)
        {
            self.guard.miss(ip);
        }
        // Only phones we know: a scanner's misses must not fill the table.
        if let (Some(history), Ok(identity), Some(phone)) = (&self.history, &identity, phone) {
            self.record(history, request, identity, phone.mac, &result);
        }
        let vendor = match (&result, &identity) {
            (Ok(file), _) if file.family.is_some() => file.family.map_or("unknown", |f| f.as_str()),
            (_, Ok(id)) => id.family.map_or("unknown", |f| f.as_str()),
            _ => "unknown",
        };
        metrics::counter!(
            "dialtone_provision_requests_total",
            "protocol" => request.protocol,
            "vendor" => vendor,
            "outcome" => outcome_label(&result),
        )
        .increment(1);
        result
    }

    fn record(
        &self,
        history: &HistorySink,
        request: &Request<'_>,
        identity: &Identity,
        mac: dialtone_sync::Mac,
        result: &Result<Rendered, ProvisionError>,
    ) {
        let (outcome, bytes) = match result {
            Ok(file) => ("ok".to_string(), file.body.len() as i64),
            Err(ProvisionError::NotFound) => ("not-found".to_string(), 0),
            Err(e) => (format!("error: {e}"), 0),
        };
        history.record(BootRecord {
            mac: mac.to_string(),
            at: dialtone_sync::now_millis(),
            remote_ip: request.remote.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: request.user_agent.map(str::to_string),
            protocol: request.protocol.to_string(),
            file: identity.file.clone(),
            outcome,
            bytes,
            model: identity.model.clone(),
            firmware: identity.firmware.clone(),
        });
    }

    fn static_file(&self, path: &str, identity: &Identity) -> Result<Rendered, ProvisionError> {
        let segments = crate::identify::sanitize_path(path)?;
        let index = self.statics.load();
        let file = index
            .find(&segments)
            .ok_or(ProvisionError::NotFound)?
            .clone();
        Ok(Rendered {
            body: Arc::from(Vec::new()),
            etag: file.etag.as_str().into(),
            content_type: "application/octet-stream",
            kind: FileKind::Static,
            family: identity.family,
            file: Some(file),
            deps: Deps::default(),
        })
    }

    /// The tenant's directory in the phone's format. Not cached: it is
    /// written straight from the mirror, so it is always current.
    fn render_directory(
        &self,
        state: &MirrorState,
        phone: Option<&Arc<Phone>>,
        identity: &Identity,
        query: Option<&str>,
    ) -> Result<Rendered, ProvisionError> {
        let phone = phone.ok_or(ProvisionError::NotFound)?;
        let tenant = state.tenant(phone.tenant_id);
        let query = phonebook::Query::parse(query);
        let entries =
            phonebook::sorted(state.directory_of(phone.tenant_id), query.search.as_deref());
        let title = tenant.map(|t| &*t.name).unwrap_or("Directory");
        let self_url = format!("{}/{}", self.options.base_url, identity.file);
        let body = phonebook::render(phone.family, title, &entries, &query, &self_url)
            .ok_or(ProvisionError::NotFound)?;
        let etag = format!("\"{}\"", hex(&Sha256::digest(body.as_bytes())[..16]));
        Ok(Rendered {
            body: body.into_bytes().into(),
            etag: etag.into(),
            content_type: "text/xml; charset=utf-8",
            kind: FileKind::PhoneDirectory,
            family: Some(phone.family),
            file: None,
            deps: Deps::default(),
        })
    }

    /// `state` and `phone` are the ones `provision()` already looked up, so
    /// one request is answered from one consistent mirror version.
    fn render_file(
        &self,
        state: &MirrorState,
        phone: Option<&Arc<Phone>>,
        identity: &Identity,
    ) -> Result<Rendered, ProvisionError> {
        let phone = phone.cloned();
        if identity.kind == FileKind::DeviceConfig && phone.is_none() {
            // Unknown MAC: the same answer as an unknown file name.
            return Err(ProvisionError::NotFound);
        }
        // The phone's record is the authority on its family; a file name
        // that its family does not use is not found.
        let family = match &phone {
            Some(p) if identity.candidates.contains(&p.family) => p.family,
            Some(_) if identity.kind == FileKind::DeviceConfig => {
                return Err(ProvisionError::NotFound)
            }
            _ => identity.family.ok_or(ProvisionError::NotFound)?,
        };
        // A phone known by its User-Agent MAC on a common file of another
        // family does not lend it its data.
        let phone = phone.filter(|p| p.family == family);
        let key = RenderKey {
            family,
            file: identity.file.as_str().into(),
            phone: phone.as_ref().map(|p| p.id),
        };
        if let Some(hit) = self.rendered.load().get(&key) {
            metrics::counter!("dialtone_render_cache_total", "result" => "hit").increment(1);
            return Ok(hit);
        }
        metrics::counter!("dialtone_render_cache_total", "result" => "miss").increment(1);
        let model = phone
            .as_ref()
            .and_then(|p| p.model.as_deref())
            .or(identity.model.as_deref());
        let shipped = self.shipped.load();
        let template = resolve(
            state,
            &shipped,
            family,
            identity.template,
            phone.as_deref(),
            model,
        )
        .ok_or(ProvisionError::NotFound)?;
        let compiled_key = match template.origin {
            Origin::Stored { id, version } => CompiledKey::Stored { id, version },
            Origin::Shipped { generation } => CompiledKey::Shipped {
                generation,
                family,
                name: template.name,
            },
            // `resolve` is given no draft here.
            Origin::Draft => return Err(ProvisionError::NotFound),
        };
        let engine = match self.compiled.get(&compiled_key) {
            Some(engine) => engine,
            None => {
                let engine = Arc::new(compile(&template)?);
                self.compiled.insert(compiled_key, engine.clone());
                engine
            }
        };
        let tenant = phone
            .as_ref()
            .and_then(|p| state.tenant(p.tenant_id))
            .cloned();
        let lines = phone
            .as_ref()
            .map(|p| state.lines_of(p.id))
            .unwrap_or_default();
        let subject = Subject {
            mask_secrets: false,
            family,
            phone: phone.as_deref(),
            lines: &lines,
            tenant: tenant.as_deref(),
            model,
            file: &identity.file,
        };
        let body = render(
            &engine,
            &template,
            &subject,
            &self.key,
            &self.options.base_url,
        )?;
        let etag = format!("\"{}\"", hex(&Sha256::digest(&body)[..16]));
        let rendered = Rendered {
            body: body.into(),
            etag: etag.into(),
            content_type: content_type(family),
            kind: identity.kind,
            family: Some(family),
            file: None,
            deps: Deps {
                phone: phone.as_ref().map(|p| p.id),
                tenant: phone.as_ref().map(|p| p.tenant_id),
                lines: lines.iter().map(|l| l.id).collect(),
                template: Some(template.origin.clone()),
                family: Some(family),
                name: template.name,
            },
        };
        self.rendered.load().insert(key, rendered.clone());
        Ok(rendered)
    }

    /// Drops exactly the cached files a mirror change touches.
    pub fn invalidate(&self, event: &ChangeEvent) {
        let keys = match event {
            ChangeEvent::Reset { .. } => {
                self.rendered.load().invalidate_all();
                return;
            }
            ChangeEvent::Changed { keys, .. } => keys.clone(),
        };
        let state = self.mirror.load();
        let mut phones = Vec::new();
        let mut tenants = Vec::new();
        let mut lines = Vec::new();
        let mut templates = Vec::new();
        for (entity, id) in keys.iter() {
            match entity {
                Entity::Phone => phones.push(*id),
                Entity::Tenant => tenants.push(*id),
                Entity::Line => {
                    lines.push(*id);
                    // A new line belongs to a phone whose files list no line of it yet.
                    if let Some(line) = state.phone_of_line(*id) {
                        phones.push(line);
                    }
                }
                Entity::Template => {
                    // Stored templates shadow by key: a new one can take over
                    // files that used to come from elsewhere.
                    let key = state
                        .template(*id)
                        .map(|t| (t.family, t.file_pattern.clone()));
                    templates.push((*id, key));
                }
                _ => {}
            }
        }
        if phones.is_empty() && tenants.is_empty() && lines.is_empty() && templates.is_empty() {
            return;
        }
        let result = self
            .rendered
            .load()
            .invalidate_entries_if(move |_, v: &Rendered| {
                let d = &v.deps;
                d.phone.is_some_and(|p| phones.contains(&p))
                    || d.tenant.is_some_and(|t| tenants.contains(&t))
                    || d.lines.iter().any(|l| lines.contains(l))
                    || templates.iter().any(|(id, key)| {
                        matches!(&d.template, Some(Origin::Stored { id: used, .. }) if used == id)
                            || key.as_ref().is_some_and(|(family, name)| {
                                d.family == Some(*family) && &**name == d.name
                            })
                    })
            });
        if let Err(e) = result {
            tracing::warn!(error = %e, "precise invalidation unavailable; dropping the render cache");
            self.rendered.load().invalidate_all();
        }
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
                    self.rendered.load().invalidate_all();
                }
                Err(RecvError::Closed) => break,
            }
        }
    }

    /// A render cache of a new size, empty (SIGHUP); a no-op when unchanged.
    pub fn resize_render_cache(&self, bytes: u64) -> bool {
        let current = self.rendered.load().policy().max_capacity();
        if current == Some(bytes) {
            return false;
        }
        self.rendered.store(Arc::new(render_cache(bytes)));
        true
    }

    /// Empties the render cache (benchmarks of the render path, SIGHUP).
    pub fn clear_render_cache(&self) {
        self.rendered.load().invalidate_all();
    }

    pub fn cached_files(&self) -> u64 {
        self.rendered.load().run_pending_tasks();
        self.rendered.load().entry_count()
    }
}

fn rand_suffix() -> u64 {
    use rand::RngCore;
    rand::thread_rng().next_u64()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

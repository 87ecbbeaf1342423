//! The files `provision()` answers with once it has decided: a static
//! file or a rendered template (from the render cache, or rendered on the
//! pool and cached; the phone directory is `phonebook.rs`), and the
//! compiled-template cache behind renders.

use std::sync::Arc;

use dialtone_sync::{Family, MirrorState, Phone};
use sha2::{Digest, Sha256};

use crate::compiled::{Compiled, CompiledKey};
use crate::error::ProvisionError;
use crate::identify::{FileKind, Identity};
use crate::phonebook::DirectoryJob;
use crate::provision::{Provisioner, Rendered};
use crate::render::{compile, content_type, render, Subject};
use crate::render_cache::{Asker, Inputs, RenderKey};
use crate::templates::{resolve, Origin, Resolved, Shipped};

impl Provisioner {
    pub(crate) fn static_file(
        &self,
        path: &str,
        identity: &Identity,
    ) -> Result<Rendered, ProvisionError> {
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
            inputs: None,
            unproven: None,
        })
    }

    /// `state` and `phone` are the ones `provision()` already looked up, so
    /// one request is answered from one consistent mirror version.
    pub(crate) fn render_file(
        &self,
        state: &Arc<MirrorState>,
        phone: Option<&Arc<Phone>>,
        identity: &Identity,
    ) -> Step {
        let phone = phone.cloned();
        if identity.mac_in_path() && phone.is_none() {
            // A phone's own file (`<mac>.cfg`, `<mac>.boot`) for a MAC not
            // answered for here: the same answer as an unknown file name.
            return Step::Done(Err(ProvisionError::NotFound));
        }
        // The phone's record is the authority on its family; a file name
        // that its family does not use is not found.
        let family = match (&phone, identity.family) {
            (Some(p), _) if identity.candidates.contains(&p.family) => p.family,
            (Some(_), _) if identity.kind == FileKind::DeviceConfig => {
                return Step::Done(Err(ProvisionError::NotFound))
            }
            (_, Some(family)) => family,
            (_, None) => return Step::Done(Err(ProvisionError::NotFound)),
        };
        // A phone known by its User-Agent MAC on a common file of another
        // family does not lend it its data.
        let phone = phone.filter(|p| p.family == family);
        // Case is free in a file name, and every spelling of a common or
        // boot file (`XMLDefault.cnf.xml`, `SPA504G.cfg`) was a render and
        // a cache entry of its own, uncharged: from one source, 65,536 of
        // one name. They share one entry, rendered with the name in lower
        // case (`file.name`), so the self-check's render matches it. A
        // phone's own file keeps the first spelling instead
        // (`render_cache::spelling_key`), which charges the others.
        let own_file = phone.is_some() && identity.template.contains("{mac}");
        let file: Box<str> = if own_file {
            identity.file.as_str().into()
        } else {
            identity.file.to_ascii_lowercase().into()
        };
        let model = Inputs::effective_model(phone.as_ref(), identity.model.as_deref());
        let key = RenderKey {
            family,
            file,
            phone: phone.as_ref().map(|p| p.id),
            model: model
                .filter(|_| phone.is_none())
                .map(|m| crate::models::canonical(family, m).into()),
            directory: None,
        };
        let shipped = self.shipped.load();
        if let Some(hit) = self.rendered.get(&key, state, shipped.generation, model) {
            return Step::Done(Ok(hit));
        }
        // A render that failed fails the same way from the same inputs: a
        // template that blows its budget for one phone costs it once
        // (except its time, which is the machine's too: `finish`).
        if let Some(failure) = self.rendered.failed(&key, state, shipped.generation, model) {
            return Step::Done(Err(failure));
        }
        metrics::counter!("dialtone_render_cache_total", "result" => "miss").increment(1);
        let file = key.file.to_string();
        Step::Render(Box::new(RenderJob {
            state: state.clone(),
            model: model.map(str::to_string),
            key,
            family,
            template: identity.template,
            kind: identity.kind,
            file,
            phone,
            fill: true,
            asker: Asker::default(),
        }))
    }

    /// When `job` is a phone's own file asked for in another spelling than
    /// the one its render is cached under: whether a source known for the
    /// phone filled that one.
    pub(crate) fn other_spelling(&self, job: &RenderJob) -> Option<bool> {
        let mac = job.phone.as_ref().map(|p| p.mac);
        self.rendered
            .other_spelling(&job.key, mac, job.template, job.model.as_deref())
    }

    /// Whether a model-common or boot file is named by a model code no
    /// model is known by (a Yealink code not in the table): with a real
    /// model's User-Agent it costs nothing, but its names are endless (a
    /// thousand codes for each model), so it is kept with made-up models'
    /// files unless asked from where phones of the family fetch.
    pub(crate) fn code_names_no_model(identity: &Identity) -> bool {
        matches!(identity.kind, FileKind::ModelCommon | FileKind::Boot)
            && identity.file_model.is_none()
            && identity.model_code.is_some()
    }

    /// Whether a model-common or boot file names a model (in its name, its
    /// User-Agent or through its model code) that this deployment does not
    /// have, or only a code no model is known by: such a render is served
    /// but costs its source a miss (`models.rs` says why).
    pub(crate) fn names_unknown_model(
        &self,
        state: &Arc<MirrorState>,
        identity: &Identity,
        job: &RenderJob,
    ) -> bool {
        if !matches!(identity.kind, FileKind::ModelCommon | FileKind::Boot) {
            return false;
        }
        // A model code nothing ties to a model (Fanvil's `f` and ten
        // characters, a Yealink code not in the table) names no model we
        // could check, and its names are as endless.
        if identity.file_model.is_none() && job.model.is_none() && identity.model_code.is_some() {
            return true;
        }
        let known = |model: &str| self.models.knows(state, job.family, model);
        !(identity.file_model.as_deref().is_none_or(known)
            && job.model.as_deref().is_none_or(known))
    }

    /// Renders what `render_file` could not answer from the cache, and
    /// caches the outcome if it is still current.
    pub(crate) fn finish(&self, job: RenderJob) -> Result<Rendered, ProvisionError> {
        let shipped = self.shipped.load();
        let model = job.model.as_deref();
        let target = Target {
            family: job.family,
            template: job.template,
            kind: job.kind,
            file: &job.file,
            phone: job.phone.as_ref(),
            model,
        };
        let result = self.render_target(&job.state, &shipped, &target, true);
        let latest = self.mirror.load();
        let generation = self.shipped.load().generation;
        match &result {
            Ok(rendered) if job.fill => {
                self.rendered
                    .fill(job.key, rendered, &latest, generation, model, job.asker);
            }
            Ok(_) => {}
            // Out of time is no property of the inputs: one stalled render
            // remembered would fail the phone until its template is edited.
            Err(error @ ProvisionError::Render { .. }) if job.fill && !error.is_out_of_time() => {
                let inputs = Inputs::of(
                    &job.state,
                    shipped.generation,
                    job.family,
                    job.template,
                    job.phone.as_ref(),
                    model,
                );
                self.rendered.fail(
                    job.key, inputs, error, &latest, generation, model, job.asker,
                );
            }
            Err(_) => {}
        }
        result
    }

    /// Renders one file from `state`, uncached. `reuse_compiled` false
    /// compiles the template afresh (the self-check trusts no cache).
    pub(crate) fn render_target(
        &self,
        state: &MirrorState,
        shipped: &Shipped,
        target: &Target<'_>,
        reuse_compiled: bool,
    ) -> Result<Rendered, ProvisionError> {
        let Target {
            family,
            template: name,
            kind,
            file,
            phone,
            model,
        } = *target;
        let template = resolve(state, shipped, family, name, phone.map(|p| &**p), model)
            .ok_or(ProvisionError::NotFound)?;
        let engine = self.engine(&template, reuse_compiled)?;
        let tenant = phone.and_then(|p| state.tenant(p.tenant_id)).cloned();
        let lines = phone.map(|p| state.lines_of(p.id)).unwrap_or_default();
        let subject = Subject {
            mask_secrets: false,
            family,
            phone: phone.map(|p| &**p),
            lines: &lines,
            tenant: tenant.as_deref(),
            model,
            file,
        };
        let body = render(
            &engine.engine,
            &template,
            &subject,
            &self.key,
            &self.options.base_url,
            &self.options.budget,
        )?;
        let etag = format!("\"{}\"", hex(&Sha256::digest(&body)[..16]));
        Ok(Rendered {
            body: body.into(),
            etag: etag.into(),
            content_type: content_type(family),
            kind,
            family: Some(family),
            file: None,
            inputs: Some(Arc::new(Inputs::of(
                state,
                shipped.generation,
                family,
                name,
                phone,
                model,
            ))),
            unproven: None,
        })
    }

    pub(crate) fn engine(
        &self,
        template: &Resolved,
        reuse_compiled: bool,
    ) -> Result<Arc<Compiled>, ProvisionError> {
        let owner = match template.origin {
            Origin::Stored { tenant, .. } => tenant,
            _ => None,
        };
        let compile = || -> Result<Arc<Compiled>, ProvisionError> {
            Ok(Arc::new(Compiled {
                engine: compile(template, &self.options.budget)?,
                body: template.body.clone(),
                owner,
            }))
        };
        if !reuse_compiled {
            return compile();
        }
        let key = match template.origin {
            Origin::Stored { id, .. } => CompiledKey::Stored { id },
            Origin::Shipped { generation } => CompiledKey::Shipped {
                generation,
                family: template.family,
                name: template.name,
            },
            // `resolve` is given no draft here.
            Origin::Draft => return Err(ProvisionError::NotFound),
        };
        if let Some(compiled) = self.compiled.get(&key, &template.body) {
            return Ok(compiled);
        }
        let compiled = compile()?;
        self.compiled.keep(key, compiled.clone());
        Ok(compiled)
    }
}

/// What `decide` concluded: an answer, or a render still to do.
pub(crate) enum Step {
    Done(Result<Rendered, ProvisionError>),
    Render(Box<RenderJob>),
    /// A phone directory to build (`phonebook.rs`).
    Directory(Box<DirectoryJob>),
}

/// A render `decide` could not answer from the cache; it owns what it
/// needs, so it can run on the pool.
pub(crate) struct RenderJob {
    state: Arc<MirrorState>,
    key: RenderKey,
    family: Family,
    template: &'static str,
    kind: FileKind,
    pub(crate) file: String,
    pub(crate) phone: Option<Arc<Phone>>,
    model: Option<String>,
    /// Whether the result may be cached: not for another spelling of a
    /// phone's file while the cached one was filled by a source known for
    /// the phone (`render_cache.rs`).
    pub(crate) fill: bool,
    /// Who it is for, which decides where its result is kept.
    pub(crate) asker: Asker,
}

impl RenderJob {
    pub(crate) fn family(&self) -> Family {
        self.family
    }
}

/// One file to render: what `provision()` identified, for a phone (or none).
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub family: Family,
    pub template: &'static str,
    pub kind: FileKind,
    pub file: &'a str,
    pub phone: Option<&'a Arc<Phone>>,
    pub model: Option<&'a str>,
}

pub(crate) use hex::encode as hex;

#[cfg(test)]
#[path = "out_of_time_tests.rs"]
mod out_of_time_tests;

//! Templates: the shipped defaults on disk, the stored ones in the mirror,
//! and which of them renders a given file for a given phone.
//!
//! Override chain, most specific first: phone → tenant → model → family
//! default (all from the database, via the mirror), then the shipped file.
//! Each template is compiled once per version and kept in a bounded cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dialtone_sync::{Family, Id, MirrorState, Phone, TemplateKey, TemplateScope};

use crate::error::ProvisionError;

/// The templates shipped in `templates/`, built into the binary, so
/// `dialtone` renders the same files from whatever directory it starts in.
static BUILT_IN: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/../templates");

/// The built-in set alone, as the product ships it: what tenants may read
/// of the shipped templates. The operator's `templates_dir` files are the
/// operator's own (they may branch per tenant) and are shown to global
/// admins only.
pub fn product_set() -> &'static Shipped {
    static PRODUCT: std::sync::LazyLock<Shipped> =
        std::sync::LazyLock::new(|| Shipped::built_in(0));
    &PRODUCT
}

/// Where a set of shipped templates comes from, so a reload (SIGHUP) reads
/// the same place again.
#[derive(Clone, Debug, Default)]
pub enum Source {
    /// The built-in set, with the files of an optional directory
    /// (`<dir>/<family>/<name>.tera`) in place of or beside them.
    #[default]
    BuiltIn,
    BuiltInWith(PathBuf),
    /// Only the files of a directory (tests, benchmarks).
    Dir(PathBuf),
}

/// The shipped templates by family and name.
#[derive(Default)]
pub struct Shipped {
    templates: HashMap<(Family, String), Arc<str>>,
    /// Bumped on every reload so compiled copies of old files are not reused.
    pub generation: u64,
    pub source: Source,
}

impl Shipped {
    /// Reads `source`.
    pub fn from_source(source: &Source, generation: u64) -> Result<Shipped, ProvisionError> {
        Shipped::assemble(source, generation, Shipped::load)
    }

    /// `source`'s set, its folder read by `load`.
    fn assemble(
        source: &Source,
        generation: u64,
        load: fn(&Path, u64) -> Result<Shipped, ProvisionError>,
    ) -> Result<Shipped, ProvisionError> {
        let mut shipped = match source {
            Source::Dir(dir) => load(dir, generation)?,
            Source::BuiltIn => Shipped::built_in(generation),
            Source::BuiltInWith(dir) => {
                let mut shipped = Shipped::built_in(generation);
                shipped.templates.extend(load(dir, generation)?.templates);
                shipped
            }
        };
        shipped.source = source.clone();
        Ok(shipped)
    }

    /// Reads `source` for a node's start. A set that does not read whole
    /// (a file that does not compile, a `templates_dir` that is not there)
    /// is refused by SIGHUP and `render --all`, but a start serves it as
    /// starts did before the check, each problem logged as an error:
    /// after an upgrade whose checks refuse a construct an older release
    /// took, a node that did not start at all would fail every phone, not
    /// those of one file. A missing folder leaves the built-in set. With
    /// the set, whether it read whole (the node is degraded until a SIGHUP
    /// reads it so).
    pub fn from_source_at_start(
        source: &Source,
        generation: u64,
    ) -> Result<(Shipped, bool), ProvisionError> {
        let problem = match Shipped::from_source(source, generation) {
            Ok(shipped) => return Ok((shipped, true)),
            Err(ProvisionError::Templates(problem)) => problem,
            Err(e) => return Err(e),
        };
        tracing::error!(
            problem,
            "shipped templates: serving them as read, unchecked; phones fetching a file that does not compile get errors (fix it, then SIGHUP)"
        );
        Ok((
            Shipped::assemble(source, generation, Shipped::load_as_read)?,
            false,
        ))
    }

    /// Whether both hold the same files with the same text.
    pub fn same_files(&self, other: &Shipped) -> bool {
        self.templates == other.templates
    }

    /// The set built into the binary.
    pub fn built_in(generation: u64) -> Shipped {
        let mut templates = HashMap::new();
        for family in Family::ALL {
            let Some(folder) = BUILT_IN.get_dir(family.as_str()) else {
                continue;
            };
            for file in folder.files() {
                let name = file.path().file_name().and_then(|n| n.to_str());
                let (Some(name), Some(body)) = (
                    name.and_then(|n| n.strip_suffix(".tera")),
                    file.contents_utf8(),
                ) else {
                    continue;
                };
                templates.insert((*family, name.to_string()), Arc::from(body));
            }
        }
        Shipped {
            templates,
            generation,
            source: Source::BuiltIn,
        }
    }

    /// Reads every family folder of `dir` and compiles each file as a
    /// render would. `dir` must be a directory: a typo or an unmounted
    /// volume would otherwise serve the built-in set without a word. A
    /// missing family folder is an empty set (a deployment may use only
    /// stored templates). An unreadable file, or one that does not
    /// compile, is an error naming it, so a bad deploy stops the start or
    /// the SIGHUP (which keeps the running set) instead of failing every
    /// phone that fetches the file.
    pub fn load(dir: &Path, generation: u64) -> Result<Shipped, ProvisionError> {
        Shipped::read(dir, generation, true)
    }

    /// [`Shipped::load`] without refusing: a folder that is not there is
    /// an empty set, and a file that does not compile is kept, each
    /// logged as an error. For a start only ([`Shipped::from_source_at_start`]).
    fn load_as_read(dir: &Path, generation: u64) -> Result<Shipped, ProvisionError> {
        Shipped::read(dir, generation, false)
    }

    fn read(dir: &Path, generation: u64, checked: bool) -> Result<Shipped, ProvisionError> {
        if let Err(missing) = templates_dir_exists(dir) {
            if checked {
                return Err(missing);
            }
            tracing::error!(error = %missing, "shipped templates: serving the built-in set only");
            return Ok(Shipped {
                templates: HashMap::new(),
                generation,
                source: Source::Dir(dir.to_path_buf()),
            });
        }
        warn_of_unknown_folders(dir);
        let mut templates = HashMap::new();
        for family in Family::ALL {
            let folder = dir.join(family.as_str());
            let entries = match std::fs::read_dir(&folder) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(ProvisionError::Templates(format!(
                        "{}: {e}",
                        folder.display()
                    )))
                }
            };
            for entry in entries {
                let entry = entry
                    .map_err(|e| ProvisionError::Templates(format!("{}: {e}", folder.display())))?;
                let file_name = entry.file_name();
                let path = entry.path();
                let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".tera")) else {
                    if !hidden(&file_name) {
                        tracing::warn!(
                            file = %path.display(),
                            "shipped templates: not a `<name>.tera` file; ignored"
                        );
                    }
                    continue;
                };
                let body = std::fs::read_to_string(&path)
                    .map_err(|e| ProvisionError::Templates(format!("{}: {e}", path.display())))?;
                match compiles(*family, name, &path, &body) {
                    Err(e) if checked => return Err(e),
                    Err(e) => tracing::error!(error = %e, "shipped templates: kept as read"),
                    Ok(()) => {}
                }
                templates.insert((*family, name.to_string()), Arc::from(body));
            }
        }
        Ok(Shipped {
            templates,
            generation,
            source: Source::Dir(dir.to_path_buf()),
        })
    }

    pub fn get(&self, family: Family, name: &str) -> Option<&Arc<str>> {
        self.templates.get(&(family, name.to_string()))
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = (Family, &str)> {
        self.templates.keys().map(|(f, n)| (*f, n.as_str()))
    }
}

fn templates_dir_exists(dir: &Path) -> Result<(), ProvisionError> {
    if dir.as_os_str().is_empty() {
        // `"".join("yealink")` is `yealink` in the working directory.
        return Err(ProvisionError::Templates(
            "the templates directory is an empty path; leave templates_dir unset \
             to serve the built-in templates only"
                .into(),
        ));
    }
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ProvisionError::Templates(format!(
            "{}: not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ProvisionError::Templates(
            format!("{}: the templates directory does not exist", dir.display()),
        )),
        Err(e) => Err(ProvisionError::Templates(format!("{}: {e}", dir.display()))),
    }
}

/// Dot files (`.git`, an editor's swap file) are somebody else's.
fn hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

/// A folder named after no family (`yealinks`, `Yealink`) is never read:
/// its files would silently leave the built-in ones in place.
fn warn_of_unknown_folders(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let family = name
            .to_str()
            .is_some_and(|n| Family::ALL.iter().any(|f| f.as_str() == n));
        if !family && !hidden(&name) {
            tracing::warn!(
                entry = %entry.path().display(),
                "shipped templates: not a family folder; ignored"
            );
        }
    }
}

/// The name a template compiles under when no file of its family renders
/// from it.
const UNSERVED: &str = "unserved";

/// Compiles `body` the way a render compiles it (the same checks, the same
/// engine), so a shipped file obeys the rules a tenant's does.
fn compiles(family: Family, name: &str, path: &Path, body: &str) -> Result<(), ProvisionError> {
    let served = crate::identify::template_names(family)
        .into_iter()
        .find(|known| *known == name);
    if served.is_none() {
        tracing::warn!(
            file = %path.display(),
            "shipped templates: no file of this family renders from this template"
        );
    }
    let template = Resolved {
        origin: Origin::Shipped { generation: 0 },
        family,
        name: served.unwrap_or(UNSERVED),
        body: Arc::from(body),
    };
    match crate::render::compile(&template, &crate::engine::Budget::default()) {
        Ok(_) => Ok(()),
        Err(ProvisionError::Render {
            line,
            column,
            message,
            ..
        }) => Err(ProvisionError::Templates(format!(
            "{}{}: {message}",
            path.display(),
            crate::error::position(line, column)
        ))),
        Err(e) => Err(ProvisionError::Templates(format!(
            "{}: {e}",
            path.display()
        ))),
    }
}

/// Where the template that renders a file came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    Stored {
        id: Id,
        version: i64,
        /// The tenant a phone- or tenant-scope template belongs to.
        tenant: Option<Id>,
    },
    Shipped {
        generation: u64,
    },
    /// An unsaved body under review (preview, validation); never cached.
    Draft,
}

/// The template chosen for one file.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub origin: Origin,
    pub family: Family,
    pub name: &'static str,
    pub body: Arc<str>,
}

impl Resolved {
    /// How logs and errors name it: `yealink/{mac}.cfg (stored #12 v3)`.
    pub fn label(&self) -> String {
        match &self.origin {
            Origin::Stored { id, version, .. } => {
                format!("{}/{} (stored #{id} v{version})", self.family, self.name)
            }
            Origin::Shipped { .. } => format!("{}/{} (shipped)", self.family, self.name),
            Origin::Draft => format!("{}/{} (draft)", self.family, self.name),
        }
    }
}

/// Finds the template for `name`: phone, tenant, model and family scopes in
/// the mirror, then the shipped file.
pub fn resolve(
    state: &MirrorState,
    shipped: &Shipped,
    family: Family,
    name: &'static str,
    phone: Option<&Phone>,
    model: Option<&str>,
) -> Option<Resolved> {
    resolve_with(state, shipped, family, name, phone, model, None)
}

/// The stored model-scope key that applies to `model`: models compare
/// case-blind, the way [`crate::models`] spells them, so a template saved
/// for `t46s` applies to a `T46S`. A draft for one of its spellings takes
/// that place. Should two stored keys name the same model (saved before
/// the API refused that), the lowest id wins, so every node and every
/// render picks the same one.
fn model_scope_key(
    state: &MirrorState,
    family: Family,
    name: &str,
    model: &str,
    draft: Option<&Draft>,
) -> String {
    let spellings = crate::models::spellings(family, model);
    let drafted = draft.map(|d| &d.key).filter(|k| {
        k.scope == TemplateScope::Model
            && k.family == family
            && *k.file_pattern == *name
            && spellings.iter().any(|s| *s == *k.scope_key)
    });
    if let Some(key) = drafted {
        return key.scope_key.to_string();
    }
    spellings
        .iter()
        .filter_map(|spelling| {
            let key = TemplateKey {
                scope: TemplateScope::Model,
                family,
                scope_key: spelling.as_str().into(),
                file_pattern: name.into(),
            };
            state.template_by_key(&key).map(|t| (t.id, spelling))
        })
        .min()
        .map_or_else(|| model.to_string(), |(_, spelling)| spelling.clone())
}

/// Whether two model names are the same model of `family` (case and
/// Cisco's prefixes aside): a second model-scope template for the same
/// model would never apply.
pub fn same_model(family: Family, a: &str, b: &str) -> bool {
    model_spelling(family, a) == model_spelling(family, b)
}

/// The one spelling [`same_model`] compares models by, for callers that
/// index many models (an import's templates) instead of comparing pairs.
pub fn model_spelling(family: Family, model: &str) -> String {
    crate::models::canonical(family, model)
}

/// A body that stands in for the stored template with `key` (which need not
/// exist yet): what a phone would get if the draft were saved.
#[derive(Clone, Debug)]
pub struct Draft {
    pub key: TemplateKey,
    pub body: Arc<str>,
}

/// [`resolve`], with `draft` taking its key's place in the chain.
pub fn resolve_with(
    state: &MirrorState,
    shipped: &Shipped,
    family: Family,
    name: &'static str,
    phone: Option<&Phone>,
    model: Option<&str>,
    draft: Option<&Draft>,
) -> Option<Resolved> {
    let key = |scope, scope_key: String| TemplateKey {
        scope,
        family,
        scope_key: scope_key.into(),
        file_pattern: name.into(),
    };
    let mut candidates = Vec::with_capacity(4);
    if let Some(phone) = phone {
        candidates.push(key(TemplateScope::Phone, phone.mac.to_string()));
        candidates.push(key(TemplateScope::Tenant, phone.tenant_id.to_string()));
    }
    let owner = |scope| match (scope, phone) {
        (TemplateScope::Phone | TemplateScope::Tenant, Some(phone)) => Some(phone.tenant_id),
        _ => None,
    };
    if let Some(model) = model.filter(|m| !m.is_empty()) {
        candidates.push(key(
            TemplateScope::Model,
            model_scope_key(state, family, name, model, draft),
        ));
    }
    candidates.push(key(TemplateScope::Family, String::new()));
    for candidate in &candidates {
        if let Some(draft) = draft.filter(|d| d.key == *candidate) {
            return Some(Resolved {
                origin: Origin::Draft,
                family,
                name,
                body: draft.body.clone(),
            });
        }
        if let Some(t) = state.template_by_key(candidate) {
            return Some(Resolved {
                origin: Origin::Stored {
                    id: t.id,
                    version: t.version,
                    tenant: owner(candidate.scope),
                },
                family,
                name,
                body: Arc::from(&*t.body),
            });
        }
    }
    shipped.get(family, name).map(|body| Resolved {
        origin: Origin::Shipped {
            generation: shipped.generation,
        },
        family,
        name,
        body: body.clone(),
    })
}

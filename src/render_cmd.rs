//! `dialtone render`: the files phones would get, without a server. Admins
//! review or diff a change with it; the benchmarks give static servers the
//! very bytes dialtone renders.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use dialtone_sync::{Mac, Phone};
use dialtone_tftp::identify::file_names;
use dialtone_tftp::{Protocol, ProvisionError, ProvisionOptions, Provisioner, Request, Shipped};

use crate::config::Config;

mod folder;

#[derive(Args)]
// Checked as the command line is read: without either there is nothing to
// render, and no reason to open the database first.
#[command(group(clap::ArgGroup::new("phones").required(true).args(["mac", "all"])))]
pub struct RenderArgs {
    /// Render every file of every phone into --out.
    #[arg(long, requires = "out", conflicts_with = "mac")]
    pub all: bool,
    /// Where --all writes (created if missing). Files of the same bytes
    /// are hard links to one file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --all, only this tenant's phones (by slug); repeat for more.
    /// Default: every tenant.
    #[arg(long = "tenant", value_name = "SLUG", requires = "all")]
    pub tenants: Vec<String>,
    /// One phone: print the named file, or list the phone's files.
    pub mac: Option<String>,
    /// The file to print, by the name the phone asks for (e.g. 0015654aa937.cfg).
    pub file: Option<String>,
}

fn render(provisioner: &Provisioner, name: &str) -> Result<Option<Arc<[u8]>>, ProvisionError> {
    let request = Request {
        path: name,
        protocol: Protocol::Render,
        ..Default::default()
    };
    match provisioner.provision(&request) {
        Ok(rendered) if rendered.file.is_none() => Ok(Some(rendered.body)),
        // Static files are served as they are; they are not renders.
        Ok(_) | Err(ProvisionError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One phone's file, or the list of its files, on `out`. Only the files
/// the phone itself fetches: a name is rendered by itself, and another
/// phone's file name would print that phone's file, another tenant's too.
/// A common file (its model's, its family's) renders by its name alone,
/// as TFTP, which carries no User-Agent, serves it to the phone: the bytes
/// `render --all` writes too.
fn print_phone(
    provisioner: &Provisioner,
    phone: &Phone,
    file: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let names = file_names(phone.family, &phone.mac, phone.model.as_deref());
    let Some(file) = file else {
        for name in names {
            if let Some(body) = render(provisioner, &name)? {
                writeln!(out, "{name}\t{} bytes", body.len())?;
            }
        }
        return Ok(out.flush()?);
    };
    // Phones spell names in either case; the server reads them alike.
    if !names.iter().any(|name| name.eq_ignore_ascii_case(file)) {
        bail!(
            "{file} is not a file of phone {}; its files: {} (`dialtone render {}` lists those that render)",
            phone.mac,
            names.join(", "),
            phone.mac
        );
    }
    let body = render(provisioner, file)?.with_context(|| format!("{file}: not found"))?;
    out.write_all(&body)?;
    Ok(out.flush()?)
}

/// A renderer over `mirror` with the configured shipped templates, budget
/// and base URL, for commands that render without serving (`render`, an
/// import's template checks).
pub(crate) fn offline_provisioner(
    config: &Config,
    mirror: std::sync::Arc<dialtone_sync::Mirror>,
    key: dialtone_sync::SecretKey,
) -> Result<Provisioner> {
    let source = config.provisioning.shipped_source();
    let shipped = Shipped::from_source(&source, 1)
        .with_context(|| format!("reading shipped templates ({source:?})"))?;
    Ok(Provisioner::new(
        mirror,
        key,
        shipped,
        ProvisionOptions {
            base_url: config.provisioning.base_url(),
            budget: config.provisioning.render_options().0,
            ..Default::default()
        },
    ))
}

pub async fn run(config: &Config, args: &RenderArgs) -> Result<()> {
    // A MAC of no form is the command line's fault: said before any
    // database is opened.
    let mac: Option<Mac> = (args.mac.as_ref())
        .map(|mac| {
            mac.parse()
                .map_err(|e| crate::usage_error(format!("{mac:?}: {e}")))
        })
        .transpose()?;
    let (_store, mirror, key) = crate::loaded_mirror(config).await?;
    let provisioner = offline_provisioner(config, mirror.clone(), key)?;
    let state = mirror.load();

    if let Some(mac) = mac {
        let phone = state
            .phone_by_mac(&mac)
            .with_context(|| format!("no phone {mac}"))?;
        let printed = print_phone(
            &provisioner,
            phone,
            args.file.as_deref(),
            &mut std::io::stdout().lock(),
        );
        return crate::stdout_reader::quiet_if_reader_left(printed);
    }
    let phones = selected_phones(&state, &args.tenants)?;
    let out = (args.out.as_ref()).expect("clap requires a MAC or --all, and --out with --all");
    // The files hold line passwords in clear: a folder made here is its
    // owner's alone (one that exists is left as it is).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let mut folder = folder::Folder::new(out);
    // Shared files (model-common, boot) are rendered once per name; if two
    // phones would get different bytes under one name, say so.
    let mut written: BTreeMap<String, Arc<[u8]>> = BTreeMap::new();
    let mut conflicts = 0;
    let mut errors = 0;
    for phone in &phones {
        for name in file_names(phone.family, &phone.mac, phone.model.as_deref()) {
            // A model is stored as given (an import, a claimed phone's
            // User-Agent): a name that is not one plain file would write
            // outside --out.
            if !is_plain_file_name(&name) {
                eprintln!("{} {name:?}: not a plain file name; skipped", phone.mac);
                errors += 1;
                continue;
            }
            let body = match render(&provisioner, &name) {
                Ok(Some(body)) => body,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("{} {name}: {e}", phone.mac);
                    errors += 1;
                    continue;
                }
            };
            match written.get(&name) {
                Some(previous) if *previous == body => {}
                Some(_) => conflicts += 1,
                None => {
                    folder.add(&name, &body)?;
                    written.insert(name, body);
                }
            }
        }
    }
    println!(
        "{} files for {} phones in {}: {} distinct bodies, {} bytes written, {} hard links",
        folder.files,
        phones.len(),
        out.display(),
        folder.distinct(),
        folder.bytes_written,
        folder.links,
    );
    if conflicts > 0 {
        eprintln!("{conflicts} shared file names render differently for different phones; the first phone's bytes were kept");
    }
    if errors > 0 {
        bail!("{errors} files failed to render");
    }
    Ok(())
}

/// Every phone, or the named tenants' only. Every slug is checked before
/// anything is written, and all unknown ones are named at once.
fn selected_phones<'a>(
    state: &'a dialtone_sync::MirrorState,
    slugs: &[String],
) -> Result<Vec<&'a Arc<Phone>>> {
    if slugs.is_empty() {
        return Ok(state.phones().collect());
    }
    let mut tenants = BTreeSet::new();
    let mut unknown = Vec::new();
    for slug in slugs {
        match state.tenant_by_slug(slug) {
            Some(tenant) => {
                tenants.insert(tenant.id);
            }
            None => unknown.push(format!("{slug:?}")),
        }
    }
    if !unknown.is_empty() {
        bail!(
            "no tenant {} (--tenant takes a tenant's slug); nothing was written",
            unknown.join(", ")
        );
    }
    Ok(tenants
        .into_iter()
        .flat_map(|id| state.phones_of(id))
        .collect())
}

/// A rendered file fetched by `phlem fetch -o` holds line and HTTP
/// passwords in clear, so only its owner may read it, as `export`'s file.
/// Not `export`'s temporary file renamed into place, nor removed and made
/// anew as `render --all` does in its own folder: `-o /dev/null` would
/// replace the device. A regular file left readable by an earlier run is
/// narrowed before the secrets go in; a device is left as it is.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let regular = file
        .metadata()
        .with_context(|| format!("cannot write {}", path.display()))?
        .is_file();
    if regular {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

fn is_plain_file_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..") && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_one_plain_component_is_a_file_name() {
        for good in ["001565000001.cfg", "snomD785.htm", "cfgT46S.xml"] {
            assert!(super::is_plain_file_name(good), "{good}");
        }
        for bad in [
            "/etc/x-3PCC.xml",
            "a/b.cfg",
            "../x.cfg",
            "..",
            ".",
            "",
            "a\\b.cfg",
            "a/.",
        ] {
            assert!(!super::is_plain_file_name(bad), "{bad}");
        }
    }
}

//! `dialtone render`: the files phones would get, without a server. Admins
//! review or diff a change with it; the benchmarks give static servers the
//! very bytes dialtone renders.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use dialtone_sync::Mac;
use dialtone_tftp::identify::file_names;
use dialtone_tftp::{Protocol, ProvisionError, ProvisionOptions, Provisioner, Request, Shipped};

use crate::config::Config;

#[derive(Args)]
pub struct RenderArgs {
    /// Render every file of every phone into --out.
    #[arg(long, requires = "out", conflicts_with = "mac")]
    pub all: bool,
    /// Where --all writes (created if missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
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

pub async fn run(config: &Config, args: &RenderArgs) -> Result<()> {
    let (_store, mirror, key) = crate::loaded_mirror(config).await?;
    let source = config.provisioning.shipped_source();
    let shipped = Shipped::from_source(&source, 1)
        .with_context(|| format!("reading shipped templates ({source:?})"))?;
    let provisioner = Provisioner::new(
        mirror.clone(),
        key,
        shipped,
        ProvisionOptions {
            base_url: config.provisioning.base_url(),
            budget: config.provisioning.render_options().0,
            ..Default::default()
        },
    );
    let state = mirror.load();

    if let Some(mac) = &args.mac {
        let mac: Mac = mac.parse().map_err(|e| anyhow::anyhow!("{mac:?}: {e}"))?;
        let phone = state
            .phone_by_mac(&mac)
            .with_context(|| format!("no phone {mac}"))?;
        let names = file_names(phone.family, &phone.mac, phone.model.as_deref());
        match &args.file {
            Some(file) => {
                let body =
                    render(&provisioner, file)?.with_context(|| format!("{file}: not found"))?;
                use std::io::Write;
                std::io::stdout().write_all(&body)?;
            }
            None => {
                for name in names {
                    if let Some(body) = render(&provisioner, &name)? {
                        println!("{name}\t{} bytes", body.len());
                    }
                }
            }
        }
        return Ok(());
    }
    if !args.all {
        bail!("give a MAC (and a file), or --all --out DIR");
    }
    let out = args.out.as_ref().expect("clap requires --out with --all");
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Shared files (model-common, boot) are rendered once per name; if two
    // phones would get different bytes under one name, say so.
    let mut written: BTreeMap<String, Arc<[u8]>> = BTreeMap::new();
    let mut conflicts = 0;
    let mut errors = 0;
    let mut phones = 0;
    for phone in state.phones() {
        phones += 1;
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
                    std::fs::write(out.join(&name), &body)
                        .with_context(|| format!("writing {}", out.join(&name).display()))?;
                    written.insert(name, body);
                }
            }
        }
    }
    let bytes: usize = written.values().map(|b| b.len()).sum();
    println!(
        "{} files ({bytes} bytes) for {phones} phones in {}",
        written.len(),
        out.display()
    );
    if conflicts > 0 {
        eprintln!("{conflicts} shared file names render differently for different phones; the first phone's bytes were kept");
    }
    if errors > 0 {
        bail!("{errors} files failed to render");
    }
    Ok(())
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

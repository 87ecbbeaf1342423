//! PHLEM, the phone emulator: fetches files the way phones do, one phone or
//! thousands. `run` boots phones with their families' sequences, following
//! what the served files name as the phones would, `merge`
//! combines shard reports, `fetch` gets one file with phlem's TFTP client.

mod boot;
mod follow;
pub mod pbx;
pub mod report;
pub mod run;
pub mod sequence;
pub mod sip;
pub mod sip_phone;
pub mod tftp;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum PhlemCommand {
    /// Boot phones against a server, each with its family's sequence.
    Run(run::RunArgs),
    /// Caller-name lookups as a PBX sends them, at a steady rate.
    Pbx(pbx::PbxArgs),
    /// Combine the JSON reports of `run --shard i/n` processes.
    Merge {
        /// Report files written by `run --json`.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write the merged JSON report here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Fetch one file as a phone would, e.g. tftp://127.0.0.1:6969/0015654aa937.cfg
    Fetch(FetchArgs),
}

#[derive(Args)]
pub struct FetchArgs {
    /// tftp://HOST[:PORT]/FILE
    pub url: String,
    #[command(flatten)]
    pub tftp: tftp::TftpArgs,
    /// Write the file here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `tftp://host:port/path` into the server address and the file name.
fn parse_tftp_url(url: &str) -> Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("tftp://")
        .with_context(|| format!("{url:?}: only tftp:// URLs are supported"))?;
    let (authority, file) = rest
        .split_once('/')
        .with_context(|| format!("{url:?}: no file name"))?;
    if file.is_empty() {
        bail!("{url:?}: no file name");
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:69")
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url:?}: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{url:?}: no address for {authority}"))?;
    Ok((addr, file.to_string()))
}

fn finish(report: &report::Report, json: Option<&std::path::Path>) -> Result<()> {
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string(report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.failed() > 0 {
        bail!("{} transfers failed", report.failed());
    }
    Ok(())
}

pub async fn run(command: &PhlemCommand, config: &crate::config::Config) -> Result<()> {
    match command {
        PhlemCommand::Run(args) => {
            let report = run::run(args, config).await?;
            finish(&report, args.json.as_deref())
        }
        PhlemCommand::Pbx(args) => {
            let report = pbx::run(args).await?;
            finish(&report, args.json.as_deref())
        }
        PhlemCommand::Merge { reports, json } => {
            let mut parsed = Vec::new();
            for path in reports {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                parsed.push(
                    serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a phlem report", path.display()))?,
                );
            }
            finish(&report::Report::merge(parsed), json.as_deref())
        }
        PhlemCommand::Fetch(args) => {
            let (server, file) = parse_tftp_url(&args.url)?;
            let options = args.tftp.options();
            let transfer = tftp::get(server, &file, &options)
                .await
                .with_context(|| format!("fetching {file} from {server}"))?;
            eprintln!(
                "{} bytes in {:.1} ms (blksize {}, windowsize {}, {} retransmits)",
                transfer.bytes.len(),
                transfer.elapsed.as_secs_f64() * 1e3,
                transfer.blksize,
                transfer.windowsize,
                transfer.retransmits
            );
            match &args.output {
                Some(path) => crate::render_cmd::write_private(path, &transfer.bytes)?,
                None => std::io::stdout().write_all(&transfer.bytes)?,
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tftp_urls() {
        let (addr, file) = parse_tftp_url("tftp://127.0.0.1:6969/dir/a.cfg").unwrap();
        assert_eq!((addr.port(), file.as_str()), (6969, "dir/a.cfg"));
        assert_eq!(parse_tftp_url("tftp://127.0.0.1/a").unwrap().0.port(), 69);
        for bad in ["http://x/a", "tftp://127.0.0.1:69", "tftp://127.0.0.1:69/"] {
            assert!(parse_tftp_url(bad).is_err(), "{bad}");
        }
    }
}

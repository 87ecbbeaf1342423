//! `dialtone phlem run`: boots a set of phones against a server, each phone
//! running its family's sequence over TFTP or HTTP, with an arrival pattern
//! and a concurrency limit, and reports what happened.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use dialtone_sync::Family;
use tokio::sync::Semaphore;

use super::boot::{boot, Target};
use super::follow::Origin;
use super::report::Report;
use super::sequence::Phone;
use crate::config::Config;

#[derive(Args)]
pub struct RunArgs {
    /// tftp://HOST:PORT or http://HOST:PORT (the provisioning listener).
    #[arg(long)]
    pub target: String,
    /// Which phones: `demo` (the demo tenant's), `database` (every phone in
    /// the configured database, with their HTTP credentials and first
    /// lines), or a CSV file of `mac,family,model[,http_user,http_password][,aor]`
    /// lines (`aor`: `user@registrar`, for `--sip-proxy`).
    #[arg(long, default_value = "demo")]
    pub phones: String,
    /// Boot each phone this many times.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Phones booting at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// `storm` (all at once), `ramp:SECONDS` (evenly over that time) or
    /// `poisson:RATE` (random arrivals, RATE phones a second on average).
    #[arg(long, default_value = "storm")]
    pub arrival: String,
    /// This process's share of the phones, `i/n` (1-based): run n phlems,
    /// on one machine or several, and `phlem merge` their reports.
    #[arg(long)]
    pub shard: Option<String>,
    #[command(flatten)]
    pub tftp: super::tftp::TftpArgs,
    /// TFTP: each phone keeps one source port for all its files, as many
    /// embedded clients do (default: a fresh port per file).
    #[arg(long)]
    pub same_port: bool,
    /// Compare every answer with the file of the same name in this folder
    /// (`dialtone render --all --out DIR`); a difference is a failure
    /// (`mismatch`), and so is a file the folder lacks (`not_rendered`).
    #[arg(long)]
    pub verify: Option<PathBuf>,
    /// Write the JSON report here (for `phlem merge`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub sip: super::sip_phone::SipArgs,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Arrival {
    Storm,
    Ramp(f64),
    Poisson(f64),
}

fn parse_arrival(text: &str) -> Result<Arrival> {
    let number = |s: &str| -> Result<f64> {
        let v: f64 = s
            .parse()
            .with_context(|| format!("--arrival {text:?}: {s:?} is not a number"))?;
        if !(v > 0.0 && v.is_finite()) {
            bail!("--arrival {text:?}: must be positive");
        }
        Ok(v)
    };
    // Bounded so every wait is a Duration (a ramp of 1e20 s, or a rate of
    // 1e-30, would not be one) and a run can end.
    let within = |v: f64, (low, high): (f64, f64), what: &str| -> Result<f64> {
        if !(low..=high).contains(&v) {
            bail!("--arrival {text:?}: {what} must be between {low} and {high}");
        }
        Ok(v)
    };
    match text.split_once(':') {
        None if text == "storm" => Ok(Arrival::Storm),
        Some(("ramp", s)) => Ok(Arrival::Ramp(within(number(s)?, (1e-6, 1e7), "SECONDS")?)),
        Some(("poisson", r)) => Ok(Arrival::Poisson(within(number(r)?, (1e-6, 1e9), "RATE")?)),
        _ => bail!("--arrival {text:?}: use storm, ramp:SECONDS or poisson:RATE"),
    }
}

fn parse_shard(text: &str) -> Result<(usize, usize)> {
    let (i, n) = text
        .split_once('/')
        .with_context(|| format!("--shard {text:?}: use i/n"))?;
    let (i, n): (usize, usize) = (
        i.parse().with_context(|| format!("--shard {text:?}"))?,
        n.parse().with_context(|| format!("--shard {text:?}"))?,
    );
    if n == 0 || i == 0 || i > n {
        bail!("--shard {text:?}: need 1 <= i <= n");
    }
    Ok((i - 1, n))
}

/// Start offsets for `count` phones.
fn arrivals(arrival: Arrival, count: usize) -> Vec<Duration> {
    match arrival {
        Arrival::Storm => vec![Duration::ZERO; count],
        Arrival::Ramp(seconds) => (0..count)
            .map(|i| Duration::from_secs_f64(seconds * i as f64 / count.max(1) as f64))
            .collect(),
        Arrival::Poisson(rate) => {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            let mut t = 0.0;
            (0..count)
                .map(|_| {
                    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                    t += -u.ln() / rate;
                    Duration::from_secs_f64(t)
                })
                .collect()
        }
    }
}

async fn load_phones(source: &str, config: &Config) -> Result<Vec<Phone>> {
    let phone = |mac: &str, family: Family, model: &str| -> Result<Phone> {
        Ok(Phone {
            mac: mac.parse().map_err(|e| anyhow::anyhow!("{mac:?}: {e}"))?,
            family,
            model: model.to_string(),
            credentials: None,
            aor: None,
        })
    };
    match source {
        "demo" => crate::demo::PHONES
            .iter()
            .map(|p| phone(p.mac, p.family, p.model))
            .collect(),
        "database" => {
            let (store, key) = crate::serve::open_reached_store(config).await?;
            crate::check_schema(&*store).await?;
            let (data, _, _) = store.load_all().await.context("reading phones")?;
            // The first line's AOR as the shipped templates make phones
            // register it, and as resync NOTIFYs name it: the extension at
            // the line's registrar (the auth user only authenticates).
            let mut first_lines: std::collections::HashMap<_, &dialtone_sync::Line> =
                Default::default();
            for line in &data.lines {
                let first = first_lines.entry(line.phone_id).or_insert(line);
                if line.position < first.position {
                    *first = line;
                }
            }
            let mut phones = Vec::with_capacity(data.phones.len());
            for p in data.phones {
                let credentials = match (&p.http_user, &p.http_password) {
                    (Some(user), Some(sealed)) => {
                        let password = key
                            .open(dialtone_sync::Purpose::DeviceHttpPassword, sealed)
                            .with_context(|| format!("opening the HTTP password of {}", p.mac))?;
                        Some((user.to_string(), password))
                    }
                    _ => None,
                };
                let aor = first_lines.get(&p.id).map(|l| super::sip::Aor {
                    user: l.extension.to_string(),
                    host: l.registrar.to_string(),
                });
                phones.push(Phone {
                    aor,
                    mac: p.mac,
                    family: p.family,
                    model: p.model.as_deref().unwrap_or_default().to_string(),
                    credentials,
                });
            }
            Ok(phones)
        }
        path => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            let mut phones = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = || format!("{path}:{}", n + 1);
                let fields: Vec<&str> = line.split(',').map(str::trim).collect();
                let (mac, family, model, credentials, aor) = match fields[..] {
                    [mac, family, model] => (mac, family, model, None, None),
                    [mac, family, model, aor] => (mac, family, model, None, Some(aor)),
                    [mac, family, model, user, password, ref aor @ ..] if aor.len() < 2 => (
                        mac,
                        family,
                        model,
                        Some((user.to_string(), password.to_string())),
                        aor.first().copied(),
                    ),
                    _ => bail!(
                        "{}: want mac,family,model[,http_user,http_password][,aor]",
                        at()
                    ),
                };
                let family: Family = family
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
                let mut parsed = phone(mac, family, model).with_context(at)?;
                parsed.credentials = credentials;
                parsed.aor = aor
                    .map(str::parse)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
                phones.push(parsed);
            }
            Ok(phones)
        }
    }
}

/// The addresses an HTTP `--target` resolves to, for `Origin`. None when
/// the name does not resolve: then every fetch fails and says why.
async fn http_addresses(target: &str) -> Vec<std::net::IpAddr> {
    let Some((host, port)) = url::Url::parse(target).ok().and_then(|url| {
        let host = url.host_str()?.trim_matches(['[', ']']).to_string();
        Some((host, url.port_or_known_default()?))
    }) else {
        return Vec::new();
    };
    let resolved = tokio::net::lookup_host((host.as_str(), port)).await;
    resolved
        .map(|addresses| addresses.map(|a| a.ip()).collect())
        .unwrap_or_default()
}

/// `--target`'s scheme, before anything is loaded.
fn check_target(target: &str) -> Result<()> {
    if !["tftp://", "http://", "https://"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
    {
        bail!("--target {target:?}: use tftp://HOST:PORT or http://HOST:PORT");
    }
    Ok(())
}

/// What the command line asks that no phone or server can make right:
/// refused (exit 2) before the phones are loaded.
fn check_args(args: &RunArgs) -> Result<(Arrival, Option<(usize, usize)>)> {
    let arrival = parse_arrival(&args.arrival)?;
    if args.concurrency == 0 || args.repeat == 0 {
        bail!("--concurrency and --repeat must be at least 1");
    }
    if args.concurrency > 1_000_000 {
        bail!("--concurrency must be at most 1000000");
    }
    args.sip.hold_for()?;
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    check_target(&args.target)?;
    Ok((arrival, shard))
}

pub async fn run(args: &RunArgs, config: &Config) -> Result<Report> {
    let (arrival, shard) = check_args(args).map_err(crate::usage_error)?;
    let mut phones = load_phones(&args.phones, config).await?;
    if let Some((i, n)) = shard {
        phones = phones
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, p)| p)
            .collect();
    }
    if phones.is_empty() {
        bail!("no phones to boot");
    }
    let timeout = args.tftp.timeout();
    let (target, addresses) = if let Some(rest) = args.target.strip_prefix("tftp://") {
        let addr = rest.trim_end_matches('/');
        let addr = tokio::net::lookup_host(addr)
            .await
            .with_context(|| format!("--target {:?}", args.target))?
            .next()
            .with_context(|| format!("--target {:?}: no address", args.target))?;
        (Target::Tftp(addr), vec![addr.ip()])
    } else {
        // http:// or https://: `check_target` let no other through.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout * 5)
            .pool_max_idle_per_host(args.concurrency)
            .build()
            .context("building the HTTP client")?;
        let target = Target::Http(args.target.trim_end_matches('/').to_string(), client);
        (target, http_addresses(&args.target).await)
    };
    let origin = Arc::new(Origin::new(&args.target, addresses));
    let options = args.tftp.options();
    let boots: Vec<Phone> = (0..args.repeat)
        .flat_map(|_| phones.iter().cloned())
        .collect();
    let starts = arrivals(arrival, boots.len());
    let report = Arc::new(Mutex::new(Report {
        target: args.target.clone(),
        phones: boots.len() as u64,
        ..Default::default()
    }));
    let bar = (!args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| indicatif::ProgressBar::new(boots.len() as u64));
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let target = Arc::new(target);
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (phone, start) in boots.into_iter().zip(starts) {
        let (permits, target, origin, report, options, bar) = (
            permits.clone(),
            target.clone(),
            origin.clone(),
            report.clone(),
            options.clone(),
            bar.clone(),
        );
        let verify = args.verify.clone();
        let same_port = args.same_port;
        tasks.spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(began + start)).await;
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            boot(
                &target,
                &origin,
                &phone,
                &options,
                verify.as_deref(),
                same_port,
                &report,
            )
            .await;
            if let Some(bar) = bar {
                bar.inc(1);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let elapsed_s = began.elapsed().as_secs_f64();
    // Phones told to check their configuration fetch it again as at boot,
    // minus `--verify`: its files are from before the change.
    let refetch: super::sip_phone::Fetcher = {
        let (target, origin, report) = (target.clone(), origin.clone(), report.clone());
        let (options, same_port) = (options.clone(), args.same_port);
        Arc::new(move |phone: Phone| {
            let (target, origin) = (target.clone(), origin.clone());
            let (report, options) = (report.clone(), options.clone());
            Box::pin(async move {
                boot(&target, &origin, &phone, &options, None, same_port, &report).await
            })
        })
    };
    super::sip_phone::hold(&args.sip, &phones, refetch, report.clone()).await?;
    let mut report = std::mem::take(&mut *report.lock().unwrap_or_else(|e| e.into_inner()));
    report.elapsed_s = elapsed_s;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_patterns() {
        assert_eq!(parse_arrival("storm").unwrap(), Arrival::Storm);
        assert_eq!(parse_arrival("ramp:10").unwrap(), Arrival::Ramp(10.0));
        assert!(parse_arrival("poisson:0").is_err());
        assert!(parse_arrival("burst").is_err());
        // Past what a Duration holds, refused rather than a panic.
        assert!(parse_arrival("ramp:1e20").is_err());
        assert!(parse_arrival("poisson:1e-30").is_err());
        assert!(parse_arrival("poisson:1e-6").is_ok());
        let ramp = arrivals(Arrival::Ramp(10.0), 5);
        assert_eq!(ramp[1], Duration::from_secs(2));
        let poisson = arrivals(Arrival::Poisson(100.0), 1000);
        assert!(poisson.windows(2).all(|w| w[0] <= w[1]));
        // 1000 arrivals at 100/s take about 10 s.
        let last = poisson.last().unwrap().as_secs_f64();
        assert!((7.0..13.0).contains(&last), "{last}");
        assert_eq!(parse_shard("2/3").unwrap(), (1, 3));
        assert!(parse_shard("0/3").is_err() && parse_shard("4/3").is_err());
    }
}

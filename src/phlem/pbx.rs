//! `dialtone phlem pbx`: a PBX asking who is calling, at a steady rate,
//! from a list of known numbers mixed with unknown ones, the way
//! mod_cidlookup asks (digits only, key in the query).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::Rng;

use super::report::Report;

#[derive(Args)]
pub struct PbxArgs {
    /// The API listener, http://HOST:PORT.
    #[arg(long)]
    pub target: String,
    /// A lookup key of the tenant (`dialtone token create --scope lookup`).
    #[arg(long, env = "PHLEM_LOOKUP_KEY", hide_env_values = true)]
    pub key: String,
    /// Numbers the tenant's directory knows, one per line, any format.
    #[arg(long)]
    pub numbers: PathBuf,
    /// Lookups a second, sent on schedule whether or not earlier ones returned.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to send lookups.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Share of lookups for numbers nobody has (random fictional numbers).
    #[arg(long, default_value_t = 0.2)]
    pub miss_ratio: f64,
    /// What a PBX would wait at most (mod_cidlookup's default is 2 s).
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Write the report as JSON here too (for `phlem merge`).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub async fn run(args: &PbxArgs) -> Result<Report> {
    let rate_ok = args.rate > 0.0 && args.rate.is_finite();
    if !rate_ok || !(0.0..=1.0).contains(&args.miss_ratio) {
        return Err(crate::usage_error(
            "--rate must be positive and --miss-ratio between 0 and 1",
        ));
    }
    let text = std::fs::read_to_string(&args.numbers)
        .with_context(|| format!("reading {}", args.numbers.display()))?;
    let known: Vec<String> = text
        .lines()
        .map(|l| l.chars().filter(char::is_ascii_digit).collect::<String>())
        .filter(|d| !d.is_empty())
        .collect();
    if known.is_empty() && args.miss_ratio < 1.0 {
        bail!("{}: no numbers", args.numbers.display());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms.max(1)))
        .user_agent("freeswitch-cidlookup/1.0")
        .build()
        .context("building the HTTP client")?;
    let base = args.target.trim_end_matches('/').to_string();
    let total = (args.rate * args.seconds as f64).round() as u64;
    let report = Arc::new(Mutex::new(Report {
        target: args.target.clone(),
        ..Default::default()
    }));
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let at = began + Duration::from_secs_f64(i as f64 / args.rate);
        let (miss, number) = {
            let mut rng = rand::thread_rng();
            if known.is_empty() || rng.gen_bool(args.miss_ratio) {
                (true, format!("1555{:07}", rng.gen_range(0..10_000_000)))
            } else {
                (false, known[rng.gen_range(0..known.len())].clone())
            }
        };
        let url = format!("{base}/v1/lookup?number={number}&key={}", args.key);
        let (client, report) = (client.clone(), report.clone());
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        tasks.spawn(async move {
            let step = if miss {
                "lookup unknown number"
            } else {
                "lookup known number"
            };
            let started = Instant::now();
            let result = async {
                let response = client.get(&url).send().await.map_err(|e| {
                    if e.is_timeout() {
                        "timeout".to_string()
                    } else {
                        "connect".to_string()
                    }
                })?;
                let status = response.status();
                let body = response.text().await.map_err(|_| "body".to_string())?;
                if !status.is_success() {
                    return Err(format!("http_{}", status.as_u16()));
                }
                Ok(body)
            }
            .await;
            let elapsed = started.elapsed();
            let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(body) if !miss && body.is_empty() => report.record_failure(step, "no_name"),
                Ok(body) => report.record_ok(step, elapsed, body.len(), 0),
                Err(reason) => report.record_failure(step, &reason),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut report = std::mem::take(&mut *report.lock().unwrap_or_else(|e| e.into_inner()));
    report.elapsed_s = began.elapsed().as_secs_f64();
    Ok(report)
}

//! Configuration: defaults < TOML file < `DIALTONE_*` environment < flags.
//!
//! Environment variables name a key by its path with `__` between levels:
//! `DIALTONE_DATABASE__URL`, `DIALTONE_SECRETS__KEY`, `DIALTONE_HTTP__LISTEN`.
//! Every field is documented in the README's configuration reference; keep
//! the two in step.
//!
//! The sections' types live in `sections.rs` (the small ones) and
//! `provisioning.rs` (provisioning and lookups); the checks run after
//! loading in `validate.rs`.

mod preflight;
mod provisioning;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub(crate) use preflight::snapshot_folder_problem;
pub use provisioning::listen_or_off;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use provisioning::{warn_if_one_address_closes_a_phone, LookupConfig, ProvisioningConfig};
pub use sections::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub provisioning: ProvisioningConfig,
    pub secrets: SecretsConfig,
    pub mirror: MirrorConfig,
    pub http: HttpConfig,
    pub lookup: LookupConfig,
    pub log: LogConfig,
    pub supervision: SupervisionConfig,
    /// Per-tenant defaults; a global admin sets a tenant's own in its
    /// settings (`"quotas": {"phones": 50000}`).
    pub quotas: crate::admin::quotas::QuotaConfig,
    pub resync: ResyncConfig,
}

const ENV_PREFIX: &str = "DIALTONE_";
/// Variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["DIALTONE_CONFIG", "DIALTONE_TEST_"];

/// Whether an environment variable sets a config key.
fn is_setting(name: &str) -> bool {
    name.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.iter().any(|p| name.starts_with(p))
}

impl Config {
    /// Reads the file (if any), then applies the environment. Errors name the
    /// file, line and key, or the variable. Not validated: the caller
    /// applies the command line's settings over it first, then validates
    /// (`main.rs` `load_config`, the SIGHUP reload), so that a file valid
    /// only with them (another listener, a SQLite `--database-url` for a
    /// file naming PostgreSQL without a key) is not refused.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        // `vars()` panics on a variable that is not UTF-8, anyone's: only
        // ours must be readable, and one that is not is a clear error.
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| is_setting(n)) else {
                continue;
            };
            let value = value.into_string().map_err(|_| {
                anyhow::anyhow!("environment variable {name}: the value is not UTF-8")
            })?;
            env.push((name.to_string(), value));
        }
        Self::parse_from(path, env.into_iter())
    }

    /// [`Config::load`] from `env`, validated as it is.
    pub fn load_from(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config> {
        let config = Self::parse_from(path, env)?;
        config.validate()?;
        Ok(config)
    }

    fn parse_from(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut value = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config {}", path.display()))?;
                // Deserialize straight from the text first: only then do
                // errors carry the line and the key.
                toml::from_str::<Config>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e)))?;
                text.parse::<toml::Table>()
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e)))?
            }
            None => toml::Table::new(),
        };
        let mut env: Vec<(String, String)> = env.filter(|(k, _)| is_setting(k)).collect();
        env.sort();
        for (name, raw) in &env {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(|p| p.to_ascii_lowercase())
                .collect();
            set_path(&mut value, &path, parse_env_value(raw))
                .with_context(|| format!("environment variable {name}"))?;
            let check: Result<Config, _> = toml::Value::Table(value.clone()).try_into();
            if let Err(e) = check {
                bail!("environment variable {name}: {}", one_line(&e));
            }
        }
        toml::Value::Table(value)
            .try_into()
            .map_err(|e| anyhow::anyhow!("{}", one_line(&e)))
    }

    /// SQLite file path when the database is SQLite.
    pub(crate) fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self
            .database
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.database.url.strip_prefix("sqlite:"))?;
        let rest = rest.split('?').next().unwrap_or(rest);
        (!rest.is_empty() && rest != ":memory:").then(|| PathBuf::from(rest))
    }

    pub fn key_file(&self) -> Option<PathBuf> {
        self.secrets
            .key_file
            .clone()
            .or_else(|| self.sqlite_path().map(|p| p.with_extension("key")))
    }

    /// Where mirrored LDAP sources keep their files: the snapshot's
    /// directory (`ldap-mirror-<source id>.bin`).
    pub fn mirror_dir(&self) -> PathBuf {
        self.snapshot_path()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    }

    pub fn snapshot_path(&self) -> PathBuf {
        self.mirror
            .snapshot_path
            .clone()
            .unwrap_or_else(|| match self.sqlite_path() {
                Some(p) => p.with_extension("snapshot"),
                None => PathBuf::from("dialtone.snapshot"),
            })
    }

    /// This node's own listeners (API, monitoring, provisioning, HTTPS,
    /// TFTP), which sources tenants configure may never reach.
    pub fn own_listeners(&self) -> Vec<SocketAddr> {
        [
            Some(self.http.listen),
            self.http.monitoring_listen,
            Some(self.provisioning.http_listen),
            self.provisioning.https_listen,
            self.provisioning.tftp_listen,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The sockets `serve` binds, with their keys, by protocol: the
    /// resync socket only when resync is on, as `serve` binds it.
    fn bound_listeners(&self) -> [(&'static str, Vec<(&'static str, SocketAddr)>); 2] {
        let (http, p) = (&self.http, &self.provisioning);
        let tcp = [
            ("http.listen", Some(http.listen)),
            ("http.monitoring_listen", http.monitoring_listen),
            ("provisioning.http_listen", Some(p.http_listen)),
            ("provisioning.https_listen", p.https_listen),
        ];
        let udp = [
            ("provisioning.tftp_listen", p.tftp_listen),
            (
                "resync.listen",
                self.resync.enabled().then_some(self.resync.listen),
            ),
        ];
        let present = |listeners: &[(&'static str, Option<SocketAddr>)]| {
            listeners
                .iter()
                .filter_map(|&(key, addr)| Some((key, addr?)))
                .collect()
        };
        [("TCP", present(&tcp)), ("UDP", present(&udp))]
    }

    /// The lookup options `serve` and `dialtone lookup` both run with: the
    /// `[lookup]` section, this node's own listeners refused, and mirrored
    /// sources' files and quota.
    pub fn lookup_options(&self) -> Result<dialtone_directory::LookupOptions> {
        let mut options = self.lookup.options(self.own_listeners())?;
        options.mirror_dir = Some(self.mirror_dir());
        options.mirror_entry_quota = self.quotas.directory_entries;
        Ok(options)
    }

    /// The effective config as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.secrets.key.is_some() {
            shown.secrets.key = Some("********".into());
        }
        shown.database.url = dialtone_sync::store::masked_url(&shown.database.url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    // toml's messages span several lines with a source excerpt; keep the
    // position line and the message, which is what an operator needs.
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let position = lines
        .iter()
        .find(|l| l.starts_with("TOML parse error"))
        .map(|l| l.trim_start_matches("TOML parse error "));
    let message = lines.last().copied().unwrap_or("");
    match position {
        Some(p) => format!("{p}: {message}"),
        None => lines.join(" "),
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Numbers and booleans as TOML reads them; anything else is a string.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) if !matches!(t.get("v"), Some(toml::Value::Table(_))) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        _ => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<()> {
    let (last, parents) = path.split_last().context("empty key")?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .with_context(|| format!("{part} is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// Settings given on the command line, which win over the file: applied
/// at start and again to each configuration SIGHUP reads, so a reload
/// neither drops them nor reports them as changes awaiting a restart.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub database_url: Option<String>,
    pub listen: Option<std::net::SocketAddr>,
    pub monitoring_listen: Option<std::net::SocketAddr>,
    pub provisioning_listen: Option<std::net::SocketAddr>,
    /// `Some(None)`: `--tftp-listen off`.
    pub tftp_listen: Option<Option<std::net::SocketAddr>>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(url) = &self.database_url {
            config.database.url = url.clone();
        }
        if let Some(listen) = self.listen {
            config.http.listen = listen;
        }
        if let Some(listen) = self.monitoring_listen {
            config.http.monitoring_listen = Some(listen);
        }
        if let Some(listen) = self.provisioning_listen {
            config.provisioning.http_listen = listen;
        }
        if let Some(listen) = self.tftp_listen {
            config.provisioning.tftp_listen = listen;
        }
    }
}

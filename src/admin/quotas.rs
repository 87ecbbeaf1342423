//! Per-tenant quotas. Everything a tenant stores sits in memory on every
//! node, so a tenant admin may not grow it without bound. The operator's
//! config sets the defaults (`[quotas]`); a global admin raises or lowers
//! them for one tenant in the tenant's settings (`"quotas": {"phones":
//! 50000}`), which a tenant's own tokens cannot change.
//!
//! Counts come from the mirror, so creates running at once each see the
//! count from before the others: a tenant at its quota can pass it by as
//! many creates as it runs at once, at most its database share on each
//! node (`max(1, database.max_connections / 4)`, 2 of the default pool)
//! times the nodes, less one. The overshoot does not grow while the node's
//! mirror is current: once it holds those rows, every further create is
//! refused. A node whose mirror lags (a long reload, a failing catch-up)
//! counts from what it has, and lets creates through until it catches up. An exact count would
//! take a per-tenant lock in every writing transaction.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use dialtone_sync::Tenant;

use super::error::ApiError;

/// One per-tenant limit: the key in `[quotas]` and in `settings.quotas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    Phones,
    LinesPerPhone,
    Templates,
    TemplateVersions,
    TemplateBytes,
    DirectoryEntries,
    DirectoryNumbers,
    DirectorySources,
    PhoneJsonBytes,
    WritesPerMinute,
}

impl Quota {
    pub const ALL: [Quota; 10] = [
        Quota::Phones,
        Quota::LinesPerPhone,
        Quota::PhoneJsonBytes,
        Quota::Templates,
        Quota::TemplateVersions,
        Quota::TemplateBytes,
        Quota::DirectoryEntries,
        Quota::DirectoryNumbers,
        Quota::DirectorySources,
        Quota::WritesPerMinute,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Quota::Phones => "phones",
            Quota::LinesPerPhone => "lines_per_phone",
            Quota::Templates => "templates",
            Quota::TemplateVersions => "template_versions",
            Quota::TemplateBytes => "template_bytes",
            Quota::DirectoryEntries => "directory_entries",
            Quota::DirectoryNumbers => "directory_numbers",
            Quota::DirectorySources => "directory_sources",
            Quota::PhoneJsonBytes => "phone_json_bytes",
            Quota::WritesPerMinute => "writes_per_minute",
        }
    }
}

/// The defaults, sized for a large customer: a few big tenants fit, and no
/// tenant can fill a node's memory.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Phones a tenant may have.
    pub phones: u64,
    /// Lines (accounts) one phone may have.
    pub lines_per_phone: u64,
    /// Tenant- and phone-scope templates a tenant may have.
    pub templates: u64,
    /// Earlier versions kept per template of a tenant (older ones are
    /// deleted as new ones are saved; rollback reaches back this far).
    pub template_versions: u64,
    /// Largest template body a tenant may save, in bytes.
    pub template_bytes: u64,
    /// Directory entries a tenant may have.
    pub directory_entries: u64,
    /// Numbers a tenant's own directory entries may list together (each
    /// entry at most 16). A node indexes every one of them, and rebuilds
    /// the tenant's whole index on a large change: this bounds that work
    /// and its memory, which 16 numbers an entry would multiply.
    pub directory_numbers: u64,
    /// Directory sources (LDAP, HTTP) a tenant may have.
    pub directory_sources: u64,
    /// Bytes of JSON one phone may carry: its variables and all its lines'
    /// settings together, as stored. Each object is also at most 64 KiB.
    pub phone_json_bytes: u64,
    /// Writes through the API a tenant may make a minute, all its tokens
    /// together, with a burst of ten seconds' worth (see `write_rate.rs`);
    /// 0: none.
    pub writes_per_minute: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            phones: 20_000,
            lines_per_phone: 48,
            templates: 500,
            template_versions: 50,
            template_bytes: 256 * 1024,
            directory_entries: 200_000,
            directory_numbers: 600_000,
            directory_sources: 10,
            phone_json_bytes: 16 * 1024,
            writes_per_minute: 1200,
        }
    }
}

impl QuotaConfig {
    /// `quota` for `tenant`: its own setting, or the default.
    pub fn limit(&self, tenant: &Tenant, quota: Quota) -> u64 {
        self.limit_in(overrides(&tenant.settings).as_ref(), quota)
    }

    /// Several of a tenant's quotas, its settings read once.
    pub fn limits<const N: usize>(&self, tenant: &Tenant, quotas: [Quota; N]) -> [u64; N] {
        let own = overrides(&tenant.settings);
        quotas.map(|quota| self.limit_in(own.as_ref(), quota))
    }

    fn limit_in(&self, own: Option<&serde_json::Map<String, Value>>, quota: Quota) -> u64 {
        own.and_then(|q| q.get(quota.key()).and_then(Value::as_u64))
            .unwrap_or(match quota {
                Quota::Phones => self.phones,
                Quota::LinesPerPhone => self.lines_per_phone,
                Quota::Templates => self.templates,
                Quota::TemplateVersions => self.template_versions,
                Quota::TemplateBytes => self.template_bytes,
                Quota::DirectoryEntries => self.directory_entries,
                Quota::DirectoryNumbers => self.directory_numbers,
                Quota::DirectorySources => self.directory_sources,
                Quota::PhoneJsonBytes => self.phone_json_bytes,
                Quota::WritesPerMinute => self.writes_per_minute,
            })
    }

    /// 422 naming the quota when `wanted` would pass it.
    pub fn check(&self, tenant: &Tenant, quota: Quota, wanted: u64) -> Result<(), ApiError> {
        let limit = self.limit(tenant, quota);
        if wanted <= limit {
            return Ok(());
        }
        Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "quota_exceeded",
            format!(
                "tenant {}: this would need {wanted} against the {} quota of {limit}; a global admin can raise it",
                tenant.slug,
                quota.key()
            ),
        )
        .with_details(json!({ "quota": quota.key(), "limit": limit, "wanted": wanted })))
    }
}

/// Tenant settings as a global admin sends them: a `quotas` object names
/// known quotas with whole numbers, and `sip_domains` lists hosts.
pub(crate) fn check_setting(settings: &Value) -> Result<(), ApiError> {
    crate::resync::domains::check_setting(settings).map_err(ApiError::invalid)?;
    let Some(quotas) = settings.get("quotas") else {
        return Ok(());
    };
    let Some(quotas) = quotas.as_object() else {
        return Err(ApiError::invalid("settings.quotas must be an object"));
    };
    for (key, value) in quotas {
        if !Quota::ALL.iter().any(|q| q.key() == key) {
            let known: Vec<&str> = Quota::ALL.iter().map(|q| q.key()).collect();
            return Err(ApiError::invalid(format!(
                "settings.quotas.{key} is not a quota (known: {})",
                known.join(", ")
            )));
        }
        // Past i64 no store counts; a quota that large means "no limit",
        // and one below it says so.
        if value.as_u64().is_none_or(|n| n > i64::MAX as u64) {
            return Err(ApiError::invalid(format!(
                "settings.quotas.{key} must be a whole number from 0 to {}",
                i64::MAX
            )));
        }
    }
    Ok(())
}

/// The `quotas` object of a tenant's settings, if any. The rest of the
/// settings (up to 64 KiB a tenant writes) is scanned, not built.
fn overrides(settings: &str) -> Option<serde_json::Map<String, Value>> {
    #[derive(serde::Deserialize)]
    struct Settings {
        quotas: Option<Value>,
    }
    if !settings.contains("quotas") {
        return None;
    }
    match serde_json::from_str::<Settings>(settings).ok()?.quotas? {
        Value::Object(quotas) => Some(quotas),
        _ => None,
    }
}

/// Keys of tenant settings only a global admin changes: what the tenant
/// may add (`quotas`), where its resyncs may go (`sip_domains`) and which
/// networks are its offices (`provisioning_networks`: they decide whose
/// list an unknown phone booting there lands on, so a tenant naming
/// another organization's range would see its new phones and could claim
/// them before it does), and which private networks its directory
/// sources may reach (`source_networks`).
const OPERATOR_KEYS: [&str; 4] = [
    "quotas",
    crate::resync::domains::SETTING,
    "provisioning_networks",
    dialtone_directory::networks::TENANT_SETTING,
];

/// The settings a tenant's own token may store: the operator's keys stay
/// as they were, whatever it sent.
pub(crate) fn keep_operator_settings(sent: Value, stored: &str) -> Value {
    let mut sent = match sent {
        Value::Object(map) => map,
        other => return other,
    };
    for key in OPERATOR_KEYS {
        sent.remove(key);
    }
    if OPERATOR_KEYS.iter().any(|key| stored.contains(key)) {
        if let Ok(Value::Object(mut stored)) = serde_json::from_str::<Value>(stored) {
            for key in OPERATOR_KEYS {
                if let Some(value) = stored.remove(key) {
                    sent.insert(key.into(), value);
                }
            }
        }
    }
    Value::Object(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    use dialtone_sync::testing::build::tenant_row as tenant;

    /// A tenant's own quotas win, the rest come from the config, and
    /// settings that are not an object, or quotas that are not one, count
    /// as none.
    #[test]
    fn a_tenants_own_quotas_are_read_from_its_settings() {
        let config = QuotaConfig::default();
        let own = tenant(&format!(
            r#"{{"pad": "{}", "quotas": {{"phones": 7, "directory_sources": 2}}, "x": {{"quotas": 1}}}}"#,
            "quotas ".repeat(1000)
        ));
        assert_eq!(
            config.limits(
                &own,
                [Quota::Phones, Quota::DirectorySources, Quota::Templates]
            ),
            [7, 2, config.templates]
        );
        assert_eq!(config.limit(&own, Quota::Phones), 7);
        for settings in ["{}", r#"{"quotas": 5}"#, r#"["quotas"]"#, "not json quotas"] {
            assert_eq!(
                config.limit(&tenant(settings), Quota::Phones),
                config.phones,
                "{settings}"
            );
        }
    }
}

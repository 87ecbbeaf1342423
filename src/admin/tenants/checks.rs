//! The fields of a tenant's body, checked as it is written.

use serde_json::Value;

use crate::admin::error::ApiError;
use crate::admin::phones::unchanged;
use crate::admin::quotas::check_setting;

/// Settings as a global admin sends them: quotas and SIP domains, if
/// any, checked. A string sent back as `stored` holds it, at the same
/// place, passes the newer check of strings ([`unchanged`]).
pub(super) fn check_quotas_setting(
    settings: Value,
    stored: Option<&str>,
) -> Result<Value, ApiError> {
    unchanged::settings_strings(&settings, stored).map_err(ApiError::invalid)?;
    check_setting(&settings)?;
    check_networks(&settings)?;
    let sources = dialtone_directory::networks::TENANT_SETTING;
    let written = settings.get(sources).and_then(Value::as_array);
    for text in written.into_iter().flatten().filter_map(Value::as_str) {
        dialtone_sync::addresses::octets_unambiguous(text)
            .map_err(|e| ApiError::invalid(format!("settings.{sources}: {e}")))?;
    }
    dialtone_directory::networks::tenant_networks(&settings.to_string())
        .map_err(ApiError::invalid)?;
    Ok(settings)
}

/// Most networks a tenant's `provisioning_networks` may list. Every fetch
/// naming one of its phones is checked against them.
const MAX_PROVISIONING_NETWORKS: usize = 256;

/// `provisioning_networks`, if set: a list of at most 256 networks
/// (`10.1.0.0/16`) or addresses, each one readable. Before, anything was
/// stored and what did not parse was skipped at every fetch. No IPv4
/// octet may have a leading zero (`010.0.0.0/8`), which tools disagree
/// on; refused here only, as written: a stored list is read as it is.
pub(super) fn check_networks(settings: &Value) -> Result<(), ApiError> {
    let Some(networks) = settings
        .get("provisioning_networks")
        .filter(|n| !n.is_null())
    else {
        return Ok(());
    };
    let Some(networks) = networks.as_array() else {
        return Err(ApiError::invalid(
            "settings.provisioning_networks must be a list of networks",
        ));
    };
    if networks.len() > MAX_PROVISIONING_NETWORKS {
        return Err(ApiError::invalid(format!(
            "settings.provisioning_networks lists {} networks; at most {MAX_PROVISIONING_NETWORKS}",
            networks.len()
        )));
    }
    for network in networks {
        let Some(text) = network.as_str() else {
            return Err(ApiError::invalid(format!(
                "settings.provisioning_networks: {network} is not a network (10.1.0.0/16) or an address"
            )));
        };
        let checked = dialtone_sync::addresses::octets_unambiguous(text)
            .and_then(|()| dialtone_tftp::guard::source_network(text).map(drop));
        if let Err(reason) = checked {
            return Err(ApiError::invalid(format!(
                "settings.provisioning_networks: {reason}"
            )));
        }
    }
    Ok(())
}

pub(crate) fn check_slug(slug: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "slug: 1 to 63 lowercase letters, digits and dashes, not starting with a dash",
        ))
    }
}

pub(super) fn region(value: Option<String>) -> Result<String, ApiError> {
    let region = value.unwrap_or_else(|| "US".into()).to_ascii_uppercase();
    if region.len() == 2 && region.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(region)
    } else {
        Err(ApiError::invalid(
            "default_region: a two-letter region code such as US or GB",
        ))
    }
}

/// A name sent back as it is stored passes the newer check ([`unchanged`]).
pub(super) fn check_name(name: &str, stored: Option<&str>) -> Result<(), ApiError> {
    let name = unchanged::as_checked(name, stored, unchanged::tenant_name);
    dialtone_sync::checks::tenant_name(&name).map_err(ApiError::invalid)
}

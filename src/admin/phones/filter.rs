//! What a phone list (`GET /v1/phones`) is narrowed to.

use dialtone_sync::{Family, MirrorState, Phone};

use super::PhoneQuery;

/// A list query's filters, normalized once rather than per phone scanned.
pub(super) struct PhoneFilter {
    pub(super) tenant: Option<i64>,
    family: Option<Family>,
    /// Hex digits, lowercase, no separators.
    mac_prefix: String,
    model: Option<String>,
    /// The search text, lowercase.
    q: Option<String>,
    /// The search text as MAC digits, when it is one (hex and separators).
    q_mac: Option<String>,
}

impl PhoneFilter {
    pub(super) fn new(
        query: &PhoneQuery,
        tenant: Option<i64>,
        family: Option<Family>,
        mac_prefix: String,
    ) -> Self {
        let q = query
            .q
            .as_deref()
            .map(str::to_lowercase)
            .filter(|q| !q.is_empty());
        let q_mac = q
            .as_deref()
            .map(|q| q.replace([':', '-', '.'], ""))
            .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_hexdigit()));
        PhoneFilter {
            tenant,
            family,
            mac_prefix,
            model: query.model.clone(),
            q,
            q_mac,
        }
    }

    pub(super) fn matches(&self, state: &MirrorState, phone: &Phone) -> bool {
        // The caller walks the tenant's own phones already; this keeps the
        // filter whole for a global list too.
        if self.tenant.is_some_and(|t| t != phone.tenant_id) {
            return false;
        }
        let mac = phone.mac.to_string();
        if self.family.is_some_and(|f| f != phone.family)
            || !mac.starts_with(&self.mac_prefix)
            || self
                .model
                .as_deref()
                .is_some_and(|m| phone.model.as_deref() != Some(m))
        {
            return false;
        }
        let Some(q) = &self.q else {
            return true;
        };
        self.q_mac
            .as_deref()
            .is_some_and(|digits| mac.contains(digits))
            || phone
                .label
                .as_deref()
                .is_some_and(|l| l.to_lowercase().contains(q.as_str()))
            || state.lines_of(phone.id).iter().any(|l| {
                l.extension.to_lowercase().contains(q.as_str())
                    || l.display_name.to_lowercase().contains(q.as_str())
            })
    }
}

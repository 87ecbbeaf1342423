//! The bodies `/v1/phones` takes and answers, and how a stored phone is
//! shown in them.

use dialtone_sync::{phone_etag, Line, MirrorState, Phone};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::admin::json_value;

#[derive(Serialize, ToSchema)]
pub struct LineView {
    pub position: i32,
    pub extension: String,
    pub display_name: String,
    pub auth_user: String,
    /// Whether a SIP password is set; the password itself is never returned.
    pub has_password: bool,
    pub registrar: String,
    pub proxy: Option<String>,
    #[schema(value_type = Object)]
    pub settings: Box<serde_json::value::RawValue>,
}

#[derive(Serialize, ToSchema)]
pub struct PhoneView {
    /// Twelve lowercase hex digits.
    pub mac: String,
    pub tenant: String,
    pub family: String,
    pub model: Option<String>,
    pub label: Option<String>,
    #[schema(value_type = Object)]
    pub variables: Box<serde_json::value::RawValue>,
    pub http_user: Option<String>,
    pub has_http_password: bool,
    pub lines: Vec<LineView>,
    pub updated_at: i64,
    pub etag: String,
    /// The family the MAC's vendor prefix belongs to, when it is not
    /// `family`: the phone may have been created under the wrong family
    /// (its own files are then refused to its User-Agent, "family
    /// mismatch" in its history). Only prefixes of one family are known;
    /// Cisco's, shared by three, never show here.
    pub mac_vendor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PhoneList {
    pub items: Vec<PhoneView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    pub extension: String,
    /// Defaults to the extension (absent or blank), as in an import.
    pub display_name: Option<String>,
    /// Defaults to the extension.
    pub auth_user: Option<String>,
    /// Write-only. Absent: keep the password of the line at this position
    /// (none when the phone moves to another tenant); empty: remove it.
    pub password: Option<String>,
    pub registrar: String,
    pub proxy: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneBody {
    /// Only for `POST /v1/phones`; the path names the phone otherwise.
    pub mac: Option<String>,
    pub tenant: String,
    /// `yealink`, `poly`, `cisco-spa`, `cisco-mpp`, `cisco-sep`,
    /// `grandstream`, `snom` or `fanvil`.
    pub family: String,
    pub model: Option<String>,
    pub label: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
    /// Printable ASCII without `"`, `\` or `:`. Required while the phone
    /// has an HTTP password, a kept one included: to remove both, leave it
    /// out and send an empty `http_password`.
    pub http_user: Option<String>,
    /// Write-only. Absent: keep (none when the phone moves to another
    /// tenant); empty: remove.
    pub http_password: Option<String>,
    #[serde(default)]
    pub lines: Vec<LineBody>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PhoneQuery {
    /// Only this tenant's phones (slug).
    pub tenant: Option<String>,
    /// MAC prefix, hex digits with or without separators (`001565`).
    pub mac_prefix: Option<String>,
    pub model: Option<String>,
    /// The vendor family (`yealink`, …).
    pub vendor: Option<String>,
    /// Matches the MAC, a line's extension or display name, or the label.
    pub q: Option<String>,
    /// Page after this MAC.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

pub(crate) fn view(state: &MirrorState, phone: &Phone) -> PhoneView {
    let lines = state.lines_of(phone.id);
    let tenant = state
        .tenant(phone.tenant_id)
        .map(|t| t.slug.to_string())
        .unwrap_or_default();
    PhoneView {
        mac: phone.mac.to_string(),
        tenant,
        family: phone.family.to_string(),
        model: phone.model.as_deref().map(str::to_string),
        label: phone.label.as_deref().map(str::to_string),
        variables: json_value(&phone.variables),
        http_user: phone.http_user.as_deref().map(str::to_string),
        has_http_password: phone.http_password.is_some(),
        lines: lines.iter().map(|l| line_view(l)).collect(),
        updated_at: phone.updated_at,
        etag: phone_etag(phone, &lines),
        mac_vendor: dialtone_tftp::family_by_oui(&phone.mac, dialtone_sync::Family::ALL)
            .filter(|vendor| *vendor != phone.family)
            .map(|vendor| vendor.to_string()),
    }
}

fn line_view(l: &Line) -> LineView {
    LineView {
        position: l.position,
        extension: l.extension.to_string(),
        display_name: l.display_name.to_string(),
        auth_user: l.auth_user.to_string(),
        has_password: l.password.is_some(),
        registrar: l.registrar.to_string(),
        proxy: l.proxy.as_deref().map(str::to_string),
        settings: json_value(&l.settings),
    }
}

//! Raw rows as both SQL backends return them, and their conversion into the
//! schema types. A row that fails to convert names its table and id.

use sqlx::FromRow;

use crate::crypto::Sealed;
use crate::error::SyncError;
use crate::intern::Interner;
use crate::model::*;

fn bad(table: &str, id: Id, what: impl std::fmt::Display) -> SyncError {
    SyncError::Invalid(format!("{table} id={id}: {what}"))
}

fn boxed(s: Option<String>) -> Option<Box<str>> {
    s.map(String::into_boxed_str)
}

#[derive(FromRow)]
pub struct RawTenant {
    id: i64,
    slug: String,
    name: String,
    default_region: String,
    settings: String,
    updated_at: i64,
}

impl RawTenant {
    pub const COLUMNS: &'static str = "id, slug, name, default_region, settings, updated_at";

    pub fn into_model(self, _: &mut Interner) -> Result<Tenant, SyncError> {
        Ok(Tenant {
            id: self.id,
            slug: self.slug.into(),
            name: self.name.into(),
            default_region: self.default_region.into(),
            settings: self.settings.into(),
            updated_at: self.updated_at,
        })
    }
}

/// Phones and lines are nearly all of a cold load, so they skip the
/// intermediate raw struct: columns are read by position (the derive looks
/// each one up by name), and the shared ones are borrowed from the row
/// straight into the interner, without a temporary String.
pub trait DecodeRow {
    fn phone(&self, interner: &mut Interner) -> Result<Phone, SyncError>;
    fn line(&self, interner: &mut Interner) -> Result<Line, SyncError>;
}

macro_rules! decode_row {
    ($row:ty) => {
        impl DecodeRow for $row {
            fn phone(&self, interner: &mut Interner) -> Result<Phone, SyncError> {
                use sqlx::Row;
                let id: i64 = self.try_get(0)?;
                let mac: &str = self.try_get(2)?;
                let family: &str = self.try_get(3)?;
                let model: Option<&str> = self.try_get(4)?;
                let label: Option<String> = self.try_get(5)?;
                let variables: &str = self.try_get(6)?;
                let http_user: Option<String> = self.try_get(7)?;
                let http_password: Option<String> = self.try_get(8)?;
                Ok(Phone {
                    id,
                    tenant_id: self.try_get(1)?,
                    mac: mac.parse().map_err(|e| bad("phones", id, e))?,
                    family: family.parse().map_err(|e| bad("phones", id, e))?,
                    model: model.map(|m| interner.intern(m)),
                    label: boxed(label),
                    variables: interner.intern(variables),
                    http_user: boxed(http_user),
                    http_password: http_password.map(|s| Sealed(s.into())),
                    updated_at: self.try_get(9)?,
                })
            }

            fn line(&self, interner: &mut Interner) -> Result<Line, SyncError> {
                use sqlx::Row;
                let extension: String = self.try_get(3)?;
                let display_name: String = self.try_get(4)?;
                let auth_user: String = self.try_get(5)?;
                let password: Option<String> = self.try_get(6)?;
                let registrar: &str = self.try_get(7)?;
                let proxy: Option<&str> = self.try_get(8)?;
                let settings: &str = self.try_get(9)?;
                Ok(Line {
                    id: self.try_get(0)?,
                    phone_id: self.try_get(1)?,
                    position: self.try_get(2)?,
                    extension: extension.into(),
                    display_name: display_name.into(),
                    auth_user: auth_user.into(),
                    password: password.map(|s| Sealed(s.into())),
                    registrar: interner.intern(registrar),
                    proxy: proxy.map(|p| interner.intern(p)),
                    settings: interner.intern(settings),
                    updated_at: self.try_get(10)?,
                })
            }
        }
    };
}

decode_row!(sqlx::postgres::PgRow);
decode_row!(sqlx::sqlite::SqliteRow);

pub const PHONE_COLUMNS: &str =
    "id, tenant_id, mac, family, model, label, variables, http_user, http_password, updated_at";
pub const LINE_COLUMNS: &str = "id, phone_id, position, extension, display_name, auth_user, \
                                password, registrar, proxy, settings, updated_at";

#[derive(FromRow)]
pub struct RawTemplate {
    id: i64,
    scope: String,
    family: String,
    scope_key: String,
    file_pattern: String,
    body: String,
    version: i64,
    updated_by: String,
    updated_at: i64,
}

impl RawTemplate {
    pub const COLUMNS: &'static str =
        "id, scope, family, scope_key, file_pattern, body, version, updated_by, updated_at";

    pub fn into_model(self, _: &mut Interner) -> Result<Template, SyncError> {
        Ok(Template {
            id: self.id,
            scope: self
                .scope
                .parse()
                .map_err(|e| bad("templates", self.id, e))?,
            family: self
                .family
                .parse()
                .map_err(|e| bad("templates", self.id, e))?,
            scope_key: self.scope_key.into(),
            file_pattern: self.file_pattern.into(),
            body: self.body.into(),
            version: self.version,
            updated_by: self.updated_by.into(),
            updated_at: self.updated_at,
        })
    }
}

#[derive(FromRow)]
pub struct RawDirectoryEntry {
    id: i64,
    tenant_id: i64,
    external_id: Option<String>,
    name: String,
    company: Option<String>,
    numbers: String,
    updated_at: i64,
}

#[derive(serde::Deserialize, serde::Serialize)]
pub struct NumberJson {
    pub number: String,
    #[serde(default = "default_kind")]
    pub kind: String,
}

fn default_kind() -> String {
    "work".into()
}

pub fn numbers_to_json(numbers: &[DirectoryNumber]) -> String {
    let list: Vec<NumberJson> = numbers
        .iter()
        .map(|n| NumberJson {
            number: n.number.to_string(),
            kind: n.kind.to_string(),
        })
        .collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

impl RawDirectoryEntry {
    pub const COLUMNS: &'static str =
        "id, tenant_id, external_id, name, company, numbers, updated_at";

    pub fn into_model(self, _: &mut Interner) -> Result<DirectoryEntry, SyncError> {
        let numbers: Vec<NumberJson> = serde_json::from_str(&self.numbers)
            .map_err(|e| bad("directory_entries", self.id, e))?;
        Ok(DirectoryEntry {
            id: self.id,
            tenant_id: self.tenant_id,
            external_id: boxed(self.external_id),
            name: self.name.into(),
            company: boxed(self.company),
            numbers: numbers
                .into_iter()
                .map(|n| DirectoryNumber {
                    number: n.number.into(),
                    kind: n.kind.into(),
                })
                .collect(),
            updated_at: self.updated_at,
        })
    }
}

#[derive(FromRow)]
pub struct RawDirectorySource {
    id: i64,
    tenant_id: i64,
    name: String,
    kind: String,
    priority: i32,
    enabled: bool,
    settings: String,
    secret: Option<String>,
    timeout_ms: i32,
    updated_at: i64,
}

impl RawDirectorySource {
    pub const COLUMNS: &'static str =
        "id, tenant_id, name, kind, priority, enabled, settings, secret, timeout_ms, updated_at";

    pub fn into_model(self, _: &mut Interner) -> Result<DirectorySource, SyncError> {
        Ok(DirectorySource {
            id: self.id,
            tenant_id: self.tenant_id,
            name: self.name.into(),
            kind: self
                .kind
                .parse()
                .map_err(|e| bad("directory_sources", self.id, e))?,
            priority: self.priority,
            enabled: self.enabled,
            settings: self.settings.into(),
            secret: self.secret.map(|s| Sealed(s.into())),
            timeout_ms: self.timeout_ms,
            updated_at: self.updated_at,
        })
    }
}

#[derive(FromRow)]
pub struct RawApiToken {
    id: i64,
    name: String,
    token_hash: String,
    scope: String,
    tenant_id: Option<i64>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked: bool,
    updated_at: i64,
}

impl RawApiToken {
    pub const COLUMNS: &'static str =
        "id, name, token_hash, scope, tenant_id, created_at, expires_at, revoked, updated_at";

    pub fn into_model(self, _: &mut Interner) -> Result<ApiToken, SyncError> {
        Ok(ApiToken {
            id: self.id,
            name: self.name.into(),
            token_hash: self.token_hash.into(),
            scope: self
                .scope
                .parse()
                .map_err(|e| bad("api_tokens", self.id, e))?,
            tenant_id: self.tenant_id,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked: self.revoked,
            updated_at: self.updated_at,
        })
    }
}

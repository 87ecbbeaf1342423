//! Rows as the database clients return them, and their conversion into the
//! schema types: one decoder per table, whichever client read the row
//! (sqlx rows of either backend, PostgreSQL's binary COPY tuples, or
//! rusqlite rows in SQLite's cold load). A cell that fails to convert
//! names its table, row id and column.

use std::borrow::Cow;

use crate::crypto::Sealed;
use crate::error::SyncError;
use crate::intern::Interner;
use crate::model::*;

/// What a cell held that its column should not; the decoder adds the
/// table, row and column.
pub(crate) type CellError = Cow<'static, str>;

/// A result row's cells by position. Integers are read at the width the
/// column has in PostgreSQL (`int8`, `int4`); SQLite's are all 64-bit and
/// are checked to fit.
pub(crate) trait Cells {
    fn opt_int8(&self, i: usize) -> Result<Option<i64>, CellError>;
    fn int4(&self, i: usize) -> Result<i32, CellError>;
    fn flag(&self, i: usize) -> Result<bool, CellError>;
    fn opt_text(&self, i: usize) -> Result<Option<&str>, CellError>;

    fn int8(&self, i: usize) -> Result<i64, CellError> {
        self.opt_int8(i)?.ok_or(Cow::Borrowed("NULL"))
    }

    fn text(&self, i: usize) -> Result<&str, CellError> {
        self.opt_text(i)?.ok_or(Cow::Borrowed("NULL"))
    }
}

macro_rules! sqlx_cells {
    ($row:ty) => {
        impl Cells for $row {
            fn opt_int8(&self, i: usize) -> Result<Option<i64>, CellError> {
                sqlx::Row::try_get(self, i).map_err(|e| Cow::Owned(e.to_string()))
            }
            fn int4(&self, i: usize) -> Result<i32, CellError> {
                sqlx::Row::try_get(self, i).map_err(|e| Cow::Owned(e.to_string()))
            }
            fn flag(&self, i: usize) -> Result<bool, CellError> {
                sqlx::Row::try_get(self, i).map_err(|e| Cow::Owned(e.to_string()))
            }
            fn opt_text(&self, i: usize) -> Result<Option<&str>, CellError> {
                sqlx::Row::try_get(self, i).map_err(|e| Cow::Owned(e.to_string()))
            }
        }
    };
}

sqlx_cells!(sqlx::postgres::PgRow);
sqlx_cells!(sqlx::sqlite::SqliteRow);

impl Cells for rusqlite::Row<'_> {
    fn opt_int8(&self, i: usize) -> Result<Option<i64>, CellError> {
        let cell = self.get_ref(i).map_err(|e| Cow::Owned(e.to_string()))?;
        cell.as_i64_or_null().map_err(|e| Cow::Owned(e.to_string()))
    }
    fn int4(&self, i: usize) -> Result<i32, CellError> {
        i32::try_from(self.int8(i)?).map_err(|_| Cow::Borrowed("out of a 4-byte integer's range"))
    }
    fn flag(&self, i: usize) -> Result<bool, CellError> {
        self.int8(i).map(|v| v != 0)
    }
    fn opt_text(&self, i: usize) -> Result<Option<&str>, CellError> {
        let cell = self.get_ref(i).map_err(|e| Cow::Owned(e.to_string()))?;
        cell.as_str_or_null().map_err(|e| Cow::Owned(e.to_string()))
    }
}

/// Reads the cells of one row, naming table, id and column in any error.
struct Fields<'r, R> {
    table: &'static str,
    row: &'r R,
    id: Option<i64>,
}

impl<'r, R: Cells> Fields<'r, R> {
    /// Reads column 0, the id, first: every later error names the row.
    fn new(table: &'static str, row: &'r R) -> Result<Self, SyncError> {
        let mut fields = Fields {
            table,
            row,
            id: None,
        };
        fields.id = Some(fields.get(0, "id", R::int8)?);
        Ok(fields)
    }

    fn id(&self) -> i64 {
        self.id.unwrap_or_default()
    }

    fn get<T>(
        &self,
        i: usize,
        column: &str,
        read: impl FnOnce(&'r R, usize) -> Result<T, CellError>,
    ) -> Result<T, SyncError> {
        read(self.row, i).map_err(|e| self.bad(column, e))
    }

    fn bad(&self, column: &str, what: impl std::fmt::Display) -> SyncError {
        let table = self.table;
        match self.id {
            Some(id) => SyncError::Invalid(format!("{table} id={id}: {column}: {what}")),
            None => SyncError::Invalid(format!("{table}: {column}: {what}")),
        }
    }

    fn boxed(&self, i: usize, column: &str) -> Result<Box<str>, SyncError> {
        self.get(i, column, R::text).map(Box::from)
    }

    fn opt_boxed(&self, i: usize, column: &str) -> Result<Option<Box<str>>, SyncError> {
        Ok(self.get(i, column, R::opt_text)?.map(Box::from))
    }

    fn parsed<T: std::str::FromStr>(&self, i: usize, column: &str) -> Result<T, SyncError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(i, column, R::text)?
            .parse()
            .map_err(|e| self.bad(column, e))
    }
}

/// A family as stored (lowercase), without `FromStr`'s allocation per row.
fn family(text: &str) -> Result<Family, <Family as std::str::FromStr>::Err> {
    Family::ALL
        .iter()
        .copied()
        .find(|f| f.as_str() == text)
        .map_or_else(|| text.parse(), Ok)
}

/// The singleton meta row: epoch, pruned cursor, database id.
pub const READ_META: &str =
    "SELECT epoch, pruned_txid, pruned_seq, database_id FROM dialtone_meta WHERE singleton = 1";

/// On PostgreSQL the database id also names the change log's table by
/// its oid. A `pg_restore` makes every table anew, so a restored
/// database is told apart from the one a node (or its snapshot) holds,
/// although the stored id came back with the data; without that, rows
/// the backup lacks stayed in every mirror, and an id the restored
/// sequences issue again joined them to a new owner. `pg_upgrade` keeps
/// table oids.
pub const READ_META_POSTGRES: &str =
    "SELECT epoch, pruned_txid, pruned_seq, database_id || '/' || 'change_log'::regclass::oid::text \
     FROM dialtone_meta WHERE singleton = 1";

pub const TENANT_COLUMNS: &str = "id, slug, name, default_region, settings, updated_at";

pub(crate) fn tenant<R: Cells>(row: &R, _: &mut Interner) -> Result<Tenant, SyncError> {
    let f = Fields::new("tenants", row)?;
    Ok(Tenant {
        id: f.id(),
        slug: f.boxed(1, "slug")?,
        name: f.boxed(2, "name")?,
        default_region: f.boxed(3, "default_region")?,
        settings: f.boxed(4, "settings")?,
        updated_at: f.get(5, "updated_at", R::int8)?,
    })
}

pub const PHONE_COLUMNS: &str =
    "id, tenant_id, mac, family, model, label, variables, http_user, http_password, updated_at";

/// Phones and lines are nearly all of a cold load: shared columns go from
/// the row's bytes straight into the interner, with no `String` between.
pub(crate) fn phone<R: Cells>(row: &R, interner: &mut Interner) -> Result<Phone, SyncError> {
    let f = Fields::new("phones", row)?;
    let family_text = f.get(3, "family", R::text)?;
    Ok(Phone {
        id: f.id(),
        tenant_id: f.get(1, "tenant_id", R::int8)?,
        mac: f.parsed(2, "mac")?,
        family: family(family_text).map_err(|e| f.bad("family", e))?,
        model: f.get(4, "model", R::opt_text)?.map(|m| interner.intern(m)),
        label: f.opt_boxed(5, "label")?,
        variables: interner.intern(f.get(6, "variables", R::text)?),
        http_user: f.opt_boxed(7, "http_user")?,
        http_password: f.opt_boxed(8, "http_password")?.map(Sealed),
        updated_at: f.get(9, "updated_at", R::int8)?,
    })
}

pub const LINE_COLUMNS: &str = "id, phone_id, position, extension, display_name, auth_user, \
                                password, registrar, proxy, settings, updated_at";

pub(crate) fn line<R: Cells>(row: &R, interner: &mut Interner) -> Result<Line, SyncError> {
    let f = Fields::new("lines", row)?;
    Ok(Line {
        id: f.id(),
        phone_id: f.get(1, "phone_id", R::int8)?,
        position: f.get(2, "position", R::int4)?,
        extension: f.boxed(3, "extension")?,
        display_name: f.boxed(4, "display_name")?,
        auth_user: f.boxed(5, "auth_user")?,
        password: f.opt_boxed(6, "password")?.map(Sealed),
        registrar: interner.intern(f.get(7, "registrar", R::text)?),
        proxy: f.get(8, "proxy", R::opt_text)?.map(|p| interner.intern(p)),
        settings: interner.intern(f.get(9, "settings", R::text)?),
        updated_at: f.get(10, "updated_at", R::int8)?,
    })
}

pub const TEMPLATE_COLUMNS: &str =
    "id, scope, family, scope_key, file_pattern, body, version, updated_by, updated_at";

pub(crate) fn template<R: Cells>(row: &R, _: &mut Interner) -> Result<Template, SyncError> {
    let f = Fields::new("templates", row)?;
    Ok(Template {
        id: f.id(),
        scope: f.parsed(1, "scope")?,
        family: f.parsed(2, "family")?,
        scope_key: f.boxed(3, "scope_key")?,
        file_pattern: f.boxed(4, "file_pattern")?,
        body: f.boxed(5, "body")?,
        version: f.get(6, "version", R::int8)?,
        updated_by: f.boxed(7, "updated_by")?,
        updated_at: f.get(8, "updated_at", R::int8)?,
    })
}

pub const DIRECTORY_ENTRY_COLUMNS: &str =
    "id, tenant_id, external_id, name, company, numbers, updated_at";

pub(crate) fn directory_entry<R: Cells>(
    row: &R,
    _: &mut Interner,
) -> Result<DirectoryEntry, SyncError> {
    let f = Fields::new("directory_entries", row)?;
    let numbers: Vec<NumberJson> =
        serde_json::from_str(f.get(5, "numbers", R::text)?).map_err(|e| f.bad("numbers", e))?;
    Ok(DirectoryEntry {
        id: f.id(),
        tenant_id: f.get(1, "tenant_id", R::int8)?,
        external_id: f.opt_boxed(2, "external_id")?,
        name: f.boxed(3, "name")?,
        company: f.opt_boxed(4, "company")?,
        numbers: numbers
            .into_iter()
            .map(|n| DirectoryNumber {
                number: n.number.into(),
                kind: n.kind.into(),
            })
            .collect(),
        updated_at: f.get(6, "updated_at", R::int8)?,
    })
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

pub const DIRECTORY_SOURCE_COLUMNS: &str =
    "id, tenant_id, name, kind, priority, enabled, settings, secret, timeout_ms, updated_at";

pub(crate) fn directory_source<R: Cells>(
    row: &R,
    _: &mut Interner,
) -> Result<DirectorySource, SyncError> {
    let f = Fields::new("directory_sources", row)?;
    Ok(DirectorySource {
        id: f.id(),
        tenant_id: f.get(1, "tenant_id", R::int8)?,
        name: f.boxed(2, "name")?,
        kind: f.parsed(3, "kind")?,
        priority: f.get(4, "priority", R::int4)?,
        enabled: f.get(5, "enabled", R::flag)?,
        settings: f.boxed(6, "settings")?,
        secret: f.opt_boxed(7, "secret")?.map(Sealed),
        timeout_ms: f.get(8, "timeout_ms", R::int4)?,
        updated_at: f.get(9, "updated_at", R::int8)?,
    })
}

pub const API_TOKEN_COLUMNS: &str =
    "id, name, token_hash, scope, tenant_id, created_at, expires_at, revoked, updated_at";

pub(crate) fn api_token<R: Cells>(row: &R, _: &mut Interner) -> Result<ApiToken, SyncError> {
    let f = Fields::new("api_tokens", row)?;
    Ok(ApiToken {
        id: f.id(),
        name: f.boxed(1, "name")?,
        token_hash: f.boxed(2, "token_hash")?,
        scope: f.parsed(3, "scope")?,
        tenant_id: f.get(4, "tenant_id", R::opt_int8)?,
        created_at: f.get(5, "created_at", R::int8)?,
        expires_at: f.get(6, "expires_at", R::opt_int8)?,
        revoked: f.get(7, "revoked", R::flag)?,
        updated_at: f.get(8, "updated_at", R::int8)?,
    })
}

/// The columns a table's decoder reads, in its order.
pub(crate) fn columns(entity: Entity) -> &'static str {
    match entity {
        Entity::Tenant => TENANT_COLUMNS,
        Entity::Phone => PHONE_COLUMNS,
        Entity::Line => LINE_COLUMNS,
        Entity::Template => TEMPLATE_COLUMNS,
        Entity::DirectoryEntry => DIRECTORY_ENTRY_COLUMNS,
        Entity::DirectorySource => DIRECTORY_SOURCE_COLUMNS,
        Entity::ApiToken => API_TOKEN_COLUMNS,
    }
}

/// Decodes a row of `entity`'s table, read with [`columns`].
pub(crate) fn decode<R: Cells>(
    entity: Entity,
    row: &R,
    interner: &mut Interner,
) -> Result<Row, SyncError> {
    Ok(match entity {
        Entity::Tenant => Row::Tenant(tenant(row, interner)?),
        Entity::Phone => Row::Phone(phone(row, interner)?),
        Entity::Line => Row::Line(line(row, interner)?),
        Entity::Template => Row::Template(template(row, interner)?),
        Entity::DirectoryEntry => Row::DirectoryEntry(directory_entry(row, interner)?),
        Entity::DirectorySource => Row::DirectorySource(directory_source(row, interner)?),
        Entity::ApiToken => Row::ApiToken(api_token(row, interner)?),
    })
}

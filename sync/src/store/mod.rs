//! The stores: one trait, a SQLite and a PostgreSQL implementation, chosen by
//! URL. This module tree is the only place in dialtone that knows SQL.

mod access;
mod admin;
mod bulk;
mod common;
mod connect_url;
mod fleet;
mod history_sql;
mod masked;
mod mutation_creates;
mod nul;
mod offset_warning;
mod phone_batch;
pub mod postgres;
mod rekey;
mod rows;
mod schema_sql;
pub mod sqlite;
mod unclaimed;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crypto::SecretKey;
use crate::error::SyncError;
use crate::model::*;

pub use connect_url::{exposed_on_the_network, parse_url};
pub use fleet::FleetHistory;
pub use masked::masked_url;
pub use phone_batch::{
    BatchFull, Finished, Kept, LineRef, PhoneBatch, PhoneBatchBuilder, PhoneFields, PhoneRef,
};
pub use rekey::RekeyReport;
pub use rows::NumberJson;
pub use unclaimed::{UnclaimedDevice, UNASSIGNED};

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Pool size. Readers on the hot path never use it; it serves the watcher,
    /// writers and admin queries.
    pub max_connections: u32,
    /// Short on purpose: sqlx's 30 s default turns an outage into a hang.
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the lock held by another process.
    pub busy_timeout: Duration,
    /// A watcher further behind than this many change-log rows does a full
    /// reload instead, which is cheaper than fetching each row.
    pub max_catch_up_rows: i64,
    /// PostgreSQL: how long a migration waits for one table's lock before
    /// it steps back and tries again. Queries on that table queue behind
    /// the waiting migration, so this is how long they can be held up.
    pub migration_lock_wait: Duration,
    /// PostgreSQL: how long a migration keeps trying before it fails.
    pub migration_retry_for: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
            busy_timeout: Duration::from_secs(5),
            max_catch_up_rows: 100_000,
            migration_lock_wait: Duration::from_secs(2),
            migration_retry_for: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One row as the change feed reports it: the current row, or `None` when
/// the row is gone.
pub type RowChange = (Entity, Id, Option<Row>);

#[derive(Debug, Default)]
pub struct ChangeBatch {
    pub changes: Vec<RowChange>,
    pub next_cursor: Cursor,
    pub meta: Meta,
    /// More rows changed than it pays to fetch one by one: reload everything.
    pub too_far_behind: bool,
    /// The log's own counter is behind the cursor: the database is an
    /// older copy of itself (a backup restored, or a cluster rewound to
    /// an earlier point), and rows the copy lacks would never come as
    /// changes. Reload everything.
    pub rewound: bool,
    /// What this read saw above `next_cursor` (PostgreSQL).
    pub seen_above: Option<Arc<SeenAbove>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInput {
    pub slug: String,
    pub name: String,
    pub default_region: String,
    /// JSON object text.
    pub settings: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineInput {
    pub extension: String,
    pub display_name: String,
    pub auth_user: String,
    pub password: Option<String>,
    pub registrar: String,
    pub proxy: Option<String>,
    /// JSON object text.
    pub settings: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneInput {
    pub tenant: String,
    pub mac: Mac,
    pub family: Family,
    pub model: Option<String>,
    pub label: Option<String>,
    /// JSON object text.
    pub variables: String,
    pub http_user: Option<String>,
    pub http_password: Option<String>,
    /// The phone's complete line list, in key order; lines beyond it are removed.
    pub lines: Vec<LineInput>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntryInput {
    pub tenant: String,
    pub external_id: String,
    pub name: String,
    pub company: Option<String>,
    pub numbers: Vec<DirectoryNumber>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInput {
    pub scope: TemplateScope,
    pub family: Family,
    /// Empty for family defaults; model name, tenant id or MAC otherwise.
    pub scope_key: String,
    pub file_pattern: String,
    pub body: String,
    pub updated_by: String,
    /// Earlier versions to keep in `template_versions`; older ones are
    /// deleted with this write. `None` keeps every version.
    #[serde(default)]
    pub keep_versions: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorySourceInput {
    pub tenant: String,
    pub name: String,
    pub kind: SourceKind,
    pub priority: i32,
    pub enabled: bool,
    /// JSON object text; its shape depends on `kind`.
    pub settings: String,
    /// Bind password or upstream credential, sealed before it is stored.
    /// `None` keeps the stored secret; an empty string removes it.
    pub secret: Option<String>,
    pub timeout_ms: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenInput {
    pub name: String,
    /// [`crate::crypto::token_hash`] of the token; the token is never stored.
    pub token_hash: String,
    pub scope: TokenScope,
    /// Required for every scope but global-admin.
    pub tenant: Option<String>,
    pub expires_at: Option<Millis>,
}

/// One change, addressed by natural keys so that repeating it is a no-op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    UpsertTenant(TenantInput),
    /// Like `UpsertTenant`, but fails the whole write with
    /// [`SyncError::Taken`] if the slug is taken: the API's create never
    /// replaces a tenant that another node, or a concurrent request, made
    /// and its own mirror has not shown yet. The API creates each kind of
    /// row with its `Create*`; imports and edits upsert.
    CreateTenant(TenantInput),
    UpsertPhone(PhoneInput),
    /// Like `UpsertPhone`, but fails the whole write with
    /// [`SyncError::Taken`] if the MAC exists in any tenant: a create never
    /// turns into an update of someone else's phone. Two creates racing
    /// collide on the unique MAC, reported the same way.
    CreatePhone(PhoneInput),
    /// Many `UpsertPhone`s at once, held compactly (an import's phones):
    /// MACs distinct, applied as one run. A refusal names the phone as
    /// [`SyncError::Rejected`]'s `item`.
    UpsertPhones(PhoneBatch),
    UpsertDirectoryEntry(DirectoryEntryInput),
    /// Fails with [`SyncError::Taken`] if the tenant has the external id.
    CreateDirectoryEntry(DirectoryEntryInput),
    /// Creates or replaces a template; a changed body is a new version, and
    /// every version is kept in `template_versions`.
    UpsertTemplate(TemplateInput),
    /// Fails with [`SyncError::Taken`] if a template has the same scope,
    /// family, scope key and file pattern: version 1 of a new template,
    /// never version n + 1 of someone else's.
    CreateTemplate(TemplateInput),
    /// `UpsertTemplate` of a tenant- or phone-scope template named by its
    /// tenant's slug. Tenant scope: the stored key is the tenant's id,
    /// which only the writing transaction knows for a tenant an import
    /// creates or moves between databases (`template.scope_key` is
    /// ignored). Phone scope: `scope_key` is the MAC, and the template is
    /// written only onto a phone of that tenant.
    UpsertTenantTemplate {
        tenant: String,
        template: TemplateInput,
    },
    DeleteTenant {
        slug: String,
    },
    /// `DeleteTenant` only while the tenant holds no phone and no
    /// directory entry, as counted inside the transaction: fails with
    /// [`SyncError::NotEmpty`] otherwise. A node's own count may lag a
    /// phone another node has just added, which a plain delete would take
    /// with it. Rows written meanwhile wait for this write (their tenant's
    /// row is locked) and then find no tenant.
    DeleteEmptyTenant {
        slug: String,
    },
    DeletePhone {
        mac: Mac,
    },
    /// A hardware swap: the phone at `from` takes the MAC `to` and keeps
    /// everything else (tenant, lines and their sealed passwords, its
    /// phone-scope templates, which follow it to the new MAC). Fails with
    /// [`SyncError::Taken`] if `to` is any tenant's phone, with
    /// [`SyncError::NotFound`] if `from` is no phone.
    ReplacePhoneMac {
        from: Mac,
        to: Mac,
    },
    DeleteDirectoryEntry {
        tenant: String,
        external_id: String,
    },
    /// Deletes every entry of `tenant` whose key is not in `keep` (an
    /// entry without a key too): an import that replaces the tenant's
    /// directory, after its upserts, in one statement of the write's own
    /// transaction. Refused, and the whole write with it, when the entries
    /// it deletes are more than `most_deleted_percent` of those the
    /// tenant had when the write began: a file cut short or the wrong
    /// sheet would otherwise empty a directory without a word.
    ReplaceDirectory {
        tenant: String,
        keep: Vec<String>,
        most_deleted_percent: u8,
    },
    UpsertDirectorySource(DirectorySourceInput),
    /// Fails with [`SyncError::Taken`] if the tenant has a source of the name.
    CreateDirectorySource(DirectorySourceInput),
    DeleteDirectorySource {
        tenant: String,
        name: String,
    },
    /// Tokens are never updated in place: they are created, then revoked.
    CreateApiToken(ApiTokenInput),
    RevokeApiToken {
        id: Id,
    },
    /// Removes a stored template and its versions (a foreign key); the
    /// audit trail keeps who changed it.
    DeleteTemplate {
        id: Id,
    },
    /// Fails the whole write with [`SyncError::Conflict`] unless the row's
    /// current [`crate::etag`] is `etag` (optimistic concurrency: an edit
    /// made from a stale read is refused, never applied over a newer one).
    /// The row is locked until the transaction ends.
    Expect {
        target: Target,
        etag: String,
    },
}

/// One row (for a phone: with its lines) as an API addresses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Tenant {
        slug: String,
    },
    Phone {
        mac: Mac,
    },
    Template {
        id: Id,
    },
    DirectoryEntry {
        tenant: String,
        external_id: String,
    },
    DirectorySource {
        tenant: String,
        name: String,
    },
    /// The API token a write is made with: checked, not locked, so that a
    /// token revoked (or gone with its tenant) on the database writes
    /// nothing through a node whose mirror has not seen that yet.
    Token {
        id: Id,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tenant { slug } => write!(f, "tenant {slug}"),
            Target::Phone { mac } => write!(f, "phone {mac}"),
            Target::Template { id } => write!(f, "template #{id}"),
            Target::DirectoryEntry {
                tenant,
                external_id,
            } => {
                write!(f, "directory entry {tenant}/{external_id}")
            }
            Target::DirectorySource { tenant, name } => {
                write!(f, "directory source {tenant}/{name}")
            }
            Target::Token { id } => write!(f, "token #{id}"),
        }
    }
}

/// One kept version of a template body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVersion {
    pub template_id: Id,
    pub version: i64,
    pub body: String,
    pub updated_by: String,
    pub updated_at: Millis,
}

/// A kept version's particulars without its body, as a list shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateVersionSummary {
    pub version: i64,
    /// The body's length in bytes.
    pub bytes: i64,
    /// [`version_digest`] of the body.
    pub digest: String,
    pub updated_by: String,
    pub updated_at: Millis,
}

pub use admin::version_digest;

/// Which audit rows to read, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only rows of this tenant slug (a global admin's filter): today's
    /// holder of the slug, by id; when no tenant holds it, the rows
    /// written under that slug.
    pub tenant: Option<String>,
    /// Only rows of this tenant row (a tenant token's view: never rows of an
    /// earlier tenant that had the same slug).
    pub tenant_id: Option<Id>,
    pub entity: Option<String>,
    pub actor: Option<String>,
    /// Only rows about this row (their `entity_key`).
    pub entity_key: Option<String>,
    /// Rows with an id below this one (keyset pagination).
    pub before_id: Option<Id>,
    pub limit: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: Id,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub entity: String,
    pub entity_key: String,
    pub tenant: Option<String>,
    pub summary: serde_json::Value,
}

/// The audit row written in the same transaction as a write.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Audit {
    pub actor: String,
    /// The tenant the write touched; `None` for platform-wide changes.
    #[serde(default)]
    pub tenant: Option<String>,
    pub action: String,
    pub entity: String,
    pub entity_key: String,
    /// Caller's summary (hashes, file names, counts). Never secrets.
    pub detail: serde_json::Value,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

/// How [`Store::apply_with_progress`] ends its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Commit,
    /// A dry run: every statement runs, under the same locks, so the report
    /// and any refusal are the import's own; then the transaction is rolled
    /// back. Only sequences (ids) stay advanced, as after any rollback.
    RollBack,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReport {
    pub templates: Counts,
    pub tenants: Counts,
    pub phones: Counts,
    pub lines: Counts,
    pub directory_entries: Counts,
    pub directory_sources: Counts,
    pub api_tokens: Counts,
    /// Phones moved to another tenant, by the tenant each left: that
    /// tenant's `move_out` audit row. Not part of the report shown, which
    /// is the writer's and names no other tenant's counts.
    #[serde(skip)]
    pub moved_out: std::collections::BTreeMap<Id, u64>,
}

impl WriteReport {
    pub fn changed(&self) -> u64 {
        [
            self.tenants,
            self.phones,
            self.lines,
            self.directory_entries,
            self.directory_sources,
            self.api_tokens,
        ]
        .iter()
        .map(|c| c.inserted + c.updated + c.deleted)
        .sum()
    }
}

/// One file served to one device, as the front ends report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct BootRecord {
    pub mac: String,
    pub at: Millis,
    pub remote_ip: String,
    pub user_agent: Option<String>,
    pub protocol: String,
    pub file: String,
    pub outcome: String,
    pub bytes: i64,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// The tenant that owned the phone at the time: the next owner of the
    /// MAC does not see it.
    pub tenant_id: Option<Id>,
}

/// Told how many mutations of a write are done, for progress bars.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Tells `progress` (if any) that `done` mutations are done, then yields to
/// the runtime, whether or not anyone listens.
///
/// A statement whose answer is already in the socket buffer when it is read
/// does not yield: sqlx reads it without a wait, past tokio's cooperative
/// budget. On a busy machine the server often answers before the writer
/// reads, and a write of a few hundred statements ran to its `COMMIT`
/// without yielding once: it kept its worker thread from other tasks for
/// the whole time, and a write cancelled mid-way (a client gone) committed
/// anyway. Yielding here, every 16 mutations written one by one, bounds both; a
/// cancelled write stops at its next progress point.
/// Whether this process has checked its key against the database's check
/// value. `migrate` and `check_schema` do, and every start and command
/// runs one of them, but a node that started from its snapshot while the
/// database was unreachable ran neither: a write sealing secrets with a
/// key the database does not use (a `key_file` missing on this one node,
/// created anew) would leave them unreadable on every other node, and one
/// into a schema a newer binary migrated could write what it no longer
/// means. So a write checks both first when nothing has yet.
#[derive(Default)]
pub(crate) struct KeyChecked(std::sync::atomic::AtomicBool);

impl KeyChecked {
    pub(crate) fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

pub(crate) async fn progress_point(progress: Option<&Progress>, done: u64) {
    if let Some(progress) = progress {
        progress(done);
    }
    tokio::task::yield_now().await;
}

/// Wakes the watcher when the database may have changed. It may wake without
/// a change; it must not sleep through one for longer than its backend's poll.
#[async_trait]
pub trait Notifier: Send {
    async fn wait(&mut self) -> Result<(), SyncError>;
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Connects once, directly, so an unreachable database is reported with
    /// its real cause (refused, DNS, auth) rather than a pool timeout.
    async fn ping(&self) -> Result<(), SyncError>;

    /// Applies pending migrations; refuses a database migrated by a newer binary.
    async fn migrate(&self) -> Result<(), SyncError>;

    /// Refuses a database that is not migrated, or migrated by a newer binary.
    async fn check_schema(&self) -> Result<(), SyncError>;

    /// Every mirrored row, built into the mirror's tables as it is read
    /// (cold start, full reload), and the cursor the rows are consistent
    /// with.
    async fn load_tables(&self) -> Result<(crate::mirror::Loading, Cursor, Meta), SyncError>;

    /// The same rows as plain rows (tools and tests compare those).
    async fn load_all(&self) -> Result<(Dataset, Cursor, Meta), SyncError> {
        let (loading, cursor, meta) = self.load_tables().await?;
        Ok((loading.into_dataset(), cursor, meta))
    }

    /// Changes after `cursor`, each with its row's current state. `seen`,
    /// from the read that gave `cursor`, lets a backend skip what that read
    /// already returned.
    async fn changes_since(
        &self,
        cursor: Cursor,
        seen: Option<&SeenAbove>,
    ) -> Result<ChangeBatch, SyncError>;

    async fn meta(&self) -> Result<Meta, SyncError>;

    async fn notifier(&self) -> Result<Box<dyn Notifier>, SyncError>;

    /// Applies all mutations and the audit row in one transaction.
    async fn apply(&self, mutations: &[Mutation], audit: &Audit) -> Result<WriteReport, SyncError> {
        self.apply_with_progress(mutations, audit, None, Ending::Commit)
            .await
    }

    /// As [`Store::apply`], calling `progress` with the number of mutations
    /// done; with [`Ending::RollBack`], a rehearsal.
    async fn apply_with_progress(
        &self,
        mutations: &[Mutation],
        audit: &Audit,
        progress: Option<Progress>,
        ending: Ending,
    ) -> Result<WriteReport, SyncError>;

    /// Deletes change-log rows older than `retain`, and beyond `max_rows`.
    /// Returns how many rows went.
    async fn prune_change_log(&self, retain: Duration, max_rows: i64) -> Result<u64, SyncError>;

    /// Forces every node to do a full reload (after a restore, say), and
    /// starts the change log anew: the old one is emptied and its pruned
    /// point reset, since a restored one can lie ahead of every cursor.
    async fn bump_epoch(&self) -> Result<i64, SyncError>;

    /// Re-seals every stored secret with `new_key` and makes it the key
    /// the database checks, in one transaction that writers wait for;
    /// refuses, writing nothing, when a value does not open with this
    /// store's key (naming it) or `new_key` is that key. This store's key
    /// is then no longer the database's: close it.
    async fn rekey(&self, new_key: &SecretKey, audit: &Audit) -> Result<RekeyReport, SyncError>;

    async fn record_boots(&self, records: &[BootRecord]) -> Result<(), SyncError>;

    /// A phone's latest fetches, newest first, those stamped after
    /// [`crate::trusted_until`] of this node's clock last; with `tenant`,
    /// only those made while that tenant owned it.
    async fn recent_boots(
        &self,
        mac: &Mac,
        tenant: Option<Id>,
        limit: i64,
    ) -> Result<Vec<BootRecord>, SyncError>;

    /// Where a phone of `tenant` was served lately, newest first: its
    /// served fetches only, chosen before the limit (anyone can make a
    /// refused fetch name a MAC, and a few dozen hid every real one).
    /// Only those stamped at `stamped_by` or before, also chosen before
    /// the limit: rows stamped by a clock stepped ahead sort first, outlive
    /// pruning by age until their stamp, and filled the limit meanwhile.
    async fn served_boots(
        &self,
        mac: &Mac,
        tenant: Id,
        stamped_by: Millis,
        limit: i64,
    ) -> Result<Vec<BootRecord>, SyncError>;

    /// For the fleet view: the latest fetch of each of `macs` made while
    /// `tenant` owned it (one stamped after [`crate::trusted_until`] only
    /// for a phone with no other), and the tenant's fetches per hour since `since`
    /// (only those of `macs`). The caller bounds `macs`.
    async fn fleet_history(
        &self,
        tenant: Id,
        macs: &[Mac],
        since: Millis,
    ) -> Result<FleetHistory, SyncError>;

    /// Every kept version of a template, oldest first.
    async fn template_versions(&self, template_id: Id) -> Result<Vec<TemplateVersion>, SyncError>;

    /// Up to `limit` of a template's kept versions older than `before`
    /// (from the newest when `None`), newest first, without their bodies.
    /// This default reads every body: a backend lists them in SQL instead.
    async fn template_version_list(
        &self,
        template_id: Id,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<TemplateVersionSummary>, SyncError> {
        let versions = self.template_versions(template_id).await?;
        Ok(versions
            .iter()
            .rev()
            .filter(|v| before.is_none_or(|before| v.version < before))
            .take(limit.max(0) as usize)
            .map(|v| TemplateVersionSummary {
                version: v.version,
                bytes: v.body.len() as i64,
                digest: version_digest(&v.body),
                updated_by: v.updated_by.clone(),
                updated_at: v.updated_at,
            })
            .collect())
    }

    /// One kept version of a template, with its body. This default reads
    /// every version: a backend reads the one row instead.
    async fn template_version(
        &self,
        template_id: Id,
        version: i64,
    ) -> Result<Option<TemplateVersion>, SyncError> {
        let versions = self.template_versions(template_id).await?;
        Ok(versions.into_iter().find(|v| v.version == version))
    }

    /// Audit rows matching `query`, newest first.
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, SyncError>;

    /// Deletes boot history older than `retain`.
    async fn prune_boots(&self, retain: Duration) -> Result<u64, SyncError>;

    /// Deletes audit rows older than `retain`.
    async fn prune_audit(&self, retain: Duration) -> Result<u64, SyncError>;

    /// Deletes API tokens revoked, or expired, longer than `retain` ago:
    /// they authenticate nothing, yet every node's mirror holds them.
    async fn prune_tokens(&self, retain: Duration) -> Result<u64, SyncError>;

    /// Upserts unclaimed devices (each (tenant, mac) once, `count` the
    /// fetches to add), then keeps each touched tenant's `per_tenant` most
    /// recently seen, those last seen after [`crate::trusted_until`] of
    /// this node's clock cut first.
    async fn record_unclaimed(
        &self,
        devices: &[UnclaimedDevice],
        per_tenant: i64,
    ) -> Result<(), SyncError>;

    /// A tenant's (or [`UNASSIGNED`]'s) unclaimed devices, last seen first,
    /// those last seen after [`crate::trusted_until`] last.
    async fn unclaimed_devices(
        &self,
        tenant: Id,
        limit: i64,
    ) -> Result<Vec<UnclaimedDevice>, SyncError>;

    /// How many unclaimed devices each tenant (and [`UNASSIGNED`]) lists,
    /// MACs that are phones now left out; `only` one tenant's. Tenants
    /// listing none are absent.
    async fn unclaimed_counts(&self, only: Option<Id>) -> Result<Vec<(Id, i64)>, SyncError>;

    /// Forgets one unclaimed device; false if it was not listed.
    async fn remove_unclaimed(&self, tenant: Id, mac: &Mac) -> Result<bool, SyncError>;

    async fn close(&self);
}

/// Opens the store a URL names: `sqlite://PATH` (or `sqlite::memory:`) or
/// `postgres://…` / `postgresql://…`.
pub async fn open(
    url: &str,
    key: SecretKey,
    options: &StoreOptions,
) -> Result<Arc<dyn Store>, SyncError> {
    match parse_url(url)? {
        Backend::Sqlite => Ok(Arc::new(
            sqlite::SqliteStore::connect(url, key, options).await?,
        )),
        Backend::Postgres => Ok(Arc::new(
            postgres::PgStore::connect(url, key, options).await?,
        )),
    }
}

/// [`open`], but a SQLite file that cannot be opened now for a cause
/// outside its data ([`SyncError::is_sqlite_file_outage`]: a full disk, a
/// read-only mount) still gives a store, which opens the file at each use
/// until it opens, as a PostgreSQL store connects at each use until its
/// server answers. Its first use fails as the open did: the caller tells
/// from that whether it can serve meanwhile (from a snapshot) or stops.
pub async fn open_through_outage(
    url: &str,
    key: SecretKey,
    options: &StoreOptions,
) -> Result<Arc<dyn Store>, SyncError> {
    match open(url, key.clone(), options).await {
        Err(e) if e.is_sqlite_file_outage() => Ok(Arc::new(sqlite::SqliteStore::connect_lazily(
            url, key, options,
        )?)),
        opened => opened,
    }
}

/// The share of a tenant's directory entries an import that replaces the
/// directory may delete unless told otherwise: an address book exported
/// again keeps most of its people, and a cut-short file does not.
pub const DEFAULT_MOST_DELETED_PERCENT: u8 = 50;

/// The URL query parameters sqlx's PostgreSQL driver reads (0.8), besides
/// `options[NAME]`.
pub const PG_URL_PARAMS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Refuses a query parameter sqlx would ignore: it logs the ignored
/// parameter's value as a warning, and `sslpassword=...` (libpq's, which
/// sqlx does not read) would put a secret on the terminal and in the log.
fn pg_params_known(url: &str) -> Result<(), SyncError> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    for (key, _) in parsed.query_pairs() {
        let known =
            PG_URL_PARAMS.contains(&&*key) || (key.starts_with("options[") && key.ends_with(']'));
        if !known {
            return Err(SyncError::UnknownUrlParameter(key.into_owned()));
        }
    }
    Ok(())
}

/// What a constraint's refusal says to whoever wrote the row: the
/// database's own text names its tables and constraints, and differs
/// between the backends (it goes to the debug log).
pub(crate) fn constraint_reason(db: &dyn sqlx::error::DatabaseError) -> &'static str {
    use sqlx::error::ErrorKind;
    match db.kind() {
        ErrorKind::UniqueViolation => "already exists (another row has the same key)",
        ErrorKind::ForeignKeyViolation => {
            "refers to a row that does not exist, or is still referred to"
        }
        ErrorKind::NotNullViolation => "a required value is missing",
        ErrorKind::CheckViolation => "a value is outside what is allowed",
        _ => "refused by a database constraint",
    }
}

/// How a write refuses a row that names a tenant no one has created. One
/// text, so `dialtone import` can tell this refusal from others and report
/// (or skip) every phone of that tenant at once.
pub fn unknown_tenant(slug: &str) -> String {
    format!("unknown tenant {slug:?}")
}

pub fn backend_of(url: &str) -> Result<Backend, SyncError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        pg_params_known(url)?;
        Ok(Backend::Postgres)
    } else {
        Err(SyncError::UnsupportedUrl(masked_url(url)))
    }
}

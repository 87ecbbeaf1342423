//! dialtone's data layer. It keeps every mirrored table of the SQL database in
//! memory, in sync, so that provisioning and lookups never wait on SQL and
//! keep working through a database outage.
//!
//! - [`store`]: the only code in dialtone that knows SQL (SQLite and PostgreSQL).
//! - [`mirror`]: the in-memory replica readers use, and its change stream.
//! - [`watcher`]: keeps the mirror current from the change log.
//! - [`snapshot`]: the mirror on local disk, for fast and database-less starts.
//! - [`import`]: CSV/JSON bulk import into mutations.
//! - [`checks`]: what a row may hold, for the admin API and the import alike.
//! - [`addresses`]: the IPv4 host inside an IPv6 address, and what is public.

pub mod addresses;
mod batch;
mod blocking;
pub mod checks;
pub mod crypto;
pub mod error;
pub mod etag;
pub mod export;
pub mod history;
pub mod import;
mod intern;
mod log_limit;
mod log_text;
pub mod mirror;
pub mod model;
mod queue;
mod shard;
mod skew;
pub mod snapshot;
pub mod stamp;
pub mod store;
mod tenant_log_limit;
#[cfg(feature = "testing")]
pub mod testing;
pub mod unclaimed;
pub mod watcher;

pub use crypto::{bearer_token, generate_token, token_hash, Purpose, Sealed, SecretKey};
pub use error::SyncError;
pub use etag::{etag_of, phone_etag};
pub use log_limit::LogLimit;
pub use log_text::{log_text, LOG_TEXT_MAX};
pub use mirror::{ChangeEvent, LoadedFrom, Mirror, MirrorHealth, MirrorState};
pub use model::*;
pub use queue::DROP_REASONS;
pub use skew::{trusted_until, MAX_CLOCK_SKEW};
pub use snapshot::crc32c::{checksum as crc32c, Crc32c};
pub use store::{
    open, ApiTokenInput, Audit, AuditQuery, AuditRecord, Backend, DirectorySourceInput, Mutation,
    Store, StoreOptions, Target, TemplateVersion, WriteReport,
};
pub use tenant_log_limit::TenantLogLimit;

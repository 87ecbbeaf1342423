//! dialtone's caller-name lookup: "who is +15550101234?" for a tenant.
//!
//! - [`normalize`]: any number format to E.164.
//! - [`local`], [`ldap`], [`upstream`]: the sources (the tenant's directory
//!   from the mirror, LDAP/AD, upstream HTTP CNAM); only this crate knows LDAP.
//! - [`mirror`]: LDAP sources in mirror mode, synced into memory and disk.
//! - [`service`]: cache, coalescing, deadline and breakers around them.
//! - [`http`]: the lookup routes on the API listener, within each tenant's
//!   request budget (`rate`).

mod admission;
pub mod breaker;
pub mod cache;
pub mod clock;
mod cow_map;
pub mod error;
pub mod explain;
pub mod filter;
pub mod http;
pub mod ldap;
mod ldap_relay;
mod ldap_searches;
mod ldap_wire;
pub mod local;
pub mod mirror;
pub mod name;
pub mod networks;
pub mod normalize;
mod number_index;
mod rate;
mod readings;
mod replace_file;
pub mod secret_destination;
pub mod service;
pub mod settings;
pub mod shared_number;
pub mod source_label;
#[cfg(test)]
mod source_log_tests;
pub mod sources;
mod tenant_index;
#[cfg(test)]
mod test_fixture;
pub mod upstream;

pub use clock::Clock;
pub use error::DirectoryError;
pub use mirror::MirrorStatus;
pub use networks::SourceNetworks;
pub use normalize::{check_lookup_len, normalize, NormalizeError, MAX_LOOKUP_LEN};
pub use service::{Answer, CacheStatus, LookupOptions, LookupService};

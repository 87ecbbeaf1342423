//! dialtone's provisioning: identify who asks for which file, render it from
//! the mirror, and serve it. Both transports call [`Provisioner::provision`].

mod admission;
#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod cache_tests;
mod compiled;
mod data;
mod debts;
pub mod device_auth;
pub mod digest;
mod directory_budget;
#[cfg(test)]
mod dropped_tests;
pub mod dual_stack;
pub mod engine;
mod engine_check;
#[cfg(test)]
mod engine_tests;
pub mod error;
mod files;
pub mod guard;
pub mod host_names;
pub mod http;
pub mod identify;
pub mod known;
mod models;
mod outcome;
pub mod phonebook;
pub mod pool;
pub mod preview;
pub mod provision;
pub mod render;
mod render_cache;
mod render_files;
#[cfg(test)]
mod render_files_tests;
mod render_inputs;
mod selfcheck;
pub mod statics;
pub mod templates;
mod tenant_networks;
pub mod tftp;
mod unclaimed;

pub use error::ProvisionError;
pub use identify::{
    family_by_oui, identify, parse_user_agent, sanitize_path, FileKind, IdentifyError, Identity,
    UserAgent,
};
pub use outcome::FAMILY_MISMATCH;
pub use provision::{Protocol, ProvisionOptions, Provisioner, Rendered, Request};
pub use templates::Shipped;

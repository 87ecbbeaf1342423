//! dialtone's provisioning: device identification now; rendering, the
//! `provision()` core and the TFTP and HTTP front ends build on it.

pub mod identify;

pub use identify::{
    identify, parse_user_agent, sanitize_path, FileKind, IdentifyError, Identity, UserAgent,
};

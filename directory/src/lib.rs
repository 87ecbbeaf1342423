//! dialtone's caller-name lookup. So far: number normalization; sources,
//! the cache and the API build on it.

pub mod local;
pub mod normalize;

pub use normalize::{normalize, suffix, NormalizeError};

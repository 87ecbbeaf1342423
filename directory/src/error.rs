use crate::normalize::NormalizeError;

/// Everything that can go wrong in a lookup or while building a source.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Number(#[from] NormalizeError),
    #[error("unknown tenant")]
    UnknownTenant,
    #[error("source {source_name:?}: invalid settings: {reason}")]
    Settings { source_name: String, reason: String },
    #[error("LDAP: {0}")]
    Ldap(String),
    /// The source refused our credentials (LDAP bind, HTTP 401/403).
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("HTTP upstream: {0}")]
    Upstream(String),
    #[error("timed out")]
    Timeout,
    #[error("circuit breaker open")]
    BreakerOpen,
    #[error("too many lookups in flight")]
    Overloaded,
    /// The source's address is outside `lookup.source_networks`.
    #[error("{0} is not an address sources may reach (lookup.source_networks)")]
    Refused(String),
    /// A mirrored source has neither synced nor loaded its file yet.
    #[error("the mirror has not synced yet")]
    MirrorNotReady,
    #[error("mirror file {0}")]
    MirrorFile(String),
    /// A mirror sync stopped at one of its bounds (pages, bytes, time).
    #[error("mirror sync: {0}")]
    MirrorLimit(String),
}

impl DirectoryError {
    /// A short, fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DirectoryError::Number(_) => "invalid_number",
            DirectoryError::UnknownTenant => "unknown_tenant",
            DirectoryError::Settings { .. } => "settings",
            DirectoryError::Ldap(_) => "ldap",
            DirectoryError::Auth(_) => "auth",
            DirectoryError::Upstream(_) => "upstream",
            DirectoryError::Timeout => "timeout",
            DirectoryError::BreakerOpen => "breaker_open",
            DirectoryError::Overloaded => "overloaded",
            DirectoryError::Refused(_) => "refused",
            DirectoryError::MirrorNotReady => "mirror_not_ready",
            DirectoryError::MirrorFile(_) => "mirror_file",
            DirectoryError::MirrorLimit(_) => "mirror_limit",
        }
    }
}

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
    /// The source's host name did not resolve here.
    #[error("{0}")]
    Unresolved(String),
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
    /// The class a tenant is told. A name that does not resolve and one
    /// that resolves only to addresses sources may not reach look the
    /// same: told apart, a tenant could list which internal names this
    /// node's resolver knows by naming them as its source's host.
    pub fn shown_to_tenant(&self) -> &'static str {
        match self {
            DirectoryError::Refused(_) | DirectoryError::Unresolved(_) => "unreachable",
            other => other.kind(),
        }
    }

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
            DirectoryError::Unresolved(_) => "unresolved",
            DirectoryError::MirrorNotReady => "mirror_not_ready",
            DirectoryError::MirrorFile(_) => "mirror_file",
            DirectoryError::MirrorLimit(_) => "mirror_limit",
        }
    }
}

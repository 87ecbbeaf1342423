/// Why a file was not served. Clients see only "not found" or a generic
/// failure; the detail goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// Unknown file pattern, unknown phone, or a file this phone's family
    /// does not use. Deliberately says nothing more.
    #[error("file not found")]
    NotFound,

    #[error("refused path: {0}")]
    BadPath(&'static str),

    /// The source made too many misses and is banned for a while.
    #[error("source banned")]
    Banned,

    /// The template failed for this phone.
    #[error("template {template}{}: {message}", position(*line, *column))]
    Render {
        template: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// The phone has HTTP credentials and the request did not prove them;
    /// `stale`: only the Digest nonce expired; `unchecked`: its answer was
    /// refused without a look, the phone's credentials being closed to
    /// the source (answered as a wrong one, charged to nobody).
    #[error("device authentication required")]
    Unauthorized { stale: bool, unchecked: bool },

    /// The render pool has too many renders waiting (for this tenant, or
    /// overall); the client should retry.
    #[error("too many renders waiting; try again")]
    Busy,

    /// Data the render needs is unusable (a secret that will not decrypt).
    #[error("cannot render for this phone: {0}")]
    Data(String),

    /// Shipped templates could not be read.
    #[error("templates: {0}")]
    Templates(String),

    /// The static files' folder could not be indexed.
    #[error("static files {0}")]
    StaticFiles(String),

    /// Our own fault, not the data's: a walk on the pool panicked. Told
    /// apart from a walk past its time, which the caller may narrow.
    #[error("{0} failed")]
    Internal(&'static str),
}

/// How a render that ran out of time begins its message: the engine's
/// and the render pool's words for it.
pub(crate) const TIME_BUDGET: &str = "the render passed its time budget";

impl ProvisionError {
    /// A render that ran out of time: a busy machine or a stalled process
    /// as much as the template, so the same inputs may well render next
    /// time. Never remembered as the answer for them, and no sign that a
    /// cached file is wrong.
    pub fn is_out_of_time(&self) -> bool {
        matches!(self, ProvisionError::Render { message, .. } if message.starts_with(TIME_BUDGET))
    }
}

pub(crate) fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" line {l} column {c}"),
        (Some(l), None) => format!(" line {l}"),
        _ => String::new(),
    }
}

impl From<crate::identify::IdentifyError> for ProvisionError {
    fn from(e: crate::identify::IdentifyError) -> Self {
        match e {
            crate::identify::IdentifyError::NotFound => ProvisionError::NotFound,
            crate::identify::IdentifyError::BadPath(why) => ProvisionError::BadPath(why),
        }
    }
}

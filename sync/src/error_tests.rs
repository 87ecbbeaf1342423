//! How failures are classed: what passes on its own, and what names the
//! operator's remedy.

use std::borrow::Cow;

use super::SyncError;

/// A server's error with the given SQLSTATE and text.
#[derive(Debug)]
struct Refused {
    code: &'static str,
    message: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for Refused {}

impl sqlx::error::DatabaseError for Refused {
    fn message(&self) -> &str {
        self.message
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self.code))
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

fn refused(code: &'static str, message: &'static str) -> SyncError {
    sqlx::Error::Database(Box::new(Refused { code, message })).into()
}

/// A server out of connection slots, memory or disk passes like one
/// that does not answer: a start with a snapshot serves it.
#[test]
fn a_server_out_of_resources_is_transient() {
    for (code, message) in [
        (
            "53300",
            "remaining connection slots are reserved for superuser",
        ),
        ("53300", "too many connections for role \"dialtone\""),
        ("53200", "out of memory"),
        ("53100", "could not extend file: No space left on device"),
        ("53000", "insufficient resources"),
    ] {
        assert!(refused(code, message).is_transient(), "{code} {message}");
    }
    // The same work meets its limit again.
    assert!(!refused("53400", "temporary file size exceeds temp_file_limit").is_transient());
    assert!(!refused("42P01", "relation \"phones\" does not exist").is_transient());
}

/// pgbouncer's refusals name the pooler's setting, and are no outage.
#[test]
fn a_pooler_refusal_says_what_to_set() {
    let parameter = refused("08P01", "unsupported startup parameter: extra_float_digits");
    assert!(
        matches!(parameter, SyncError::PoolerParameter(_)),
        "{parameter:?}"
    );
    assert!(!parameter.is_transient());
    let text = parameter.to_string();
    assert!(
        text.contains("ignore_startup_parameters = extra_float_digits"),
        "{text}"
    );
    assert!(text.contains("pool_mode = session"), "{text}");
    for (code, message) in [
        ("42P05", "prepared statement \"sqlx_s_1\" already exists"),
        ("26000", "prepared statement \"sqlx_s_3\" does not exist"),
    ] {
        let mode = refused(code, message);
        assert!(matches!(mode, SyncError::PoolerMode(_)), "{mode:?}");
        let text = mode.to_string();
        assert!(text.contains(message) && text.contains("session"), "{text}");
    }
    let migrating: SyncError =
        sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(Box::new(Refused {
            code: "42P05",
            message: "prepared statement \"sqlx_s_1\" already exists",
        })))
        .into();
    assert!(
        matches!(migrating, SyncError::PoolerMode(_)),
        "{migrating:?}"
    );
}

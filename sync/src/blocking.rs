//! Work that holds a thread for long: a borrowed SQLite connection's
//! reads, a large catch-up's apply.

/// Runs `f` on this thread without stalling the tasks queued on it: on a
/// multi-threaded runtime they move to another worker first
/// (`block_in_place`). A single-threaded runtime has no other worker to
/// move them to, and runs `f` in place.
pub(crate) fn blocking_here<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

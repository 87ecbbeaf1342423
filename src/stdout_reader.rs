//! Standard output closed by its reader (`dialtone token list | head -1`):
//! the reader has what it wanted, so a listing ends quietly, exit 0.

/// `result`, or nothing when it failed because standard output's reader
/// went away; any other error stands.
pub fn quiet_if_reader_left(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

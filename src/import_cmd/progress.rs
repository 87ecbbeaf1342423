//! The import's progress bar.

use indicatif::{ProgressBar, ProgressStyle};

/// Only on a terminal; scripts and CI get the summary line alone. A row is
/// one tenant, phone (with its lines) or directory entry of the files.
pub(super) fn progress_bar(len: u64) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    // indicatif's own `{per_sec}` prints four decimals of a rate that moves
    // by thousands: whole rows read better.
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows, {rows_per_sec}, {elapsed}")
    {
        let style = style.with_key(
            "rows_per_sec",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0} rows/s", state.per_sec());
            },
        );
        bar.set_style(style);
    }
    Some(bar)
}

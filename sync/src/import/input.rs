//! How an import's bytes come in: a file (its lines counted first, to
//! size the plan), a JSON document as bytes, or standard input.

use std::path::Path;
use std::sync::Arc;

use super::*;

/// What `-` stands for in error locations.
const STDIN: &str = "stdin";

/// `-`: standard input, read whole (a pipe has no size to plan by, and
/// cannot be read twice), its format told by its first byte past a
/// byte-order mark: a JSON document opens with `{`, which no CSV header
/// can.
pub(super) fn plan_stdin(plan: &mut ImportPlan, phones: &mut Phones, read: &mut bool) {
    use std::io::Read;
    let file: Arc<Path> = Arc::from(Path::new(STDIN));
    let whole_file_error = |plan: &mut ImportPlan, message: String| {
        plan.whole_file_error(ImportError {
            location: Location {
                file: file.clone(),
                line: 0,
                column: 0,
                field: None,
            },
            message,
        })
    };
    if std::mem::replace(read, true) {
        return whole_file_error(plan, "standard input (-) given twice".into());
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        return whole_file_error(plan, format!("cannot read: {e}"));
    }
    let text = bytes.strip_prefix(UTF8_BOM).unwrap_or(&bytes);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => plan_json_bytes(&file, &bytes, plan, phones),
        Some(_) => {
            let lines = memchr::memchr_iter(b'\n', &bytes).count();
            csv::plan(&file, &bytes[..], (lines, bytes.len()), plan, phones);
        }
        None => whole_file_error(plan, "standard input is empty".into()),
    }
}

/// What an editor on Windows may put before UTF-8 text (csv skips it).
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Whether `bytes` open with a UTF-16 byte-order mark (either order), as
/// a spreadsheet's "Unicode text" and some editors save: read as UTF-8,
/// every character would be a fault of its own.
pub(super) fn utf16(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\xff\xfe") || bytes.starts_with(b"\xfe\xff")
}

/// The answer to a UTF-16 file, CSV or JSON.
pub(super) const UTF16: &str = "UTF-16 text: save the file as CSV UTF-8 (a JSON document as UTF-8)";

/// A JSON document's bytes, past a byte-order mark (JSON allows none, but
/// an editor may save one, and it is no fault of the data); text that is
/// not UTF-8 is reported where it stops being so, as for any other fault
/// of the document. Every way a JSON document comes in (a file, standard
/// input, the admin API's body) is read here.
pub(super) fn plan_json_bytes(
    file: &Arc<Path>,
    bytes: &[u8],
    plan: &mut ImportPlan,
    phones: &mut Phones,
) {
    let at = |line, column| Location {
        file: file.clone(),
        line,
        column,
        field: None,
    };
    if utf16(bytes) {
        return plan.whole_file_error(ImportError {
            location: at(1, 1),
            message: UTF16.into(),
        });
    }
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => json::plan(file, text, plan, phones),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            plan.whole_file_error(ImportError {
                location: at(
                    memchr::memchr_iter(b'\n', valid).count() as u64 + 1,
                    (valid.len() - line_start) as u64 + 1,
                ),
                message: "not UTF-8 text: JSON must be UTF-8".into(),
            })
        }
    }
}

/// Line breaks in `file` (an upper bound of its records), read through
/// once so the plan's vectors are sized before the parse: growing them by
/// doubling copied them into fresh pages again and again (the copies and
/// their page faults were about a quarter of a re-import's profile), and
/// for a moment held both. Also its size in bytes. The file is left at
/// its start.
pub(super) fn count_lines(mut file: &std::fs::File) -> std::io::Result<(usize, usize)> {
    use std::io::{Read, Seek};
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines += memchr::memchr_iter(b'\n', &buf[..n]).count(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let bytes = file.stream_position()? as usize;
    file.rewind()?;
    Ok((lines, bytes))
}

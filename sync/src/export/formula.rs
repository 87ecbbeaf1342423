//! The escape that keeps a spreadsheet from running a CSV export's cells
//! as formulas, and its undoing on import. The cells are tenants' own
//! text in a file that holds every tenant's secrets: a label such as
//! `=HYPERLINK(...)` would run when the operator opens the export.
//!
//! A cell a spreadsheet would read as a formula is written with a `'`
//! before it, which spreadsheets show as text and the import takes off
//! again. A cell that starts with `'` is escaped too, so that a `'` a
//! tenant wrote survives the round trip: the escape is undone only where
//! it can have been made, and every value reads back exactly.

use std::borrow::Cow;

/// What a spreadsheet reads as the start of a formula (or of a cell it
/// evaluates after stripping), and the escape itself.
const ESCAPED_STARTS: &[u8] = b"=+-@\t\r'";

const ESCAPE: u8 = b'\'';

/// A signed decimal number such as an E.164 `+15551234567` or `-5`:
/// a spreadsheet takes it as a number, never as a formula, and an escape
/// would only make it harder to read.
fn plain_number(cell: &[u8]) -> bool {
    let unsigned = match cell {
        [b'+' | b'-', rest @ ..] => rest,
        _ => cell,
    };
    let (whole, fraction) = match unsigned.iter().position(|&b| b == b'.') {
        Some(dot) => (&unsigned[..dot], Some(&unsigned[dot + 1..])),
        None => (unsigned, None),
    };
    let digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
    digits(whole) && fraction.is_none_or(digits)
}

/// `cell` as the export writes it.
pub(crate) fn escape(cell: &str) -> Cow<'_, [u8]> {
    let bytes = cell.as_bytes();
    match bytes.first() {
        Some(first) if ESCAPED_STARTS.contains(first) && !plain_number(bytes) => {
            let mut escaped = Vec::with_capacity(bytes.len() + 1);
            escaped.push(ESCAPE);
            escaped.extend_from_slice(bytes);
            Cow::Owned(escaped)
        }
        _ => Cow::Borrowed(bytes),
    }
}

/// `cell` without the escape [`escape`] gave it, or `None` when it has
/// none.
pub(crate) fn unescape(cell: &str) -> Option<&str> {
    match cell.as_bytes() {
        [ESCAPE, second, ..] if ESCAPED_STARTS.contains(second) => Some(&cell[1..]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(cell: &str) -> String {
        let written = String::from_utf8(escape(cell).into_owned()).unwrap();
        unescape(&written).unwrap_or(&written).to_string()
    }

    #[test]
    fn formulas_are_escaped_and_plain_numbers_are_not() {
        for (cell, written) in [
            (
                "=HYPERLINK(\"http://x/\",\"y\")",
                "'=HYPERLINK(\"http://x/\",\"y\")",
            ),
            ("+1 (555) 010-1234", "'+1 (555) 010-1234"),
            ("-x", "'-x"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'quoted", "''quoted"),
            ("+", "'+"),
            ("-", "'-"),
            ("+1.", "'+1."),
            ("-.5", "'-.5"),
            ("1e5", "1e5"),
            ("+15551234567", "+15551234567"),
            ("-5", "-5"),
            ("+1.25", "+1.25"),
            ("Alice", "Alice"),
            ("", ""),
            ("O'Brien", "O'Brien"),
        ] {
            assert_eq!(escape(cell), written.as_bytes(), "{cell:?}");
        }
    }

    #[test]
    fn every_value_reads_back_exactly() {
        let pieces = [
            "", "=", "+", "-", "@", "\t", "\r", "\n", "'", "''", "1", "5.5", ".", " ", "x", "é",
            "\"", ",",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let cell = format!("{a}{b}{c}");
                    assert_eq!(round_trip(&cell), cell, "{cell:?}");
                }
            }
        }
    }
}

//! The text a phone's directory shows and dials, from a stored entry.

use std::borrow::Cow;

/// (first, last). "Smith, John" is the way directories sort people, so a
/// comma puts the last name first; otherwise the last word is the last name.
pub(super) fn split_name(name: &str) -> (&str, &str) {
    if let Some((last, first)) = name.split_once(',') {
        return (first.trim(), last.trim());
    }
    match name.trim().rsplit_once(' ') {
        Some((first, last)) => (first.trim(), last.trim()),
        None => (name.trim(), ""),
    }
}

/// What a phone dials for a stored number. Phones dial their directory's
/// text literally, so `+1 (555) 010-1234` loses its separators; text that is
/// not a plain number once they are gone (`ext. 12`, a SIP URI) is left as
/// stored, since guessing at it would dial something else.
pub(super) fn dial_string(number: &str) -> Cow<'_, str> {
    let dialed: String = number
        .chars()
        .filter(|c| !matches!(c, ' ' | '(' | ')' | '.' | '-' | '/'))
        .collect();
    let digits = dialed.strip_prefix('+').unwrap_or(&dialed);
    let dialable = !digits.is_empty()
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#');
    if dialable && dialed != number {
        Cow::Owned(dialed)
    } else {
        Cow::Borrowed(number)
    }
}

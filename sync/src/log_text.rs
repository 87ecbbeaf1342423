//! Request-supplied text as log lines carry it, shared by every crate.

use std::borrow::Cow;

/// The most of one piece of untrusted text a log line carries. The longest
/// path a phone may ask for (255 bytes) still comes out whole.
pub const LOG_TEXT_MAX: usize = 256;

/// `text` cut to [`LOG_TEXT_MAX`] bytes, on a character boundary, with a
/// marker giving its whole length. A refused request is logged (within
/// its once-a-second limit) whatever it held: a 60 KB path or User-Agent
/// taken whole, from a few addresses under the ban rate, was gigabytes of
/// log a day. Text that fits is borrowed as it is.
pub fn log_text(text: &str) -> Cow<'_, str> {
    if text.len() <= LOG_TEXT_MAX {
        return Cow::Borrowed(text);
    }
    let mut end = LOG_TEXT_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…[cut, {} bytes]", &text[..end], text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_borrowed_whole() {
        let path = "a".repeat(LOG_TEXT_MAX);
        assert!(matches!(log_text(&path), Cow::Borrowed(p) if p == path));
        assert!(matches!(log_text(""), Cow::Borrowed("")));
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        let path = "a".repeat(60_000);
        let cut = log_text(&path);
        assert_eq!(
            cut,
            format!("{}…[cut, 60000 bytes]", "a".repeat(LOG_TEXT_MAX))
        );
        assert!(cut.len() < LOG_TEXT_MAX + 32);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // 'é' is two bytes: the 256th byte falls inside one.
        let text = format!("a{}", "é".repeat(1000));
        let cut = log_text(&text);
        assert!(cut.starts_with(&format!("a{}…", "é".repeat(127))), "{cut}");
        assert!(cut.ends_with("[cut, 2001 bytes]"), "{cut}");
    }
}

//! The query string of a phone's directory request (page and search
//! term), read by form-urlencoded rules, and the term written back into
//! the paging links so the next page searches for the same thing.

use std::fmt::Write;

/// Options a phone's request can carry (HTTP query string).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub page: usize,
    pub search: Option<String>,
}

/// Longest search term kept, in characters after decoding.
const MAX_TERM: usize = 64;

impl Query {
    /// `query` is the raw query string, still percent-encoded: phones
    /// encode a term with `%XX` or `+` as they please, and each spelling
    /// must find the same rows.
    pub fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match &*form_decode(k) {
                "page" => q.page = form_decode(v).parse().unwrap_or(0).min(10_000),
                "q" => {
                    let term: String = form_decode(v)
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_TERM)
                        .collect();
                    q.search = Some(term.trim().to_lowercase()).filter(|t| !t.is_empty());
                }
                _ => {}
            }
        }
        q
    }
}

/// One name or value of a form-urlencoded query: `+` is a space, `%XX` a
/// byte, and a `%` without two hex digits stays itself. Bytes that are not
/// UTF-8 read as U+FFFD, which no real name contains, so such a term
/// finds nothing rather than being refused.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Digit by digit: `u8::from_str_radix` would take `%+5` as 5.
        let escaped = match bytes[i..] {
            [b'%', high, low, ..] => hex_digit(high).zip(hex_digit(low)),
            _ => None,
        };
        if let Some((high, low)) = escaped {
            decoded.push(high << 4 | low);
            i += 3;
            continue;
        }
        decoded.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|digit| digit as u8)
}

/// `term` as a query value: every byte but the unreserved ones as `%XX`,
/// so `&`, `#`, `+` and `%` in it mean themselves on the next page.
pub(super) fn form_encode(term: &str) -> String {
    let mut encoded = String::with_capacity(term.len());
    for byte in term.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

//! Names go into SIP headers (`From: "Name" <sip:…>`) and onto phone
//! screens, so what a directory returns is cleaned before it is cached.

/// The longest name we hand out, in characters. Phone screens show fewer;
/// SIP display names should stay short.
pub const MAX_NAME_CHARS: usize = 64;

/// Placeholders some upstreams return instead of a miss. Passing them on
/// would overwrite the caller's own name with "UNKNOWN".
const PLACEHOLDERS: [&str; 6] = [
    "unknown",
    "unavailable",
    "anonymous",
    "private",
    "restricted",
    "wireless caller",
];

/// A displayable name, or `None` when nothing useful is left: control
/// characters and quotes removed, whitespace collapsed, at most
/// [`MAX_NAME_CHARS`] characters.
pub fn clean_name(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(MAX_NAME_CHARS * 2));
    let mut chars = 0;
    let mut pending_space = false;
    for c in raw.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        // A quote or backslash would end or escape the SIP quoted string.
        let c = match c {
            '"' => '\'',
            '\\' => '/',
            // Bidi overrides and zero-width characters disguise a name.
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => continue,
            '\u{feff}' => continue,
            c => c,
        };
        if pending_space {
            if chars + 1 >= MAX_NAME_CHARS {
                break;
            }
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        if chars >= MAX_NAME_CHARS {
            break;
        }
        out.push(c);
        chars += 1;
    }
    let is_placeholder = PLACEHOLDERS.iter().any(|p| out.eq_ignore_ascii_case(p));
    (!out.is_empty() && !is_placeholder).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        let cases: [(&str, Option<&str>); 10] = [
            ("Alice Example", Some("Alice Example")),
            ("  Alice\t\r\n  Example \u{0}", Some("Alice Example")),
            ("Bob \"The Boss\" Smith", Some("Bob 'The Boss' Smith")),
            (
                "Evil\r\nVia: SIP/2.0/UDP x",
                Some("Evil Via: SIP/2.0/UDP x"),
            ),
            ("back\\slash", Some("back/slash")),
            ("UNKNOWN", None),
            ("Unavailable", None),
            ("   ", None),
            ("\u{202e}Zoë\u{200b} Ålund", Some("Zoë Ålund")),
            ("", None),
        ];
        for (raw, want) in cases {
            assert_eq!(clean_name(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = "Ж".repeat(100);
        let cleaned = clean_name(&long).unwrap();
        assert_eq!(cleaned.chars().count(), MAX_NAME_CHARS);
        let spaced = "ab ".repeat(40);
        let cleaned = clean_name(&spaced).unwrap();
        assert!(cleaned.chars().count() <= MAX_NAME_CHARS);
        assert!(!cleaned.ends_with(' '));
    }
}

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

/// In dialtone-sync, whose tenant-name check (the admin API's and the
/// import's) needs it too.
pub use dialtone_sync::checks::is_format;

/// A displayable name, or `None` when nothing useful is left: control and
/// format characters and quotes removed, whitespace collapsed, at most
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
            // Bidi overrides, zero-width and other invisible characters
            // disguise a name.
            c if is_format(c) => continue,
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
        let cases: [(&str, Option<&str>); 15] = [
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
            // Format characters past the bidi and zero-width ones.
            (
                "\u{61c}Ali\u{ad}ce\u{2060} Ex\u{2064}ample",
                Some("Alice Example"),
            ),
            ("Bob\u{180e}\u{206a} Smith\u{fff9}", Some("Bob Smith")),
            ("\u{e0001}Acme\u{e0041}\u{e007f} Corp", Some("Acme Corp")),
            ("\u{600}\u{110bd}\u{1343f}\u{1d173}", None),
            ("\u{2060}UNKNOWN\u{feff}", None),
            ("", None),
        ];
        for (raw, want) in cases {
            assert_eq!(clean_name(raw).as_deref(), want, "{raw:?}");
        }
    }

    /// The ends of the Cf ranges are in; their neighbours, visible or
    /// unassigned, are not.
    #[test]
    fn format_characters_are_told_by_their_ranges() {
        for c in [
            '\u{ad}',
            '\u{605}',
            '\u{61c}',
            '\u{891}',
            '\u{180e}',
            '\u{200b}',
            '\u{202e}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{206f}',
            '\u{feff}',
            '\u{fffb}',
            '\u{13430}',
            '\u{1343f}',
            '\u{1bca3}',
            '\u{1d17a}',
            '\u{e0001}',
            '\u{e007f}',
        ] {
            assert!(is_format(c), "U+{:04X}", u32::from(c));
        }
        for c in [
            'a',
            ' ',
            '\u{0}',
            '\u{ac}',
            '\u{ae}',
            '\u{606}',
            '\u{200a}',
            '\u{2010}',
            '\u{2065}',
            '\u{2070}',
            '\u{fffc}',
            '\u{13440}',
            '\u{e0000}',
            '\u{e0080}',
        ] {
            assert!(!is_format(c), "U+{:04X}", u32::from(c));
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

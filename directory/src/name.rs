//! Names go into SIP headers (`From: "Name" <sip:…>`) and onto phone
//! screens, so what a directory returns is cleaned before it is cached.

use std::sync::LazyLock;

use regex_cache::Regex;

/// The longest name we hand out, in characters. Phone screens show fewer;
/// SIP display names should stay short.
pub const MAX_NAME_CHARS: usize = 64;

/// Placeholders some upstreams return instead of a miss. Passing them on
/// would overwrite the caller's own name with "UNKNOWN". US CNAM services
/// spell theirs many ways.
const PLACEHOLDERS: [&str; 14] = [
    "unknown",
    "unavailable",
    "anonymous",
    "private",
    "restricted",
    "wireless caller",
    "out of area",
    "toll free call",
    "unknown caller",
    "no caller id",
    "private caller",
    "unavailable caller",
    "private number",
    "blocked",
];

/// In dialtone-sync, whose tenant-name check (the admin API's and the
/// import's) needs it too.
pub use dialtone_sync::checks::is_format;

/// The zero-width non-joiner and joiner, format characters that are part of
/// how a name is spelled: Persian writes `می‌خواهم` with one, and emoji
/// sequences (👩‍💻) are held together by the other.
fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200c}' | '\u{200d}')
}

/// Combining marks (general category M) and emoji skin-tone modifiers:
/// characters drawn onto the one before them. The pattern comes from the
/// regex crate's Unicode tables, which phonenumber links in already; it is
/// only asked where a long name is cut.
fn extends_previous(c: char) -> bool {
    static EXTENDING: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[\p{M}\p{Emoji_Modifier}]$").expect("a constant pattern"));
    EXTENDING.is_match(c.encode_utf8(&mut [0; 4]))
}

/// Takes the last character off `out` with whatever is drawn onto it, and
/// the characters joined to it: a cut never leaves a base letter without
/// its accents or half of an emoji sequence.
fn drop_last_cluster(out: &mut String) {
    loop {
        while out.chars().next_back().is_some_and(extends_previous) {
            out.pop();
        }
        out.pop();
        if !out.ends_with(is_joiner) {
            break;
        }
        out.pop();
    }
    out.truncate(out.trim_end_matches(' ').len());
}

/// A displayable name, or `None` when nothing useful is left: control and
/// format characters (bar joiners between letters) removed, quotes and
/// angle brackets replaced, whitespace collapsed, at most
/// [`MAX_NAME_CHARS`] characters, cut between characters a screen shows
/// apart.
pub fn clean_name(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(MAX_NAME_CHARS * 2));
    let mut chars = 0;
    let mut pending_space = false;
    // Kept only between two characters it joins: alone, leading, trailing
    // or beside a space it joins nothing, shows nothing, and would hide a
    // placeholder.
    let mut pending_joiner = None;
    for c in raw.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            pending_joiner = None;
            continue;
        }
        let c = match c {
            // A quote or backslash would end or escape the SIP quoted string.
            '"' => '\'',
            '\\' => '/',
            // Names reach call logs and CDR pages in browsers, where a
            // caller ID has carried markup before.
            '<' => '(',
            '>' => ')',
            c if is_joiner(c) => {
                if !out.is_empty() && !pending_space {
                    pending_joiner.get_or_insert(c);
                }
                continue;
            }
            // Bidi overrides, zero-width and other invisible characters
            // disguise a name.
            c if is_format(c) => continue,
            c => c,
        };
        let needed = 1 + usize::from(pending_space) + usize::from(pending_joiner.is_some());
        if chars + needed > MAX_NAME_CHARS {
            let inside_cluster =
                !pending_space && (pending_joiner.is_some() || extends_previous(c));
            if inside_cluster {
                drop_last_cluster(&mut out);
            }
            break;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        if let Some(joiner) = pending_joiner.take() {
            out.push(joiner);
            chars += 1;
        }
        out.push(c);
        chars += 1;
    }
    let shown: std::borrow::Cow<str> = if out.contains(is_joiner) {
        out.replace(is_joiner, "").into()
    } else {
        out.as_str().into()
    };
    let is_placeholder = PLACEHOLDERS.iter().any(|p| shown.eq_ignore_ascii_case(p));
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

    /// Zero-width joiners spell Persian words and hold emoji sequences
    /// together; the other invisible characters still go.
    #[test]
    fn joiners_between_characters_are_kept() {
        let cases: [(&str, Option<&str>); 8] = [
            ("می\u{200c}خواهم", Some("می\u{200c}خواهم")),
            ("👩\u{200d}💻 Dev", Some("👩\u{200d}💻 Dev")),
            ("\u{202e}می\u{200c}\u{200b}خواهم", Some("می\u{200c}خواهم")),
            ("a\u{200d}\u{200d}\u{200c}b", Some("a\u{200d}b")),
            (
                "\u{200d}Alice \u{200c}Example\u{200d}",
                Some("Alice Example"),
            ),
            ("Alice\u{200d} Example", Some("Alice Example")),
            ("\u{200c}\u{200d}", None),
            ("UNK\u{200d}NOWN", None),
        ];
        for (raw, want) in cases {
            assert_eq!(clean_name(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn us_cnam_placeholders_are_no_name() {
        for raw in [
            "OUT OF AREA",
            "Out  of Area",
            "TOLL FREE CALL",
            "Unknown Caller",
            "NO CALLER ID",
            "private caller",
            "UNAVAILABLE CALLER",
            "PRIVATE NUMBER",
            "Blocked",
        ] {
            assert_eq!(clean_name(raw), None, "{raw:?}");
        }
        assert_eq!(clean_name("Blocked Inc").as_deref(), Some("Blocked Inc"));
    }

    /// Call logs and CDR pages show names in a browser.
    #[test]
    fn angle_brackets_become_parentheses() {
        assert_eq!(
            clean_name("<script>alert(1)</script>").as_deref(),
            Some("(script)alert(1)(/script)")
        );
        assert_eq!(
            clean_name("<img src=x onerror=alert(1)>").as_deref(),
            Some("(img src=x onerror=alert(1))")
        );
    }

    /// A cut inside a cluster goes back to before its base character.
    #[test]
    fn a_cut_keeps_marks_with_their_letter() {
        let accented = format!("X{}", "e\u{301}".repeat(40));
        let cleaned = clean_name(&accented).unwrap();
        assert!(cleaned.chars().count() <= MAX_NAME_CHARS);
        assert_eq!(cleaned, format!("X{}", "e\u{301}".repeat(31)));
        // Marks that fill the room after a space: the cluster goes, the
        // space with it.
        let spaced = format!("{} n\u{303}\u{301}\u{323}", "a".repeat(60));
        assert_eq!(clean_name(&spaced), Some("a".repeat(60)));
        // Devanagari (a spacing mark) and an enclosing mark.
        let hindi = format!("{}कि", "a".repeat(63));
        assert_eq!(clean_name(&hindi), Some("a".repeat(63)));
        let enclosed = format!("{}1\u{20e3}", "a".repeat(63));
        assert_eq!(clean_name(&enclosed), Some("a".repeat(63)));
        // Emoji: a skin tone, and a joined sequence cut in its middle.
        let thumbs = format!("{}👍\u{1f3fd}", "a".repeat(63));
        assert_eq!(clean_name(&thumbs), Some("a".repeat(63)));
        let coder = format!("{} x👩\u{200d}💻", "a".repeat(60));
        assert_eq!(clean_name(&coder), Some(format!("{} x", "a".repeat(60))));
        let family = format!("{}👨\u{200d}👩\u{200d}👧", "a".repeat(60));
        assert_eq!(clean_name(&family), Some("a".repeat(60)));
        // A cut between clusters keeps all it can.
        let exact = format!("{}e\u{301}", "a".repeat(62));
        assert_eq!(clean_name(&exact), Some(exact.clone()));
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

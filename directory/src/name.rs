//! Names go into SIP headers (`From: "Name" <sip:…>`) and onto phone
//! screens, so what a directory returns is cleaned before it is cached.

use std::sync::LazyLock;

use regex_cache::Regex;

/// The longest name we hand out, in characters. Phone screens show fewer;
/// SIP display names should stay short.
pub const MAX_NAME_CHARS: usize = 64;

/// A raw name of more characters is no name. A source the tenant runs (a
/// live LDAP search keeps names up to its reply's bytes, 256 KiB) could
/// hand in a name of hidden characters or presentation selectors that
/// show nothing and cost a look each; and a name cut short could end in
/// half a placeholder ("UNKNOW") or half a character cluster. The LDAP
/// mirror keeps no longer ones either.
pub const MAX_RAW_NAME_CHARS: usize = 256;

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
/// import's) needs them too.
pub use dialtone_sync::checks::{is_default_ignorable, is_format};

/// The zero-width non-joiner and joiner, format characters that are part of
/// how a name is spelled: Persian writes `می‌خواهم` with one, and emoji
/// sequences (👩‍💻) are held together by the other.
fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200c}' | '\u{200d}')
}

/// Noncharacters and private-use characters: whatever they show is up to
/// the font of each phone, a blank on most, never text of any script.
fn is_not_text(c: char) -> bool {
    let c = u32::from(c);
    (0xfdd0..=0xfdef).contains(&c)
        || c & 0xfffe == 0xfffe
        || (0xe000..=0xf8ff).contains(&c)
        // Planes 15 and 16 are private use throughout.
        || c >= 0xf_0000
}

/// Whether [`clean_name`] drops `c` wherever it stands: format characters,
/// the other default-ignorable ones, noncharacters and private use. The
/// joiners and the emoji presentation selectors among them are kept only
/// where they join or select something.
pub fn is_hidden(c: char) -> bool {
    is_format(c) || is_default_ignorable(c) || is_not_text(c)
}

/// The text and emoji presentation selectors (VS15, VS16): `❤️` is `❤`
/// drawn as an emoji. After anything but an emoji they select nothing.
fn is_presentation_selector(c: char) -> bool {
    matches!(c, '\u{fe0e}' | '\u{fe0f}')
}

/// Asked only for the character before a presentation selector.
fn is_emoji(c: char) -> bool {
    static EMOJI: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\p{Emoji}$").expect("a constant pattern"));
    EMOJI.is_match(c.encode_utf8(&mut [0; 4]))
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

/// A displayable name, or `None` when nothing useful is left (a
/// placeholder counts as nothing): control and [hidden](is_hidden)
/// characters removed, bar joiners between letters and presentation
/// selectors after an emoji, quotes and angle brackets replaced,
/// whitespace (the blank braille pattern too) collapsed, at most
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
    if raw.chars().nth(MAX_RAW_NAME_CHARS).is_some() {
        return None;
    }
    for c in raw.chars() {
        // U+2800, the empty braille pattern, is drawn as a space and is not
        // one to `is_whitespace`.
        if c.is_whitespace() || c.is_control() || c == '\u{2800}' {
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
            c if is_presentation_selector(c) => {
                let after_emoji = !pending_space
                    && pending_joiner.is_none()
                    && out.chars().next_back().is_some_and(is_emoji);
                if !after_emoji {
                    continue;
                }
                c
            }
            // Bidi overrides, fillers and other invisible characters blank
            // out or disguise a name.
            c if is_hidden(c) => continue,
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
#[path = "name_tests.rs"]
mod tests;

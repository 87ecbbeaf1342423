//! How a value is written into a rendered file so that it reads back as
//! itself and as nothing more: XML's character data, and the one-line
//! values of `key = value` formats.

/// Writes `input` as XML character data that reads back as `input`, in
/// element text and in an attribute alike: markup characters as entities;
/// tab, line feed and carriage return as character references, or a parser
/// reads each as a space in an attribute (`reg.1.auth.password="a\tb"` is
/// `a b` to a Poly phone); and the characters XML 1.0 forbids as U+FFFD, or
/// no parser reads the file at all.
pub(crate) fn write_xml(out: &mut impl std::fmt::Write, input: &str) -> std::fmt::Result {
    let mut last = 0;
    for (i, c) in input.char_indices() {
        let entity = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&apos;",
            '\t' => "&#9;",
            '\n' => "&#10;",
            '\r' => "&#13;",
            c if xml_forbidden(c) => "\u{fffd}",
            _ => continue,
        };
        out.write_str(&input[last..i])?;
        out.write_str(entity)?;
        last = i + c.len_utf8();
    }
    out.write_str(&input[last..])
}

/// Writes text the template made as it is, but for the characters XML 1.0
/// forbids, as U+FFFD.
pub(super) fn write_xml_chars(out: &mut impl std::fmt::Write, input: &str) -> std::fmt::Result {
    let mut parts = input.split(xml_forbidden);
    out.write_str(parts.next().unwrap_or_default())?;
    for part in parts {
        out.write_str("\u{fffd}")?;
        out.write_str(part)?;
    }
    Ok(())
}

/// Not a character of XML 1.0: C0 controls but tab, line feed and carriage
/// return, and U+FFFE and U+FFFF (surrogates are not `char`s).
fn xml_forbidden(c: char) -> bool {
    matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// What some reader of a `key = value` file takes for the end of a line:
/// CR and LF, and VT, FF, the information separators U+001C to U+001E,
/// NEL and the Unicode line and paragraph separators, which line splitters
/// such as Python's `splitlines` break on.
fn text_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\u{b}' | '\u{c}' | '\r' | '\u{1c}'..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Writes `input` with each line break, of any reader's kind, as a space:
/// a value can't start a line of its own and set a key.
pub(crate) fn write_text(out: &mut impl std::fmt::Write, input: &str) -> std::fmt::Result {
    for (i, part) in input.split(text_break).enumerate() {
        if i > 0 {
            out.write_str(" ")?;
        }
        out.write_str(part)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "escape_tests.rs"]
mod tests;

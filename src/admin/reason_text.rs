//! serde's and axum's refusal text, made fit for a client: it is written
//! for Rust programmers (`expected struct NewToken with 4 elements`,
//! `invalid digit found in string`) and echoes what it was given whole, so
//! a 60 KB string sent where a list belongs came back in the 422, and a
//! log line holding the reason grew with it.

/// axum's lead-ins, which say which extractor failed rather than why.
const LEAD_INS: &[&str] = &[
    "Failed to deserialize the JSON body into the target type: ",
    "Failed to parse the request body as JSON: ",
    "Failed to deserialize query string: ",
];

/// Longest echo of a client's value or field name kept in a reason.
const ECHO_MAX: usize = 40;

/// Longest reason, in characters. The echo limit holds only for runs it
/// can find, and a field name may hold spaces, which no run marks: the
/// path before the colon is the client's unquoted text.
const REASON_MAX: usize = 300;

/// serde's refusals that quote one name in backquotes. The name is the
/// client's and may hold a backquote itself; the text after it is serde's,
/// so the name runs to the last of these ends.
const NAMED: &[&str] = &["unknown field `", "unknown variant `"];
const NAME_ENDS: &[&str] = &["`, expected", "`, there are no"];

/// serde's words for a value's expected shape, in ours.
const REWORDS: &[(&str, &str)] = &[
    (
        // Said of signed fields too; a range check says what else is wanted.
        "invalid digit found in string",
        "expected a whole number",
    ),
    (
        "number too large to fit in target type",
        "the number is too large",
    ),
    ("expected a sequence", "expected a list"),
    ("expected a map", "expected an object"),
    ("expected u8", "expected a whole number"),
    ("expected u16", "expected a whole number"),
    ("expected u32", "expected a whole number"),
    ("expected u64", "expected a whole number"),
    ("expected usize", "expected a whole number"),
    ("expected i32", "expected a whole number"),
    ("expected i64", "expected a whole number"),
    ("expected f64", "expected a number"),
];

/// The reason a client is given for a body, query or path that did not
/// parse: the lead-in dropped, Rust's type names replaced, every echoed
/// value cut to a few dozen characters and the whole to a few hundred.
pub(crate) fn client_reason(text: &str) -> String {
    let mut text = text;
    for lead in LEAD_INS {
        if let Some(rest) = text.strip_prefix(lead) {
            text = rest;
        }
    }
    let mut reason = cut_named(text);
    reason = replace_type_names(&reason);
    for (from, to) in REWORDS {
        if reason.contains(from) {
            reason = reason.replace(from, to);
        }
    }
    cap(reason)
}

/// Cuts the echoes, taking a backquoted field or variant name whole even
/// when it holds a backquote, so serde's own words after it stay intact.
fn cut_named(text: &str) -> String {
    for mark in NAMED {
        let Some(at) = text.find(mark) else {
            continue;
        };
        let name_start = at + mark.len();
        let name_end = NAME_ENDS
            .iter()
            .filter_map(|end| text[name_start..].rfind(end))
            .max();
        if let Some(name_end) = name_end {
            let close = name_start + name_end;
            let mut out = cut_echoes(&text[..name_start - 1]);
            push_cut(&mut out, &text[name_start - 1..=close]);
            out.push_str(&cut_echoes(&text[close + 1..]));
            return out;
        }
    }
    cut_echoes(text)
}

fn cap(reason: String) -> String {
    let count = reason.chars().count();
    if count <= REASON_MAX {
        return reason;
    }
    let mut out: String = reason.chars().take(REASON_MAX).collect();
    out.push_str(&format!("… ({count} characters)"));
    out
}

/// `expected struct LineBody` and `expected struct NewToken with 4
/// elements` name a Rust type; the client sent something other than an
/// object.
fn replace_type_names(text: &str) -> String {
    const MARKS: &[&str] = &["expected struct ", "expected enum "];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: loop {
        for mark in MARKS {
            if let Some(at) = rest.find(mark) {
                let after = &rest[at + mark.len()..];
                let name_end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                let mut tail = &after[name_end..];
                if let Some(elements) = tail.strip_prefix(" with ") {
                    let count_end = elements
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(elements.len());
                    let words = &elements[count_end..];
                    if let Some(after_words) = words
                        .strip_prefix(" elements")
                        .or_else(|| words.strip_prefix(" element"))
                    {
                        tail = after_words;
                    }
                }
                out.push_str(&rest[..at]);
                out.push_str(if *mark == "expected enum " {
                    "expected one of the names this field takes"
                } else {
                    "expected an object"
                });
                rest = tail;
                continue 'scan;
            }
        }
        out.push_str(rest);
        return out;
    }
}

/// Cuts each run the client chose: a quoted string (`"…"`, with its
/// escapes), a backquoted name, and any other run without spaces (a path
/// of field names) longer than `ECHO_MAX` characters.
fn cut_echoes(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(512));
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let end = match c {
            '"' => {
                let mut escaped = false;
                let mut end = text.len();
                for (i, c) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        end = i + 1;
                        break;
                    }
                }
                end
            }
            '`' => match chars.by_ref().find(|&(_, c)| c == '`') {
                Some((i, _)) => i + 1,
                None => text.len(),
            },
            c if c.is_whitespace() => {
                out.push(c);
                continue;
            }
            _ => {
                let mut end = text.len();
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_whitespace() || c == '"' || c == '`' {
                        end = i;
                        break;
                    }
                    chars.next();
                }
                end
            }
        };
        push_cut(&mut out, &text[start..end]);
    }
    out
}

fn push_cut(out: &mut String, run: &str) {
    if run.chars().count() <= ECHO_MAX {
        out.push_str(run);
        return;
    }
    // A quoted value keeps its marks, so the reason still reads as one
    // value; a field's path keeps the colon that ends it. The count is of
    // the client's own text.
    let mut chars = run.chars();
    match (chars.next(), chars.next_back()) {
        (Some(quote @ ('"' | '`')), Some(last)) if last == quote => {
            let inner = &run[1..run.len() - 1];
            out.push(quote);
            push_head(out, inner);
            out.push(quote);
            out.push_str(&format!(" ({} characters)", inner.chars().count()));
        }
        (_, Some(end @ (':' | ','))) => {
            let inner = &run[..run.len() - 1];
            push_head(out, inner);
            out.push_str(&format!(" ({} characters){end}", inner.chars().count()));
        }
        _ => {
            push_head(out, run);
            out.push_str(&format!(" ({} characters)", run.chars().count()));
        }
    }
}

fn push_head(out: &mut String, text: &str) {
    out.extend(text.chars().take(ECHO_MAX - 4));
    out.push('…');
}

#[cfg(test)]
mod tests {
    use super::client_reason;

    #[test]
    fn rust_type_names_and_lead_ins_are_gone() {
        assert_eq!(
            client_reason("Failed to deserialize the JSON body into the target type: lines[0]: invalid type: integer `5`, expected struct LineBody at line 1 column 51"),
            "lines[0]: invalid type: integer `5`, expected an object at line 1 column 51"
        );
        assert_eq!(
            client_reason(
                "invalid length 0, expected struct NewToken with 4 elements at line 1 column 2"
            ),
            "invalid length 0, expected an object at line 1 column 2"
        );
        assert_eq!(
            client_reason(
                "Failed to deserialize query string: limit: invalid digit found in string"
            ),
            "limit: expected a whole number"
        );
        assert_eq!(
            client_reason("quotas.phones: invalid type: string \"x\", expected u32"),
            "quotas.phones: invalid type: string \"x\", expected a whole number"
        );
    }

    #[test]
    fn echoed_values_and_names_are_cut() {
        let long = "A".repeat(60_000);
        let reason = client_reason(&format!(
            "lines: invalid type: string \"{long}\", expected a sequence at line 1 column 60050"
        ));
        assert!(reason.len() < 200, "{reason}");
        assert!(
            reason.starts_with("lines: invalid type: string \"AAAA")
                && reason.contains("…\" (60000 characters), expected a list at line 1"),
            "{reason}"
        );
        let reason = client_reason(&format!(
            "{long}: unknown field `{long}`, expected one of `slug`, `name`"
        ));
        assert!(reason.len() < 250, "{reason}");
        assert!(
            reason.contains("… (60000 characters): unknown field `AAA")
                && reason.ends_with("expected one of `slug`, `name`"),
            "{reason}"
        );
        // An escaped quote does not end the echo early.
        let reason = client_reason(&format!("invalid type: string \"\\\"{long}\", expected x"));
        assert!(
            reason.len() < 200 && reason.ends_with(", expected x"),
            "{reason}"
        );
        // Multi-byte text is cut on a character.
        let wide = "é".repeat(500);
        assert!(client_reason(&format!("`{wide}`")).chars().count() < 80);
    }

    /// A name with spaces is no single run: its path echo was whole, so a
    /// 60 KB field name came back in a 60 KB reason; a backquote in it
    /// ended the name early and the rest read as serde's words.
    #[test]
    fn a_name_with_spaces_or_backquotes_is_cut_too() {
        let name = format!("{}`", "ab ".repeat(20_000));
        let reason = client_reason(&format!(
            "{name}: unknown field `{name}`, expected one of `slug`, `name` at line 1 column 60010"
        ));
        assert!(reason.len() < 400, "{} bytes: {reason}", reason.len());
        assert!(reason.starts_with("ab ab ab"), "{reason}");
        assert!(reason.ends_with(" characters)"), "{reason}");
        let reason =
            client_reason("unknown field `a`b`, expected one of `slug`, `name` at line 1 column 9");
        assert_eq!(
            reason,
            "unknown field `a`b`, expected one of `slug`, `name` at line 1 column 9"
        );
        let long = format!("{}`{}", "x".repeat(100), "y".repeat(100));
        let reason = client_reason(&format!(
            "unknown field `{long}`, expected one of `slug`, `name`"
        ));
        assert!(
            reason.starts_with("unknown field `xxx")
                && reason.contains("…` (201 characters), expected one of `slug`, `name`"),
            "{reason}"
        );
        // Multi-byte text is capped on a character.
        let wide = "é ".repeat(1_000);
        let reason = client_reason(&wide);
        assert!(reason.chars().count() < 330, "{reason}");
    }
}

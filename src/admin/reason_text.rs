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

/// serde's words for a value's expected shape, in ours.
const REWORDS: &[(&str, &str)] = &[
    (
        "invalid digit found in string",
        "expected a whole number, 0 or more",
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
/// parse: the lead-in dropped, Rust's type names replaced, and every
/// echoed value cut to a few dozen characters.
pub(crate) fn client_reason(text: &str) -> String {
    let mut text = text;
    for lead in LEAD_INS {
        if let Some(rest) = text.strip_prefix(lead) {
            text = rest;
        }
    }
    let mut reason = cut_echoes(text);
    reason = replace_type_names(&reason);
    for (from, to) in REWORDS {
        if reason.contains(from) {
            reason = reason.replace(from, to);
        }
    }
    reason
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
            "limit: expected a whole number, 0 or more"
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
}

//! What a template's tags may hold, read from its tokens before the
//! parser builds a tree: how long one tag is, and how deep blocks nest.
//! Both are what MiniJinja's parser and compiler, and our check, recurse
//! through; past them a worker thread's stack overflowed and the process
//! aborted.

use minijinja::machinery::{tokenize, Span, Token};
use minijinja::syntax::SyntaxConfig;

use super::{refuse, Refused};

/// Tokens one `{{ … }}` or `{% … %}` may hold. MiniJinja's parser guards
/// its recursion, but builds a chain of operators, filters, tests,
/// attributes or subscripts (`1+1+1…`, `x|lower|lower…`) in a loop, one
/// tree level per link, and its compiler (and this check) then walk that
/// tree by recursion: `{{ 1+1+… }}` with 1,000 links overflowed a 2 MiB
/// thread's stack in a debug build and aborted the process, every tenant
/// with it. The parser's own guard bounds the nesting of brackets to 150
/// levels, and [`MAX_NESTING`] that of statements; this bounds each one's
/// expression. The shipped templates stay under a quarter of it
/// (`budget_tests.rs`).
pub const MAX_TAG_TOKENS: usize = 200;

/// Levels of blocks (`for`, `if`, `filter` and the rest) one inside
/// another, each `elif` counting as one more level of its `if`. MiniJinja's
/// parser guards the nesting of statements, but parses each `elif` by
/// recursing outside that guard, and its compiler, this check and dropping
/// the tree recurse once per `elif` too: `{% if 0 %}` and 1,200 `{% elif 0
/// %}` (14 KB of a 256 KiB template) overflowed a 2 MiB thread's stack in a
/// debug build and aborted the process. At this depth, with the longest
/// expression a tag may hold at the bottom, a template compiles and renders
/// on such a thread (`nesting_tests.rs`); the shipped templates stay under
/// a quarter of it (`budget_tests.rs`).
pub const MAX_NESTING: usize = 100;

/// Refuses the first tag with more than [`MAX_TAG_TOKENS`] tokens, before
/// the parser builds its tree.
pub(super) fn tags_fit(body: &str) -> Result<(), Refused> {
    scan_tags(body, |start, count| {
        if count <= MAX_TAG_TOKENS {
            return Ok(());
        }
        Err(refuse(
            start,
            format!(
                "this tag is too long: one tag holds at most {MAX_TAG_TOKENS} names, values and \
                 operators (split it into several tags, or move the logic into data)"
            ),
        ))
    })
}

/// Calls `each` with a tag's start and how many tokens it has held so far,
/// at every token inside a tag, until `each` refuses. A lexing error ends
/// the scan: the parser stops at the same place, and reports it.
pub(crate) fn scan_tags(
    body: &str,
    mut each: impl FnMut(Span, usize) -> Result<(), Refused>,
) -> Result<(), Refused> {
    let mut in_tag: Option<(Span, usize)> = None;
    for token in tokenize(body, false, SyntaxConfig::default()) {
        let Ok((token, span)) = token else {
            return Ok(());
        };
        match (token, &mut in_tag) {
            (Token::VariableStart | Token::BlockStart, _) => in_tag = Some((span, 0)),
            (Token::VariableEnd | Token::BlockEnd, _) => in_tag = None,
            (_, Some((start, count))) => {
                *count += 1;
                each(*start, *count)?;
            }
            (_, None) => {}
        }
    }
    Ok(())
}

/// Refuses the first block that opens past [`MAX_NESTING`] levels, before
/// the parser recurses into it.
pub(super) fn nesting_fits(body: &str) -> Result<(), Refused> {
    scan_nesting(body, |start, depth| {
        if depth <= MAX_NESTING {
            return Ok(());
        }
        Err(refuse(
            start,
            format!(
                "blocks nest too deeply here: at most {MAX_NESTING} levels, each `elif` \
                 counting as one more (close blocks sooner, or use separate `if`s)"
            ),
        ))
    })
}

/// Block statements that hold a body up to their `end…` tag. `set` holds
/// one only without `=`; the rest are unknown to this engine, but nest all
/// the same until the parser refuses them.
const BLOCKS: [&str; 9] = [
    "for",
    "if",
    "filter",
    "with",
    "autoescape",
    "set",
    "macro",
    "call",
    "block",
];

/// Calls `each` with a block tag's start and the nesting it brings the
/// template to, at every tag that opens a level (a block or an `elif`),
/// until `each` refuses. Errs on the side of counting more: an `end…` tag
/// that matches no open block closes nothing (the parser refuses it).
pub(crate) fn scan_nesting(
    body: &str,
    mut each: impl FnMut(Span, usize) -> Result<(), Refused>,
) -> Result<(), Refused> {
    // Open blocks, innermost last, with the levels each holds: an `if`
    // holds one more for each of its `elif`s.
    let mut open: Vec<(&str, usize)> = Vec::new();
    let mut depth = 0;
    // The block tag being read: where it starts, its keyword, and whether
    // it assigns (`{% set x = … %}` holds no body).
    let mut tag: Option<(Span, Option<&str>, bool)> = None;
    for token in tokenize(body, false, SyntaxConfig::default()) {
        let Ok((token, span)) = token else {
            return Ok(());
        };
        match (token, &mut tag) {
            (Token::BlockStart, _) => tag = Some((span, None, false)),
            (Token::Ident(word), Some((_, keyword @ None, _))) => *keyword = Some(word),
            (Token::Assign, Some((_, _, assigns))) => *assigns = true,
            (Token::BlockEnd, Some((start, Some(keyword), assigns))) => {
                let (start, keyword, assigns) = (*start, *keyword, *assigns);
                tag = None;
                let opens = BLOCKS.contains(&keyword) && !(keyword == "set" && assigns);
                if opens {
                    open.push((keyword, 1));
                } else if keyword == "elif" {
                    match open.last_mut() {
                        Some(("if", levels)) => *levels += 1,
                        _ => continue,
                    }
                } else {
                    let closed = keyword.strip_prefix("end");
                    if let Some(&(_, levels)) = open.last().filter(|(k, _)| Some(*k) == closed) {
                        open.pop();
                        depth -= levels;
                    }
                    continue;
                }
                depth += 1;
                each(start, depth)?;
            }
            (Token::BlockEnd, _) => tag = None,
            _ => {}
        }
    }
    Ok(())
}

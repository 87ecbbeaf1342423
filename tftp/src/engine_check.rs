//! What fuel cannot count, refused before a template is compiled.
//!
//! MiniJinja's values share their parts, so a template that rebinds a name
//! to a bigger value on every step (`{% set x = [x, x] %}` thirty times, or
//! `{% set l = l + l %}`) builds in microseconds a value whose first full
//! walk (printing it, `| string`, materializing a long `+` chain) allocates
//! gigabytes before fuel is charged. Measured with MiniJinja 3.1: such a
//! template aborted the process on a 4 GiB allocation.
//!
//! So templates may not rebind names to computed values: no `set`, `with`,
//! or `do`; a loop walks data, a `range()` or a list of literals; `+` and
//! `*` take a number literal on one side. Every value a render holds is then
//! data or built by one expression from data, so no walk is bigger than the
//! template times the data. Fuel, the output cap and the deadline bound the
//! rest.
//!
//! One expression can still nest repetitions: MiniJinja repeats a list
//! lazily and charges nothing for it, so `[[[[1]*1000]*1000]*1000]*1000`
//! passed as 4,000 slots of fuel and held 10^12 items, and printing it
//! aborted the process on a 2 GiB allocation (printing now stops at the
//! file's size, `engine.rs`). So a `*` that may repeat a list (its other
//! side is not surely a number) repeats at most 1000 times and never sits
//! inside a list, map, argument or another `*`, where walks of it would go
//! uncharged. Users' templates never needed these forms: TEMPLATES.md never
//! allowed `set`, and the shipped ones use variables, loops and conditions.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt};
use minijinja::machinery::{parse, Span};
use minijinja::syntax::SyntaxConfig;

pub(crate) mod tags;

use tags::{nesting_fits, tags_fit};

/// Longest text literal inside a tag. A test, subscript, `in` or filter
/// reads its whole operand for one step of fuel; a loop doing so on a
/// literal as long as the template allows (256 KiB) read gigabytes a
/// render. Text outside tags is written, and so charged.
const MAX_TEXT_LITERAL: usize = 4096;

/// A template construct that is refused, and where it is.
#[derive(Debug)]
pub struct Refused {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Checks `body`. Syntax errors are left to the compiler, which reports
/// them with their position.
pub fn check(name: &str, body: &str) -> Result<(), Refused> {
    tags_fit(body)?;
    nesting_fits(body)?;
    match parse(body, name, SyntaxConfig::default()) {
        Ok(stmt) => statement(&stmt),
        Err(_) => Ok(()),
    }
}

pub(super) fn refuse(span: Span, message: impl Into<String>) -> Refused {
    Refused {
        line: usize::from(span.start_line),
        column: usize::from(span.start_col) + 1,
        message: message.into(),
    }
}

const NO_REBINDING: &str = "is not supported: a template may not give names to computed values \
     (it would let a render build unbounded data); use the value where it is needed";

fn statements(stmts: &[Stmt<'_>]) -> Result<(), Refused> {
    stmts.iter().try_for_each(statement)
}

fn statement(stmt: &Stmt<'_>) -> Result<(), Refused> {
    match stmt {
        Stmt::Template(t) => statements(&t.children),
        Stmt::EmitExpr(e) => expr(&e.expr),
        Stmt::EmitRaw(_) => Ok(()),
        Stmt::IfCond(c) => {
            expr(&c.expr)?;
            statements(&c.true_body)?;
            statements(&c.false_body)
        }
        Stmt::ForLoop(f) => {
            if f.recursive {
                return Err(refuse(f.span(), "recursive loops are not supported"));
            }
            if !iterable(&f.iter) {
                return Err(refuse(
                    f.span(),
                    "a loop may walk data (`lines`, `settings.line_keys`, optionally \
                     through filters), a `range(…)` or a list of literals, nothing computed",
                ));
            }
            expr(&f.iter)?;
            if let Some(filter) = &f.filter_expr {
                expr(filter)?;
            }
            statements(&f.body)?;
            statements(&f.else_body)
        }
        Stmt::FilterBlock(b) => {
            expr(&b.filter)?;
            statements(&b.body)
        }
        Stmt::Set(s) => Err(refuse(s.span(), format!("`{{% set %}}` {NO_REBINDING}"))),
        Stmt::SetBlock(s) => Err(refuse(s.span(), format!("`{{% set %}}` {NO_REBINDING}"))),
        Stmt::WithBlock(s) => Err(refuse(s.span(), format!("`{{% with %}}` {NO_REBINDING}"))),
        Stmt::Do(s) => Err(refuse(s.span(), "`{% do %}` is not supported")),
        Stmt::AutoEscape(s) => Err(refuse(
            s.span(),
            "`{% autoescape %}` is not supported: escaping follows the file format",
        )),
    }
}

/// Data, possibly through filters that rearrange it; `range(…)`; literals.
fn iterable(e: &Expr<'_>) -> bool {
    match e {
        Expr::Var(_) | Expr::Const(_) => true,
        Expr::GetAttr(g) => iterable(&g.expr),
        Expr::GetItem(g) => iterable(&g.expr) && matches!(g.subscript_expr, Expr::Const(_)),
        Expr::List(l) => l.items.iter().all(|i| matches!(i, Expr::Const(_))),
        Expr::Call(c) => matches!(&c.expr, Expr::Var(v) if v.id == "range"),
        Expr::Filter(f) => {
            matches!(
                f.name,
                "reverse"
                    | "sort"
                    | "unique"
                    | "list"
                    | "select"
                    | "reject"
                    | "selectattr"
                    | "rejectattr"
                    | "map"
                    | "batch"
                    | "slice"
                    | "items"
                    | "dictsort"
            ) && f.expr.as_ref().is_some_and(iterable)
        }
        _ => false,
    }
}

/// A number literal small enough for `number * n`.
fn number_literal(e: &Expr<'_>) -> bool {
    literal_at_most(e, MAX_FACTOR)
}

fn literal_at_most(e: &Expr<'_>, most: f64) -> bool {
    matches!(e, Expr::Const(c) if c.value.is_number()
        && f64::try_from(c.value.clone()).is_ok_and(|n| n.abs() <= most))
}

const MAX_FACTOR: f64 = 100_000.0;

/// The most a `*` may repeat a value that is not surely a number. MiniJinja
/// repeats a list lazily, charging no fuel for it, and a walk of the
/// result (a comparison, `| string`) is charged only at its top level.
const MAX_REPEAT: f64 = 1_000.0;

/// Surely a number: `*` on it multiplies rather than repeats.
fn numeric(e: &Expr<'_>) -> bool {
    match e {
        Expr::Const(c) => c.value.is_number(),
        Expr::UnaryOp(u) => numeric(&u.expr),
        Expr::BinOp(b) => {
            matches!(
                b.op,
                BinOpKind::Sub
                    | BinOpKind::Div
                    | BinOpKind::FloorDiv
                    | BinOpKind::Rem
                    | BinOpKind::Pow
                    | BinOpKind::Add
                    | BinOpKind::Mul
            ) && numeric(&b.left)
                && numeric(&b.right)
        }
        Expr::GetAttr(g) => {
            matches!(&g.expr, Expr::Var(v) if v.id == "loop")
                && matches!(
                    g.name,
                    "index" | "index0" | "revindex" | "revindex0" | "length" | "depth" | "depth0"
                )
        }
        Expr::Filter(f) => matches!(
            f.name,
            "int" | "float" | "length" | "count" | "abs" | "round"
        ),
        _ => false,
    }
}

fn args(args: &[CallArg<'_>]) -> Result<(), Refused> {
    args.iter().try_for_each(|arg| match arg {
        CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => {
            inside(e)
        }
    })
}

fn expr(e: &Expr<'_>) -> Result<(), Refused> {
    checked(e, false)
}

/// An expression whose value goes into another: a list, map or tuple
/// item, an argument, or the value a `*` repeats.
fn inside(e: &Expr<'_>) -> Result<(), Refused> {
    checked(e, true)
}

/// Checks `e`; `nested` when its value ends up inside another value, where
/// a repeated value would be walked uncharged (`[[1] * 1000] * 1000` is
/// 10^6 items for 2,000 slots of fuel, and one more level is 10^9).
///
/// Only a whole expression's value may be a repetition: printed, its walk
/// is capped at the file's size and sees the deadline; as a condition, its
/// truth is its length. Anything that takes it as an operand walks it
/// without fuel and writes nothing, so the deadline is never seen: a test
/// (`is startingwith` makes its text), `in`, a filter, a comparison, `~`,
/// a subscript or a slice. `(data * 1000) is startingwith "x"` in a loop
/// of 40,000 built ~100 MB of text a step against a 250 ms budget, and
/// held a render thread for hours. Only the branches of `a if c else b`
/// pass on where their value goes.
fn checked(e: &Expr<'_>, nested: bool) -> Result<(), Refused> {
    let same = |e| checked(e, nested);
    match e {
        Expr::Const(c) if c.value.as_str().is_some_and(|t| t.len() > MAX_TEXT_LITERAL) => {
            Err(refuse(
                c.span(),
                format!(
                    "a text literal inside a tag is at most {MAX_TEXT_LITERAL} bytes; \
                     write long text outside the tags"
                ),
            ))
        }
        Expr::Var(_) | Expr::Const(_) => Ok(()),
        Expr::BinOp(b) => {
            let mul_or_add = matches!(b.op, BinOpKind::Add | BinOpKind::Mul);
            if mul_or_add && !number_literal(&b.left) && !number_literal(&b.right) {
                return Err(refuse(
                    b.span(),
                    "`+` and `*` need a number literal (at most 100000) on one side \
                     (`loop.index + 1`); join text with `~`",
                ));
            }
            if matches!(b.op, BinOpKind::Mul) {
                let (factor, repeated) = if number_literal(&b.left) {
                    (&b.left, &b.right)
                } else {
                    (&b.right, &b.left)
                };
                if !numeric(repeated) {
                    if nested {
                        return Err(refuse(
                            b.span(),
                            "`*` on a value that is not surely a number (it may repeat a \
                             list) may only be a whole expression's value (`{{ x * 3 }}`), \
                             not inside a list, argument, filter, test, comparison or other \
                             operator; for arithmetic on data, convert it first (`x | int * 3600`)",
                        ));
                    }
                    // Text is repeated at once, and charged for.
                    let text = matches!(repeated, Expr::Const(c) if c.value.as_str().is_some());
                    if !text && !literal_at_most(factor, MAX_REPEAT) {
                        return Err(refuse(
                            b.span(),
                            "`*` on a value that is not surely a number (it may repeat a \
                             list) takes a number literal of at most 1000; for arithmetic \
                             on data, convert it first (`x | int * 3600`)",
                        ));
                    }
                    return inside(repeated);
                }
            }
            inside(&b.left)?;
            inside(&b.right)
        }
        Expr::UnaryOp(u) => inside(&u.expr),
        Expr::Compare(c) => {
            inside(&c.expr)?;
            c.ops.iter().try_for_each(|op| inside(&op.expr))
        }
        Expr::IfExpr(i) => {
            inside(&i.test_expr)?;
            same(&i.true_expr)?;
            i.false_expr.as_ref().map_or(Ok(()), same)
        }
        Expr::Filter(f) => {
            if let Some(input) = &f.expr {
                inside(input)?;
            }
            args(&f.args)
        }
        Expr::Test(t) => {
            inside(&t.expr)?;
            args(&t.args)
        }
        Expr::GetAttr(g) => inside(&g.expr),
        Expr::GetItem(g) => {
            inside(&g.expr)?;
            inside(&g.subscript_expr)
        }
        Expr::Slice(s) => {
            inside(&s.expr)?;
            [&s.start, &s.stop, &s.step]
                .into_iter()
                .flatten()
                .try_for_each(inside)
        }
        Expr::Call(c) => {
            inside(&c.expr)?;
            args(&c.args)
        }
        Expr::List(l) => l.items.iter().try_for_each(inside),
        Expr::Tuple(t) => t.items.iter().try_for_each(inside),
        Expr::Map(m) => m.keys.iter().chain(&m.values).try_for_each(inside),
    }
}

#[cfg(test)]
#[path = "nesting_tests.rs"]
mod nesting_tests;

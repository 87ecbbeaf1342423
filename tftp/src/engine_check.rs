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
//! rest. Users' templates never needed these forms: TEMPLATES.md never
//! allowed `set`, and the shipped ones use variables, loops and conditions.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt};
use minijinja::machinery::{parse, Span};
use minijinja::syntax::SyntaxConfig;

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
    match parse(body, name, SyntaxConfig::default()) {
        Ok(stmt) => statement(&stmt),
        Err(_) => Ok(()),
    }
}

fn refuse(span: Span, message: impl Into<String>) -> Refused {
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

/// A number literal small enough that `list * n` stays a small multiple of
/// the data (walking a repeated list is charged late).
fn number_literal(e: &Expr<'_>) -> bool {
    matches!(e, Expr::Const(c) if c.value.is_number()
        && f64::try_from(c.value.clone()).is_ok_and(|n| n.abs() <= MAX_FACTOR))
}

const MAX_FACTOR: f64 = 100_000.0;

fn args(args: &[CallArg<'_>]) -> Result<(), Refused> {
    args.iter().try_for_each(|arg| match arg {
        CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => {
            expr(e)
        }
    })
}

fn expr(e: &Expr<'_>) -> Result<(), Refused> {
    match e {
        Expr::Var(_) | Expr::Const(_) => Ok(()),
        Expr::BinOp(b) => {
            if matches!(b.op, BinOpKind::Add | BinOpKind::Mul)
                && !number_literal(&b.left)
                && !number_literal(&b.right)
            {
                return Err(refuse(
                    b.span(),
                    "`+` and `*` need a number literal (at most 100000) on one side \
                     (`loop.index + 1`); join text with `~`",
                ));
            }
            expr(&b.left)?;
            expr(&b.right)
        }
        Expr::UnaryOp(u) => expr(&u.expr),
        Expr::Compare(c) => {
            expr(&c.expr)?;
            c.ops.iter().try_for_each(|op| expr(&op.expr))
        }
        Expr::IfExpr(i) => {
            expr(&i.test_expr)?;
            expr(&i.true_expr)?;
            i.false_expr.as_ref().map_or(Ok(()), expr)
        }
        Expr::Filter(f) => {
            if let Some(inner) = &f.expr {
                expr(inner)?;
            }
            args(&f.args)
        }
        Expr::Test(t) => {
            expr(&t.expr)?;
            args(&t.args)
        }
        Expr::GetAttr(g) => expr(&g.expr),
        Expr::GetItem(g) => {
            expr(&g.expr)?;
            expr(&g.subscript_expr)
        }
        Expr::Slice(s) => {
            expr(&s.expr)?;
            [&s.start, &s.stop, &s.step]
                .into_iter()
                .flatten()
                .try_for_each(expr)
        }
        Expr::Call(c) => {
            expr(&c.expr)?;
            args(&c.args)
        }
        Expr::List(l) => l.items.iter().try_for_each(expr),
        Expr::Tuple(t) => t.items.iter().try_for_each(expr),
        Expr::Map(m) => m.keys.iter().chain(&m.values).try_for_each(expr),
    }
}

//! The functions, filters and tests of ours a template calls: Tera's
//! keyword forms (`range(end=…)`, `default(value=…)`, `throw(message=…)`),
//! MiniJinja's `round` and `format` bounded in what one call may cost, and
//! its `lower` and `upper` tests charged for the text they read. Each looks
//! at the render's deadline (`engine.rs`): a loop that writes nothing
//! still calls them.

use minijinja::value::{Kwargs, Rest, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, State, Value};

use super::in_time;

pub(super) fn register(env: &mut Environment<'static>) {
    // MiniJinja's `debug()` prints the whole render context and the
    // engine's own tables in its internal Debug format, which changes with
    // MiniJinja's versions: a stored template using it would change its
    // file, and reboot its phones, on a dependency upgrade. Removed, it is
    // an unknown function, refused when the template is checked.
    env.remove_global("debug");
    env.add_function("range", range);
    env.add_function("throw", throw);
    env.add_filter("default", default);
    env.add_filter("d", default);
    env.add_filter("round", round);
    env.add_filter("format", format);
    env.add_test("lower", is_lower);
    env.add_test("upper", is_upper);
}

/// Longest list `range()` builds; both Tera and Jinja stop there.
const MAX_RANGE: i64 = 100_000;

/// `range(5)`, `range(1, 5)`, `range(1, 10, 2)` and Tera's
/// `range(end=5)`, `range(start=1, end=5, step_by=2)`. Each number built
/// costs a unit of fuel: the engine charges nothing for a function's
/// result, so `range(100000)` inside a loop built 100,000 numbers a step
/// for free (3 s of a 250 ms budget).
fn range(state: &State, args: Rest<i64>, kwargs: Kwargs) -> Result<Value, Error> {
    let keyword = |name: &str| kwargs.get::<Option<i64>>(name);
    let (start, end, step) = match args.as_slice() {
        [] => (
            keyword("start")?.unwrap_or(0),
            keyword("end")?
                .ok_or_else(|| Error::new(ErrorKind::MissingArgument, "range needs an end"))?,
            keyword("step_by")?.unwrap_or(1),
        ),
        [end] => (0, *end, 1),
        [start, end] => (*start, *end, 1),
        [start, end, step] => (*start, *end, *step),
        _ => {
            return Err(Error::new(
                ErrorKind::TooManyArguments,
                "range takes at most three numbers",
            ))
        }
    };
    kwargs.assert_all_used()?;
    in_time(state)?;
    if step == 0 {
        return Err(Error::new(ErrorKind::InvalidOperation, "range step is 0"));
    }
    let count = if (step > 0 && end > start) || (step < 0 && end < start) {
        (end.abs_diff(start) - 1) / step.unsigned_abs() + 1
    } else {
        0
    };
    if count > MAX_RANGE as u64 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("range of {count} numbers; at most {MAX_RANGE}"),
        ));
    }
    state.consume_fuel(count)?;
    // In i128: a count within bounds can still take a step past i64 (from
    // -9e18 to 9e18 by 5e18), and only the numbers themselves are i64.
    let numbers = (0..i128::from(count as i64))
        .map(|i| Value::from((i128::from(start) + i * i128::from(step)) as i64))
        .collect();
    // A walk of it is charged and looks at the clock, as one of data does:
    // a loop over a plain list of numbers saw the deadline only at a write
    // or a call of ours, and one instruction of its body (a test of a long
    // string) can take milliseconds that fuel, one unit a step, never saw.
    Ok(crate::data::list(numbers))
}

/// `is lower` and `is upper` as MiniJinja answers them, charged for the
/// text they read: a character's case costs some nanoseconds, and the
/// engine charges a test one step whatever its argument's length, so a
/// loop testing a 90 KB text took 43 s of a 250 ms budget.
fn is_lower(state: &State, value: &Value) -> Result<bool, Error> {
    charge_text(state, value)?;
    Ok(minijinja::tests::is_lower(value))
}

fn is_upper(state: &State, value: &Value) -> Result<bool, Error> {
    charge_text(state, value)?;
    Ok(minijinja::tests::is_upper(value))
}

/// A unit of fuel for every 64 bytes of text a call of ours reads, and a
/// look at the deadline.
fn charge_text(state: &State, value: &Value) -> Result<(), Error> {
    in_time(state)?;
    if let Some(text) = value.as_str() {
        state.consume_fuel(text.len() as u64 / 64)?;
    }
    Ok(())
}

/// Tera's `throw(message=…)`: fail the render with a message of the
/// template's own.
fn throw(args: Rest<String>, kwargs: Kwargs) -> Result<Value, Error> {
    let message = match args.first() {
        Some(m) => m.clone(),
        None => kwargs.get::<String>("message")?,
    };
    kwargs.assert_all_used()?;
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Jinja's `default(x)` and Tera's `default(value=x)`: `x` when the value
/// is undefined or none.
fn default(
    state: &State,
    value: Value,
    fallback: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    in_time(state)?;
    let fallback = match fallback {
        Some(v) => v,
        None => kwargs.get::<Option<Value>>("value")?.unwrap_or_default(),
    };
    kwargs.assert_all_used()?;
    Ok(if value.is_undefined() || value.is_none() {
        fallback
    } else {
        value
    })
}

/// Most decimal places `round` keeps. MiniJinja rounds a float by printing
/// it to that many digits and parsing them back, up to 1,074 of them: ~60
/// µs for one unit of fuel, so a loop that rounded and wrote nothing ran
/// for seconds past its deadline. A double holds 15 significant digits
/// for sure; more places change nothing a phone reads.
const MAX_ROUND_PLACES: i32 = 15;

/// MiniJinja's `round`, up to [`MAX_ROUND_PLACES`] places.
fn round(
    state: &State,
    value: Value,
    precision: Option<i32>,
    method: Option<&str>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    in_time(state)?;
    let places = match precision {
        Some(places) => places,
        None => kwargs.peek::<Option<i32>>("precision")?.unwrap_or(0),
    };
    if places > MAX_ROUND_PLACES {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("round keeps at most {MAX_ROUND_PLACES} decimal places"),
        ));
    }
    minijinja::filters::round(value, precision, method, kwargs)
}

/// Widest field, and most digits or characters of a value, a `format`
/// field may ask for. Rust's number formatting takes ~60 µs for a thousand
/// digits (MiniJinja charges four units of fuel for a field) and panics
/// past 65,535 (`"%.100000e"`): the panic was caught, but printed to the
/// log every time.
const MAX_FORMAT_FIELD: usize = 100;

/// MiniJinja's printf-style `format`, its fields up to [`MAX_FORMAT_FIELD`]
/// wide and precise.
fn format(state: &mut State, text: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    in_time(state)?;
    let fields = text.as_str().map(format_fields);
    if fields.is_some_and(|mut sizes| sizes.any(|size| size > MAX_FORMAT_FIELD)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "a format field is at most {MAX_FORMAT_FIELD} wide and {MAX_FORMAT_FIELD} precise"
            ),
        ));
    }
    minijinja::filters::format(state, text, args)
}

/// The larger of the width and the precision of each field of a
/// printf-style format (`%(key)-08.3f`: 8), read as MiniJinja reads them;
/// a number too large for `usize` is `usize::MAX`.
fn format_fields(spec: &str) -> impl Iterator<Item = usize> + '_ {
    let number = |text: &str| -> (usize, usize) {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let value = match digits {
            0 => 0,
            _ => text[..digits].parse().unwrap_or(usize::MAX),
        };
        (value, digits)
    };
    let mut rest = spec;
    std::iter::from_fn(move || loop {
        let at = rest.find('%')?;
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            rest = after;
            continue;
        }
        if rest.starts_with('(') {
            rest = rest.find(')').map_or("", |end| &rest[end + 1..]);
        }
        rest = rest.trim_start_matches(['#', '0', '-', ' ', '+']);
        let (width, digits) = number(rest);
        rest = &rest[digits..];
        let mut precision = 0;
        if let Some(after) = rest.strip_prefix('.') {
            let (value, digits) = number(after);
            precision = value;
            rest = &after[digits..];
        }
        return Some(width.max(precision));
    })
}

#[cfg(test)]
mod tests {
    use crate::engine::{Budget, Engine, Escape};
    use crate::error::ProvisionError;

    fn render(body: &str) -> Result<String, ProvisionError> {
        let budget = Budget::default();
        let engine = Engine::compile("test/t", "t", body, Escape::Text, &budget)?;
        let context =
            minijinja::context! { phone => minijinja::context! { mac => "001565000001" } };
        let bytes = engine.render("test/t", body, context, &budget)?;
        Ok(String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn debug_is_an_unknown_function() {
        match render("a\n{{ debug() }}\n") {
            Err(ProvisionError::Render { line, message, .. }) => {
                assert_eq!(line, Some(2));
                assert!(message.contains("unknown function"), "{message}");
            }
            other => panic!("expected a template error, got {other:?}"),
        }
    }

    #[test]
    fn the_other_builtin_globals_remain() {
        let body = "{{ namespace(a=1).a }} {{ dict(b=2).b }} {{ range(3) | join(',') }}";
        assert_eq!(render(body).unwrap(), "1 2 0,1,2");
    }
}

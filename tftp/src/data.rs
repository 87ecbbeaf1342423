//! Tenant JSON (settings, phone variables, line settings) as engine values
//! whose comparisons are charged to the render.
//!
//! MiniJinja charges a comparison of two lists or maps for the items of
//! the outer pair only. Items that are themselves lists are compared
//! uncharged, so `{% if a == b %}` on two copies of `[[1, 1, …30,000]]`
//! costs one step of fuel and 30,000 comparisons; in a loop that was 8 s
//! of CPU against a 250 ms deadline (the deadline is only seen at a write).
//! Variables are tenant data (up to 64 KiB), so every list and map built
//! from them here compares itself, counting each pair of items it visits
//! against the render's allowance. Once that runs out every comparison
//! answers at once and the render fails with "used up its budget of steps".
//!
//! They behave as the engine's own lists and maps otherwise: same
//! indexing, iteration, length, printing and order (maps by key).

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::value::{DynObject, Enumerator, Object, ObjectExt, ObjectRepr};
use minijinja::Value;

thread_local! {
    /// Items this thread's render may still visit comparing data; `None`
    /// outside a render (nothing is counted).
    static ALLOWANCE: Cell<Option<u64>> = const { Cell::new(None) };
    static EXHAUSTED: Cell<bool> = const { Cell::new(false) };
}

/// Starts counting for a render on this thread.
pub(crate) fn start(allowance: u64) {
    ALLOWANCE.set(Some(allowance));
    EXHAUSTED.set(false);
}

/// Whether this thread's render ran out of its allowance.
pub(crate) fn exhausted() -> bool {
    EXHAUSTED.get()
}

/// Ends counting; answers whether the render ran out.
pub(crate) fn finish() -> bool {
    ALLOWANCE.set(None);
    EXHAUSTED.replace(false)
}

/// Items visited between two looks at the render's deadline: a walk or a
/// comparison writes nothing, so the output never sees the time pass.
const CLOCK_EVERY: u64 = 64;

/// Charges one pair of items; false once the allowance is gone, or the
/// render's time (the render then fails on its time budget).
fn charge() -> bool {
    match ALLOWANCE.get() {
        None => true,
        Some(left) if left == 0 || (left % CLOCK_EVERY == 0 && crate::engine::out_of_time()) => {
            ALLOWANCE.set(Some(0));
            EXHAUSTED.set(true);
            false
        }
        Some(left) => {
            ALLOWANCE.set(Some(left - 1));
            true
        }
    }
}

/// Converts JSON to engine values.
pub(crate) fn value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (None, Some(u), _) => Value::from(u),
            (None, None, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from_object(DataSeq(items.iter().map(value).collect()))
        }
        serde_json::Value::Object(map) => Value::from_object(map_of(map)),
    }
}

/// A list of the engine's values whose walks are charged as data's are,
/// so that a loop over it sees the render's deadline every so many items.
pub(crate) fn list(items: Vec<Value>) -> Value {
    Value::from_object(DataSeq(items))
}

/// A JSON object as a map value (keys sorted, as the engine's own).
pub(crate) fn map(map: &serde_json::Map<String, serde_json::Value>) -> Value {
    Value::from_object(map_of(map))
}

fn map_of(map: &serde_json::Map<String, serde_json::Value>) -> DataMap {
    DataMap(
        map.iter()
            .map(|(k, v)| (Value::from(k.as_str()), value(v)))
            .collect(),
    )
}

/// Compares item by item, charging each pair visited.
fn compare<'a>(
    mut a: impl Iterator<Item = (&'a Value, &'a Value)>,
    mut b: impl Iterator<Item = (&'a Value, &'a Value)>,
) -> Ordering {
    loop {
        if EXHAUSTED.get() {
            return Ordering::Equal;
        }
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ak, av)), Some((bk, bv))) => {
                if !charge() {
                    return Ordering::Equal;
                }
                let ordering = ak.cmp(bk).then_with(|| av.cmp(bv));
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
        }
    }
}

/// A walk charged an item at a time, from either end, that ends once the
/// allowance is gone (or the render's time: `charge`). It tells its exact
/// length while it lasts: MiniJinja takes `loop.length`, `loop.last` and
/// `loop.revindex` from an exact size hint only, and a filtered walk's
/// left them undefined (a template's `{% if not loop.last %}` separator
/// then followed every item). Ended, it yields nothing more, at once: a
/// walk that only skipped the rest still visited every item, unseen by
/// the clock.
struct Charged<I>(I);

impl<I: Iterator> Iterator for Charged<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        if EXHAUSTED.get() || !charge() {
            return None;
        }
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if EXHAUSTED.get() {
            (0, Some(0))
        } else {
            self.0.size_hint()
        }
    }
}

impl<I: DoubleEndedIterator> DoubleEndedIterator for Charged<I> {
    fn next_back(&mut self) -> Option<I::Item> {
        if EXHAUSTED.get() || !charge() {
            return None;
        }
        self.0.next_back()
    }
}

#[derive(Debug)]
struct DataSeq(Vec<Value>);

impl Object for DataSeq {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.get(key.as_usize()?).cloned()
    }

    /// Every item a walk visits is charged: making a list's text (a test
    /// such as `is startingwith`, `in`, `join`) costs the engine no fuel,
    /// so `{% if settings.k is startingwith "x" %}` on 32,000 numbers, in
    /// a loop that prints nothing, made 55,000 texts of them unseen by
    /// the deadline. Past the allowance a walk yields nothing more.
    /// A walk in reverse (`| reverse`) is charged alike: both ends, so the
    /// engine reverses it lazily instead of copying it into a plain list
    /// whose walk nothing charges.
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_rev_enumerator(|this| Box::new(Charged(this.0.iter().cloned())))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }

    fn custom_cmp(self: &Arc<Self>, other: &DynObject) -> Option<Ordering> {
        let other = other.downcast_ref::<Self>()?;
        // Positions stand in for keys: equal on both sides by construction.
        let unit = Value::from(());
        Some(compare(
            self.0.iter().map(|v| (&unit, v)),
            other.0.iter().map(|v| (&unit, v)),
        ))
    }
}

#[derive(Debug)]
struct DataMap(BTreeMap<Value, Value>);

impl Object for DataMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.get(key).cloned()
    }

    /// Charged per item, as a list's walk is.
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_rev_key_value_enumerator(|this| {
            Box::new(Charged(
                (this.0.iter()).map(|(k, v)| (k.clone(), v.clone())),
            ))
        })
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }

    fn custom_cmp(self: &Arc<Self>, other: &DynObject) -> Option<Ordering> {
        let other = other.downcast_ref::<Self>()?;
        Some(compare(self.0.iter(), other.0.iter()))
    }
}

#[cfg(test)]
mod tests {
    use minijinja::value::Serde;

    use crate::engine::{Budget, Engine, Escape};

    fn render(body: &str, context: minijinja::Value, fuel: u64) -> Result<String, String> {
        // Steps are what these tests count. The time budget (250 ms) is
        // another test's: five debug renders at once on a busy two-core CI
        // machine passed it before their steps ran out.
        let budget = Budget {
            fuel,
            time: std::time::Duration::from_secs(60),
            ..Budget::default()
        };
        let engine = Engine::compile("t", "t", body, Escape::Text, &budget).unwrap();
        engine
            .render("t", body, context, &budget)
            .map(|bytes| String::from_utf8(bytes).unwrap())
            .map_err(|e| e.to_string())
    }

    /// The same template over the same JSON, as the engine's own values and
    /// as ours: every use a template makes of data answers alike.
    #[test]
    fn data_behaves_as_the_engines_own_values() {
        let json = serde_json::json!({
            "v": [[1, 2], [3]], "w": [[1, 2], [3]], "u": [[1, 2], [4]],
            "m": {"b": 2, "a": [1, {"x": "y"}]},
            "keys": [{"label": "B", "n": 2}, {"label": "A", "n": 1}, {"label": "A", "n": 1}],
            "s": "text", "f": 1.5, "big": 18446744073709551615u64, "z": null, "t": true,
        });
        let body = "{{ v }}|{{ m }}|{{ v == w }}|{{ v == u }}|{{ v < u }}|{{ u > w }}|\
            {{ v[0][1] }}|{{ v[-1] }}|{{ v|length }}|{{ m|length }}|{{ keys[0] }}|\
            {% for k in m %}{{ k }},{% endfor %}|{% for k, x in m|items %}{{ k }}={{ x }};{% endfor %}|\
            {{ keys|sort(attribute=\"label\")|map(attribute=\"n\")|join(\",\") }}|\
            {{ [3] in v }}|{{ [4] in v }}|{{ \"a\" in m }}|{{ v|first }}|{{ v|last }}|\
            {{ m is mapping }}|{{ v is sequence }}|{{ v|string }}|{{ m|string }}|\
            {{ keys|sort|first }}|{{ keys|unique|list|length }}|{{ v|max }}|{{ v|min }}|\
            {{ z is none }}|{{ f }}|{{ big }}|{{ t }}|{{ s }}|{{ m.a[1].x }}|{{ v|reverse|list }}|\
            {{ keys|selectattr(\"n\", \"==\", 1)|list|length }}|{{ m|dictsort }}|{{ v|join(\"-\") }}|\
            {% for x in keys %}{{ loop.index }}/{{ loop.length }}/{{ loop.revindex }}{% if not loop.last %},{% endif %}{% endfor %}|\
            {% for x in keys|reverse %}{{ loop.length }}{{ loop.last }}{% endfor %}|\
            {% for k in m %}{{ loop.length }}{{ loop.last }}{% endfor %}|{% for k in m|reverse %}{{ loop.revindex }}{% endfor %}";
        let own = render(body, minijinja::Value::from(Serde(&json)), 500_000).unwrap();
        let ours = render(body, super::value(&json), 500_000).unwrap();
        assert_eq!(own, ours);
        assert!(own.contains("|True|False|True|True|2|"), "{own}");
    }

    /// A loop over `range()` knows its length and its last step, forwards
    /// and in reverse, as over a list of the engine's own.
    #[test]
    fn a_range_loop_knows_its_length_and_last_step() {
        let body = "{% for i in range(3) %}{{ i }}:{{ loop.length }}:{{ loop.revindex }}{% if not loop.last %},{% endif %}{% endfor %}|\
            {% for i in range(3)|reverse %}{{ i }}{% if loop.last %}.{% endif %}{% endfor %}|\
            {{ range(3) }}|{{ range(3) == [0, 1, 2] }}|{{ range(3)|list }}|{{ range(4)|last }}|{{ range(3)|length }}";
        let rendered = render(body, minijinja::Value::from(()), 500_000).unwrap();
        assert_eq!(
            rendered,
            "0:3:3,1:3:2,2:3:1|210.|[0, 1, 2]|True|[0, 1, 2]|3|3"
        );
    }

    /// The engine charges a comparison for its outer pair of items only;
    /// ours charge every pair they visit, within as many as there is fuel.
    #[test]
    fn nested_comparisons_are_charged_for_every_item() {
        let inner: Vec<u32> = vec![1; 30_000];
        let json = serde_json::json!({ "v": [inner.clone()], "w": [inner] });
        let body = "{% if v == w %}same{% endif %}";
        let own = render(body, minijinja::Value::from(Serde(&json)), 10_000);
        assert_eq!(
            own.as_deref(),
            Ok("same"),
            "the engine charges nested items now"
        );
        let ours = render(body, super::value(&json), 10_000).unwrap_err();
        assert!(ours.contains("used up its budget of steps"), "{ours}");
        assert_eq!(
            render(body, super::value(&json), 100_000).as_deref(),
            Ok("same")
        );
        // A loop of them stops at the allowance, not at the loop's fuel.
        let looped = "{% for i in range(20000) %}{% if v == w %}{% endif %}{% endfor %}done";
        let ours = render(looped, super::value(&json), 500_000).unwrap_err();
        assert!(ours.contains("used up its budget of steps"), "{ours}");
        // The allowance is per render: the next one starts afresh.
        assert_eq!(
            render(body, super::value(&json), 100_000).as_deref(),
            Ok("same")
        );
    }

    /// Making a list's text (a test such as `is startingwith`, or `in`)
    /// costs the engine no fuel, and a loop that prints nothing never sees
    /// the deadline: every item such a walk visits is charged instead.
    #[test]
    fn walks_of_data_are_charged_for_every_item() {
        let json = serde_json::json!({ "k": vec![0; 30_000], "m": {"a": 1} });
        let once = "{% if k is startingwith \"[0, 0\" %}text{% endif %}\
                    {% if 0 in k %}, in{% endif %}{% if \"a\" in m %}, key{% endif %}";
        assert_eq!(
            render(once, super::value(&json), 500_000).as_deref(),
            Ok("text, in, key")
        );
        for test in [
            "k is startingwith \"x\"",
            "1 in k",
            "k | join(\",\") == \"\"",
        ] {
            let looped = format!(
                "{{% for i in range(2000) %}}{{% if {test} %}}{{% endif %}}{{% endfor %}}done"
            );
            let ours = render(&looped, super::value(&json), 500_000).unwrap_err();
            assert!(
                ours.contains("used up its budget of steps"),
                "{test}: {ours}"
            );
        }
    }

    /// The allowance is each render's own: renders running at once on other
    /// threads keep theirs while one runs out.
    #[test]
    fn one_render_running_out_leaves_the_others_theirs() {
        let inner: Vec<u32> = vec![1; 30_000];
        let json = serde_json::json!({ "v": [inner.clone()], "w": [inner] });
        let looped = "{% for i in range(20000) %}{% if v == w %}{% endif %}{% endfor %}done";
        let body = "{% if v == w %}same{% endif %}";
        std::thread::scope(|threads| {
            for _ in 0..2 {
                threads.spawn(|| {
                    for _ in 0..20 {
                        let refused = render(looped, super::value(&json), 500_000).unwrap_err();
                        assert!(refused.contains("budget of steps"), "{refused}");
                    }
                });
            }
            for _ in 0..3 {
                threads.spawn(|| {
                    for _ in 0..200 {
                        let rendered = render(body, super::value(&json), 100_000);
                        assert_eq!(rendered.as_deref(), Ok("same"));
                    }
                });
            }
        });
    }
}

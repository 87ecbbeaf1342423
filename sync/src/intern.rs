//! Sharing of low-cardinality strings (model names, registrars, the `{}` of
//! empty settings) across the rows of a cold load. A million phones mostly
//! name a few dozen models and registrars; one `Arc<str>` each instead of a
//! million allocations saves memory and, above all, allocator time.

use std::cell::RefCell;
use std::sync::Arc;

use serde::de::Visitor;
use serde::Deserializer;

/// Past this many distinct values a field is not low-cardinality after all;
/// new values are then allocated as usual, so the interner stays bounded.
const MAX_DISTINCT: usize = 4096;

#[derive(Default)]
pub struct Interner {
    seen: foldhash::HashSet<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, value: &str) -> Arc<str> {
        if let Some(shared) = self.seen.get(value) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(value);
        if self.seen.len() < MAX_DISTINCT {
            self.seen.insert(shared.clone());
        }
        shared
    }
}

thread_local! {
    static ACTIVE: RefCell<Option<Interner>> = const { RefCell::new(None) };
}

/// Runs `f` (a synchronous deserialization) with an interner that the
/// `deserialize_with` functions below use.
pub fn with_interner<T>(f: impl FnOnce() -> T) -> T {
    ACTIVE.with(|a| *a.borrow_mut() = Some(Interner::default()));
    let result = f();
    ACTIVE.with(|a| *a.borrow_mut() = None);
    result
}

fn share(value: &str) -> Arc<str> {
    ACTIVE.with(|a| match a.borrow_mut().as_mut() {
        Some(interner) => interner.intern(value),
        None => Arc::from(value),
    })
}

struct Shared;

impl<'de> Visitor<'de> for Shared {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    // Borrowed from the input where the format allows: no temporary String.
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arc<str>, E> {
        Ok(share(v))
    }
}

struct OptionalShared;

impl<'de> Visitor<'de> for OptionalShared {
    type Value = Option<Arc<str>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an optional string")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(Shared).map(Some)
    }
}

pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    d.deserialize_str(Shared)
}

pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    d.deserialize_option(OptionalShared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation() {
        let mut i = Interner::default();
        let a = i.intern("T46S");
        let b = i.intern("T46S");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*i.intern("VVX 450"), "VVX 450");
    }

    #[test]
    fn stays_bounded() {
        let mut i = Interner::default();
        for n in 0..MAX_DISTINCT + 100 {
            i.intern(&n.to_string());
        }
        assert_eq!(i.seen.len(), MAX_DISTINCT);
    }
}

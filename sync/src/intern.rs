//! Sharing of low-cardinality strings (model names, registrars, the `{}` of
//! empty settings) across the rows of a cold load. A million phones mostly
//! name a few dozen models and registrars; one `Arc<str>` each instead of a
//! million allocations saves memory and, above all, allocator time.
//!
//! A load from the database shares through an [`Interner`] (a hash and a
//! compare per field). The snapshot does better: its writer gives each
//! value an index the first time a section has it ([`writing_section`],
//! the model's `serialize_with`), and its reader takes the shared value by
//! that index ([`reading_section`], `deserialize_with`). Outside those two,
//! the fields are plain strings, in any format.

use std::cell::RefCell;
use std::sync::Arc;

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

struct Shared;

impl<'de> Visitor<'de> for Shared {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    // Borrowed from the input where the format allows: no temporary String.
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arc<str>, E> {
        Ok(Arc::from(v))
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
    if reading_coded() {
        return Coded::deserialize(d).and_then(decode::<D::Error>);
    }
    d.deserialize_str(Shared)
}

pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    if reading_coded() {
        return Option::<Coded>::deserialize(d)?
            .map(decode::<D::Error>)
            .transpose();
    }
    d.deserialize_option(OptionalShared)
}

/// Writes an interned field: as text, or coded inside [`writing_section`].
pub fn ser<S: Serializer>(value: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    match WRITING.with(|w| w.borrow_mut().as_mut().map(|written| written.code(value))) {
        None => s.serialize_str(value),
        Some(None) => Coded::New(value).serialize(s),
        Some(Some(at)) => Coded::Known(at).serialize(s),
    }
}

pub fn ser_opt<S: Serializer>(value: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(&Field(v)),
        None => s.serialize_none(),
    }
}

/// An interned field in a snapshot: its value the first time a section
/// has it, then the index it was given. Decoding a row then neither hashes
/// nor compares nor checks the field again (interning was a tenth of a
/// start from the snapshot). Values past [`MAX_DISTINCT`] are written out
/// each time, as they are allocated each time.
#[derive(Serialize, Deserialize)]
enum Coded<'a> {
    New(&'a str),
    Known(u32),
}

/// An `Arc<str>` written as [`ser`] writes it, for `serialize_some`.
struct Field<'a>(&'a Arc<str>);

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser(self.0, s)
    }
}

/// The values a section's writer has given indexes.
#[derive(Default)]
struct WrittenValues {
    index: foldhash::HashMap<Arc<str>, u32>,
}

impl WrittenValues {
    /// `value`'s index, or `None` when it is written out (new, or past the
    /// bound; the reader keeps to the same bound).
    fn code(&mut self, value: &Arc<str>) -> Option<u32> {
        if let Some(&at) = self.index.get(value) {
            return Some(at);
        }
        if self.index.len() < MAX_DISTINCT {
            let at = self.index.len() as u32;
            self.index.insert(value.clone(), at);
        }
        None
    }
}

thread_local! {
    static WRITING: RefCell<Option<WrittenValues>> = const { RefCell::new(None) };
    /// The values a section's reader has seen, by index.
    static READING: RefCell<Option<Vec<Arc<str>>>> = const { RefCell::new(None) };
}

fn reading_coded() -> bool {
    READING.with(|r| r.borrow().is_some())
}

fn decode<E: serde::de::Error>(coded: Coded<'_>) -> Result<Arc<str>, E> {
    READING.with(|r| {
        let mut seen = r.borrow_mut();
        let seen = seen.get_or_insert_with(Vec::new);
        match coded {
            Coded::New(value) => {
                let shared: Arc<str> = Arc::from(value);
                if seen.len() < MAX_DISTINCT {
                    seen.push(shared.clone());
                }
                Ok(shared)
            }
            Coded::Known(at) => seen
                .get(at as usize)
                .cloned()
                .ok_or_else(|| E::custom("a shared value's index before its value")),
        }
    })
}

/// How many shared values the section being read has given indexes so far.
pub(crate) fn reading_mark() -> usize {
    READING.with(|r| r.borrow().as_ref().map_or(0, Vec::len))
}

/// Forgets the values given indexes since `mark`: a row whose decoding was
/// cut short is decoded again from its start, and values it had already
/// met must not be counted twice.
pub(crate) fn reading_rewind(mark: usize) {
    READING.with(|r| {
        if let Some(seen) = r.borrow_mut().as_mut() {
            seen.truncate(mark);
        }
    })
}

/// Serializes one snapshot section (`f`) with its interned fields coded.
pub fn writing_section<T>(f: impl FnOnce() -> T) -> T {
    WRITING.with(|w| *w.borrow_mut() = Some(WrittenValues::default()));
    let _done = Ended(&WRITING);
    f()
}

/// Deserializes one snapshot section (`f`) written by [`writing_section`].
pub fn reading_section<T>(f: impl FnOnce() -> T) -> T {
    READING.with(|r| *r.borrow_mut() = Some(Vec::new()));
    let _done = Ended(&READING);
    f()
}

/// Ends a section's coding however `f` ends, a panic included: the thread
/// (a pool's, reused) must not code some later, unrelated (de)serialization.
struct Ended<T: 'static>(&'static std::thread::LocalKey<RefCell<Option<T>>>);

impl<T: 'static> Drop for Ended<T> {
    fn drop(&mut self) {
        self.0.with(|coding| *coding.borrow_mut() = None);
    }
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
    fn a_section_ends_even_when_it_panics() {
        let _ = std::panic::catch_unwind(|| reading_section(|| panic!("a damaged row")));
        assert!(!reading_coded());
        let _ = std::panic::catch_unwind(|| writing_section(|| panic!("a failed write")));
        assert!(WRITING.with(|w| w.borrow().is_none()));
        // Outside a section the fields are plain text again.
        let mut text = Vec::new();
        ser(
            &Arc::from("T46S"),
            &mut serde_json::Serializer::new(&mut text),
        )
        .unwrap();
        assert_eq!(text, b"\"T46S\"");
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

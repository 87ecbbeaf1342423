//! JSON-object cells of a CSV import, made canonical once per text.

use std::rc::Rc;

use super::{CsvRow, ImportError};

/// The canonical text of JSON-object cells seen lately, by their text as
/// written. A fleet's variables and line settings repeat (a tenant's time
/// zone and NTP server, a codec list), and parsing and writing each cell
/// again was ~135 ms of the checking thread for 1,000,000 phones of which
/// a third had variables and a fifth line settings. Direct-mapped: at most
/// [`OBJECT_SLOTS`] cells of up to [`OBJECT_CACHED_BYTES`] each (~130 KiB),
/// and a cell never seen again costs a hash and a compare. Errors are not
/// kept, so each row with a bad cell is reported where it is.
pub(super) struct Objects {
    slots: Vec<Option<(Box<str>, Rc<str>)>>,
    /// `{}`, for the blank cells most rows have.
    empty: Rc<str>,
}

const OBJECT_SLOTS: usize = 256;
const OBJECT_CACHED_BYTES: usize = 256;

impl Default for Objects {
    fn default() -> Self {
        Objects {
            slots: vec![None; OBJECT_SLOTS],
            empty: Rc::from("{}"),
        }
    }
}

impl Objects {
    /// [`CsvRow::object`] of `raw`, from the cache where it can be.
    pub(super) fn canonical(
        &mut self,
        row: &CsvRow,
        column: &str,
        raw: &str,
    ) -> Result<Rc<str>, ImportError> {
        // Answered before the cache: a blank cell kept there would be an
        // empty `Box<str>`, whose pointer is dangling, and glibc's AVX-512
        // `memcmp` with a masked load there takes a fault-suppression assist
        // (~140 ns against ~3 ns) on every row without the column.
        if crate::model::trim(raw).is_empty() {
            return Ok(self.empty.clone());
        }
        if raw.len() > OBJECT_CACHED_BYTES {
            return row.object(column, raw).map(Rc::from);
        }
        use std::hash::BuildHasher;
        let slot = &mut self.slots[foldhash::fast::FixedState::with_seed(0x6a73_6f6e).hash_one(raw)
            as usize
            % OBJECT_SLOTS];
        if let Some((seen, canonical)) = slot {
            if **seen == *raw {
                return Ok(canonical.clone());
            }
        }
        let canonical: Rc<str> = row.object(column, raw)?.into();
        *slot = Some((raw.into(), canonical.clone()));
        Ok(canonical)
    }
}

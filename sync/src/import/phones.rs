//! An import's phones, gathered into one compact [`PhoneBatch`] with where
//! each came from: a file index and a line (CSV) or element (JSON) number
//! per phone, 8 bytes, the file name and column computed only for an
//! error. A CSV phone spans rows (one per line): every row is added as it
//! comes, and [`Phones::finish`] sorts the MACs to find a phone's other
//! rows (4 bytes a row, where a map took 16 to 32) and to report a phone
//! given twice.

use std::path::Path;
use std::sync::Arc;

use super::{ImportError, Location};
use crate::model::Mac;
use crate::store::{Finished, PhoneBatch, PhoneBatchBuilder, PhoneFields, PhoneInput, PhoneRef};

/// Where the phones of a plan's `UpsertPhones` came from, phone by phone.
#[derive(Clone, Debug, Default)]
pub struct PhoneOrigins {
    files: Vec<Source>,
    /// Per phone: its file (index into `files`) and its line (CSV) or its
    /// place in the `phones` array (JSON).
    phones: Vec<(u32, u32)>,
}

#[derive(Clone, Debug)]
struct Source {
    file: Arc<Path>,
    kind: SourceKind,
}

#[derive(Clone, Debug)]
enum SourceKind {
    /// Rows of one MAC are one phone; a row that disagrees with the first
    /// is reported at the column (from 1) of the field it differs in.
    Csv { columns: Vec<(String, u64)> },
    /// Each element a whole phone, at these lines and columns.
    Json { positions: Vec<(u64, u64)> },
}

impl PhoneOrigins {
    pub fn len(&self) -> usize {
        self.phones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.phones.is_empty()
    }

    /// Where phone `i` came from (its first row).
    pub fn location(&self, i: usize) -> Location {
        let (file, n) = self.phones[i];
        self.files[file as usize].location(n)
    }

    /// Forgets phone `i`, as [`PhoneBatch::remove`] does.
    pub fn remove(&mut self, i: usize) {
        self.phones.remove(i);
    }

    /// Forgets the phones `gone` lists (ascending), as
    /// [`PhoneBatch::remove_all`] does.
    pub fn remove_all(&mut self, gone: &[usize]) {
        let mut gone = gone.iter().copied().peekable();
        let mut i = 0;
        self.phones.retain(|_| {
            let keep = gone.next_if_eq(&i).is_none();
            i += 1;
            keep
        });
    }
}

impl Source {
    /// Line `n` of a CSV file, or element `n` of a JSON file's phones.
    fn location(&self, n: u32) -> Location {
        match &self.kind {
            SourceKind::Csv { .. } => Location {
                file: self.file.clone(),
                line: u64::from(n),
                column: 1,
                field: None,
            },
            SourceKind::Json { positions } => {
                let (line, column) = positions.get(n as usize).copied().unwrap_or((0, 0));
                Location {
                    file: self.file.clone(),
                    line,
                    column,
                    field: Some(format!("phones[{n}]")),
                }
            }
        }
    }
}

/// The phones of a plan while its files are read.
#[derive(Default)]
pub(super) struct Phones {
    pub(super) builder: PhoneBatchBuilder,
    origins: PhoneOrigins,
    /// CSV rows in error, by the MAC they name: file and line.
    invalid: Vec<(Mac, u32, u32)>,
}

impl Phones {
    /// Sized for `rows` more rows of `bytes` more text (address space only).
    pub(super) fn reserve(&mut self, rows: usize, bytes: usize) {
        if self.builder.is_empty() {
            self.builder = PhoneBatchBuilder::with_capacity(rows, bytes);
            self.origins.phones.reserve(rows);
        }
    }

    /// A CSV file with these `headers` begins; returns its index for
    /// [`Phones::add`].
    pub(super) fn csv_file(&mut self, file: &Arc<Path>, headers: &[String]) -> u32 {
        let columns = (headers.iter().enumerate())
            .map(|(i, h)| (h.clone(), i as u64 + 1))
            .collect();
        self.source(file, SourceKind::Csv { columns })
    }

    /// A JSON file begins; `positions` are its phones' lines and columns.
    pub(super) fn json_file(&mut self, file: &Arc<Path>, positions: Vec<(u64, u64)>) -> u32 {
        self.source(file, SourceKind::Json { positions })
    }

    /// Where element `n` of JSON file `source`'s phones is, added or not.
    pub(super) fn element_location(&self, source: u32, n: u32) -> Location {
        self.origins.files[source as usize].location(n)
    }

    fn source(&mut self, file: &Arc<Path>, kind: SourceKind) -> u32 {
        self.origins.files.push(Source {
            file: file.clone(),
            kind,
        });
        self.origins.files.len() as u32 - 1
    }

    /// Adds a phone (its lines to follow through `builder`) from line or
    /// element `n` of file `file`. `None` when the number does not fit
    /// (a file of over 4 billion rows).
    pub(super) fn add(&mut self, p: &PhoneFields<'_>, file: u32, n: u64) -> Option<usize> {
        let n = u32::try_from(n).ok()?;
        self.origins.phones.push((file, n));
        Some(self.builder.phone(p))
    }

    /// A CSV row of file `file` at line `n`, naming phone `mac`, is in
    /// error: the phone is left out whole (see [`Phones::finish`]).
    pub(super) fn invalid_row(&mut self, mac: Mac, file: u32, n: u64) {
        self.invalid
            .push((mac, file, u32::try_from(n).unwrap_or(u32::MAX)));
    }

    /// Phones added so far, over every file.
    pub(super) fn len(&self) -> usize {
        self.origins.phones.len()
    }

    /// Forgets the phones added after the first `len` (a file refused
    /// whole after some of its phones were read).
    pub(super) fn forget_since(&mut self, len: usize) {
        self.origins.phones.truncate(len);
        self.builder.truncate(len);
    }

    /// Adds a whole phone with its lines (JSON).
    pub(super) fn add_input(&mut self, p: &PhoneInput, file: u32, n: u64) -> Option<usize> {
        let n = u32::try_from(n).ok()?;
        self.origins.phones.push((file, n));
        Some(self.builder.input(p))
    }

    /// Merges each CSV phone's rows, reports phones given twice and lines
    /// out of order (appending to `errors`, in file order), and returns the
    /// batch and its origins. A phone one of whose rows is in error (or
    /// disagrees with its first) is left out and reported: a phone's line
    /// list is complete, so with `--skip-invalid` its other rows alone
    /// would delete the stored line the bad row was to give.
    pub(super) fn finish(self, errors: &mut Vec<ImportError>) -> (PhoneBatch, PhoneOrigins) {
        let Phones {
            mut builder,
            mut origins,
            mut invalid,
        } = self;
        // By MAC, each MAC's first bad row first.
        invalid.sort_unstable();
        if builder.is_full() {
            errors.push(too_many(&origins));
            origins.phones.clear();
            return (PhoneBatch::default(), origins);
        }
        let n = builder.len();
        // By MAC, then in the order given: a group's first is the phone. A
        // file already in MAC order needs no order of its own; otherwise
        // the MAC rides along (12 bytes a phone where an index alone took
        // 4), because sorting indexes by a MAC looked up in the batch
        // missed the cache on every comparison.
        let in_order = (1..n).all(|i| builder.mac(i - 1) <= builder.mac(i));
        let order: Vec<(Mac, u32)> = if in_order {
            Vec::new()
        } else {
            let mut order: Vec<_> = (0..n as u32)
                .map(|i| (builder.mac(i as usize), i))
                .collect();
            order.sort_unstable();
            order
        };
        let at = |builder: &PhoneBatchBuilder, k: usize| {
            if in_order {
                (builder.mac(k), k as u32)
            } else {
                order[k]
            }
        };
        let mut found: Vec<(u32, u32, ImportError)> = Vec::new();
        let mut start = 0;
        while start < n {
            let (mac, first) = at(&builder, start);
            let len = (start..n).take_while(|&k| at(&builder, k).0 == mac).count();
            let group = start..start + len;
            start += len;
            let first = first as usize;
            let mut bad_row = if invalid.is_empty() {
                None
            } else {
                let i = invalid.partition_point(|r| r.0 < mac);
                invalid.get(i).filter(|r| r.0 == mac).map(|r| (r.1, r.2))
            };
            for k in group.skip(1) {
                let again = at(&builder, k).1 as usize;
                let (file, line) = origins.phones[again];
                let same_file = origins.phones[first].0 == file;
                let message = match &origins.files[file as usize].kind {
                    SourceKind::Csv { columns } if same_file => {
                        let Some(field) = differing_field(&builder.get(first), &builder.get(again))
                        else {
                            builder.merge(again, first);
                            continue;
                        };
                        bad_row = Some(bad_row.map_or((file, line), |b| b.min((file, line))));
                        let mut location = origins.location(again);
                        location.column = (columns.iter())
                            .find(|(name, _)| name == field)
                            .map_or(1, |c| c.1);
                        location.field = Some(field.into());
                        found.push((
                            file,
                            line,
                            ImportError {
                                location,
                                message: format!(
                                    "phone {mac} appears again with another {field} than on its first row, \
                                     line {}: every row of a phone repeats the phone's own fields",
                                    origins.phones[first].1
                                ),
                            },
                        ));
                        continue;
                    }
                    _ => format!(
                        "duplicate phone {mac}, first given at {}",
                        origins.location(first)
                    ),
                };
                found.push((
                    file,
                    line,
                    ImportError {
                        location: origins.location(again),
                        message,
                    },
                ));
            }
            let Some((file, line)) = bad_row else {
                builder.keep(first);
                continue;
            };
            let (first_file, first_line) = origins.phones[first];
            found.push((
                first_file,
                first_line,
                ImportError {
                    location: origins.location(first),
                    message: format!(
                        "phone {mac} is left out: its row at {}:{line} is invalid, and its other rows \
                         alone would replace all of its stored lines",
                        origins.files[file as usize].file.display()
                    ),
                },
            ));
        }
        drop(order);
        found.sort_by_key(|f| (f.0, f.1));
        errors.extend(found.into_iter().map(|f| f.2));
        let mut kept = 0;
        let mut bad = Vec::new();
        let result = builder.finish(|f| match f {
            Finished::Kept(i) => {
                origins.phones[kept] = origins.phones[i];
                kept += 1;
            }
            // Its origin is not overwritten yet: only places before it are.
            Finished::BadLines(i, mac, positions) => bad.push(ImportError {
                location: origins.location(i),
                message: format!(
                    "phone {mac}: line numbers must run 1, 2, 3... without gaps or repeats, got {positions:?}"
                ),
            }),
        });
        errors.extend(bad);
        let batch = result.unwrap_or_else(|_| {
            errors.push(too_many(&origins));
            kept = 0;
            PhoneBatch::default()
        });
        origins.phones.truncate(kept);
        origins.phones.shrink_to_fit();
        (batch, origins)
    }
}

/// The first of a phone's own fields (all but its MAC, which two rows of
/// one phone share) that `a` and `b` give differently. Every one is
/// compared: a later row's label or password, kept silently, would have
/// been lost or taken depending on the rows' order.
fn differing_field(a: &PhoneRef<'_>, b: &PhoneRef<'_>) -> Option<&'static str> {
    [
        ("tenant", a.tenant == b.tenant),
        ("family", a.family == b.family),
        ("model", a.model == b.model),
        ("label", a.label == b.label),
        ("variables", a.variables == b.variables),
        ("http_user", a.http_user == b.http_user),
        ("http_password", a.http_password == b.http_password),
    ]
    .into_iter()
    .find_map(|(field, same)| (!same).then_some(field))
}

/// A run's phones past what one batch addresses ([`crate::store::BatchFull`]).
fn too_many(origins: &PhoneOrigins) -> ImportError {
    ImportError {
        location: origins.location(0),
        message:
            "too many phones for one import (over 4 GiB of their text): import them in several runs"
                .into(),
    }
}

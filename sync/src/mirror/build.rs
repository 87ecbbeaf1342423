//! Building the mirror's tables while the rows arrive (cold start from the
//! database or the snapshot). Phones and lines, nearly all of a large
//! mirror, go into their final `Arc` and their shard the moment they are
//! decoded, into maps sized from the row count: no table is ever held
//! twice, nothing is copied to grow, and every page the load touches is one
//! the mirror keeps. On the machines this runs on, first touches of memory
//! cost more than decoding (BENCHMARKS.md, issue 20).

use std::sync::Arc;

use super::group::Grouping;
use super::{group_build, MirrorState};
use crate::model::*;
use crate::shard::{Filling, ShardedMap};
use crate::stamp::Stamps;

/// Phones by id and by MAC, filled one row at a time, and each tenant's
/// phone ids for the per-tenant index.
pub struct PhoneRows {
    phones: Filling<Id, Arc<Phone>>,
    by_mac: Filling<Mac, Id>,
    by_tenant: Grouping,
}

impl PhoneRows {
    /// Sized for about `rows` phones (exact from the snapshot, an estimate
    /// from PostgreSQL's statistics).
    pub fn with_capacity(rows: usize) -> PhoneRows {
        PhoneRows {
            phones: Filling::with_capacity(rows),
            by_mac: Filling::with_capacity(rows),
            by_tenant: Grouping::default(),
        }
    }

    pub fn push(&mut self, phone: Phone) {
        self.by_mac.push(phone.mac, phone.id);
        self.by_tenant.push(phone.tenant_id, phone.id);
        self.phones.push(phone.id, Arc::new(phone));
    }

    /// Rows pushed.
    pub fn len(&self) -> usize {
        self.phones.pushed()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lines by id, and each phone's line ids in key order.
type LineIndex = (ShardedMap<Id, Arc<Line>>, ShardedMap<Id, Arc<[Id]>>);

/// A line's place in its phone's index: `(phone, position, line)`.
pub type LineKey = (Id, i32, Id);

/// Lines by id, plus what the per-phone index is built from at the end.
pub struct LineRows {
    lines: Filling<Id, Arc<Line>>,
    index: LineIndexing,
}

enum LineIndexing {
    /// Every line's key: sorted once, they group each phone's lines in key
    /// order.
    Sort(Vec<LineKey>),
    /// The keys go to a [`LineGroups`] built beside the load.
    Beside,
    Grouped(LineGroups),
}

impl LineRows {
    pub fn with_capacity(rows: usize) -> LineRows {
        LineRows {
            lines: Filling::with_capacity(rows),
            index: LineIndexing::Sort(Vec::with_capacity(rows)),
        }
    }

    /// For a load that hands each line's key to a [`LineGroups`] itself,
    /// and the groups to [`LineRows::index_with`] at the end.
    pub fn indexed_beside(rows: usize) -> LineRows {
        LineRows {
            lines: Filling::with_capacity(rows),
            index: LineIndexing::Beside,
        }
    }

    pub fn push(&mut self, line: Line) {
        if let LineIndexing::Sort(order) = &mut self.index {
            order.push((line.phone_id, line.position, line.id));
        }
        self.lines.push(line.id, Arc::new(line));
    }

    pub fn index_with(&mut self, groups: LineGroups) {
        self.index = LineIndexing::Grouped(groups);
    }

    /// Whether [`LineRows::finish`] takes the index the load built.
    #[cfg(test)]
    pub(crate) fn index_built_while_loading(self) -> bool {
        match self.index {
            LineIndexing::Grouped(groups) => groups.finish().is_some(),
            _ => false,
        }
    }

    /// Rows pushed.
    pub fn len(&self) -> usize {
        self.lines.pushed()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lines and each phone's line ids in key order.
    fn finish(self) -> LineIndex {
        let lines = self.lines.finish();
        let grouped = match self.index {
            LineIndexing::Sort(order) => return (lines, index_by_sort(order)),
            LineIndexing::Grouped(groups) => groups.finish(),
            LineIndexing::Beside => None,
        };
        let by_phone = grouped.unwrap_or_else(|| {
            tracing::debug!(
                "lines did not come grouped by phone in key order: indexing them by sort"
            );
            index_by_sort(
                lines
                    .values()
                    .map(|l| (l.phone_id, l.position, l.id))
                    .collect(),
            )
        });
        (lines, by_phone)
    }
}

/// Each phone's line ids from every line's key, in any order.
fn index_by_sort(mut order: Vec<LineKey>) -> ShardedMap<Id, Arc<[Id]>> {
    // Rows mostly arrive in phone order already, which the sort detects,
    // so this is close to a linear pass in the common case.
    order.sort_unstable();
    let phones = order.chunk_by(|a, b| a.0 == b.0).count();
    // Half the phones on another thread: this runs after the decoders are
    // done, one core idle, and is bound by fresh memory (an `Arc` and a map
    // entry per phone): ~75 ms for 1,000,000 on one.
    let parts = if phones >= SPLIT_LINE_INDEX { 2 } else { 1 };
    let mut parts = Filling::parts(phones, parts);
    let by_phone = std::thread::scope(|scope| {
        let order = &order;
        let others: Vec<_> = parts
            .drain(1..)
            .map(|part| scope.spawn(move || group_lines(order, part)))
            .collect();
        let mut done = vec![group_lines(order, parts.pop().expect("one part"))];
        done.extend(
            others
                .into_iter()
                .map(|t| t.join().expect("line index build panicked")),
        );
        Filling::join(done)
    });
    by_phone.finish()
}

/// Phones from which the per-phone line index is built on two threads.
const SPLIT_LINE_INDEX: usize = 20_000;

/// Each phone of `order` (sorted) that `part` owns, with its line ids.
fn group_lines(order: &[LineKey], mut part: Filling<Id, Arc<[Id]>>) -> Filling<Id, Arc<[Id]>> {
    for group in order.chunk_by(|a, b| a.0 == b.0) {
        if part.owns(&group[0].0) {
            part.push(group[0].0, group.iter().map(|&(_, _, id)| id).collect());
        }
    }
    part
}

/// Each phone's line ids, made as the keys arrive grouped by phone and in
/// key order within a phone, the order a snapshot holds them in: no sort
/// at the end, and the work can go to whichever thread is free while lines
/// are still being decoded. Keys in any other order are noticed, and the
/// lines are then indexed by sort after all.
pub struct LineGroups {
    by_phone: Filling<Id, Arc<[Id]>>,
    phone: Option<Id>,
    last_position: i32,
    ids: Vec<Id>,
    in_key_order: bool,
}

impl LineGroups {
    /// Sized for about `phones` phones with lines.
    pub fn with_capacity(phones: usize) -> LineGroups {
        LineGroups {
            by_phone: Filling::with_capacity(phones),
            phone: None,
            last_position: 0,
            ids: Vec::new(),
            in_key_order: true,
        }
    }

    pub fn push(&mut self, (phone, position, id): LineKey) {
        if self.phone == Some(phone) {
            self.in_key_order &= position > self.last_position;
        } else {
            self.close_group();
            self.phone = Some(phone);
        }
        self.last_position = position;
        self.ids.push(id);
    }

    fn close_group(&mut self) {
        if let Some(phone) = self.phone.take() {
            self.by_phone.push(phone, Arc::from(&self.ids[..]));
            self.ids.clear();
        }
    }

    /// The index, unless the keys came in another order.
    fn finish(mut self) -> Option<ShardedMap<Id, Arc<[Id]>>> {
        self.close_group();
        let groups = self.by_phone.pushed();
        let by_phone = self.by_phone.finish();
        // A phone whose lines came in two runs was pushed twice.
        (self.in_key_order && by_phone.len() == groups).then_some(by_phone)
    }
}

/// Every table of a cold load: phones and lines built as they arrive, the
/// small tables as rows, indexed when the load is complete.
pub struct Loading {
    pub tenants: Vec<Tenant>,
    pub phones: PhoneRows,
    pub lines: LineRows,
    pub templates: Vec<Template>,
    pub directory_entries: Vec<DirectoryEntry>,
    pub directory_sources: Vec<DirectorySource>,
    pub api_tokens: Vec<ApiToken>,
    /// What the read saw above its cursor, when the backend can say
    /// (PostgreSQL's database loads).
    pub seen_above: Option<Arc<SeenAbove>>,
}

impl Default for Loading {
    fn default() -> Self {
        Loading::with_capacity(0, 0)
    }
}

impl Loading {
    pub fn with_capacity(phones: usize, lines: usize) -> Loading {
        Loading {
            tenants: Vec::new(),
            phones: PhoneRows::with_capacity(phones),
            lines: LineRows::with_capacity(lines),
            templates: Vec::new(),
            directory_entries: Vec::new(),
            directory_sources: Vec::new(),
            api_tokens: Vec::new(),
            seen_above: None,
        }
    }

    /// From rows already in memory: phones and lines on two threads.
    pub fn from_dataset(data: Dataset) -> Loading {
        let Dataset {
            tenants,
            phones,
            lines,
            templates,
            directory_entries,
            directory_sources,
            api_tokens,
        } = data;
        let (phone_rows, line_rows) = std::thread::scope(|scope| {
            let phone_part = scope.spawn(move || {
                let mut rows = PhoneRows::with_capacity(phones.len());
                phones.into_iter().for_each(|p| rows.push(p));
                rows
            });
            let mut line_rows = LineRows::with_capacity(lines.len());
            lines.into_iter().for_each(|l| line_rows.push(l));
            (
                phone_part.join().expect("phone index build panicked"),
                line_rows,
            )
        });
        Loading {
            tenants,
            phones: phone_rows,
            lines: line_rows,
            templates,
            directory_entries,
            directory_sources,
            api_tokens,
            seen_above: None,
        }
    }

    pub fn row_count(&self) -> usize {
        self.tenants.len()
            + self.phones.len()
            + self.lines.len()
            + self.templates.len()
            + self.directory_entries.len()
            + self.directory_sources.len()
            + self.api_tokens.len()
    }

    /// The rows as a [`Dataset`] (tests and tools compare those).
    pub fn into_dataset(self) -> Dataset {
        fn rows<T: Clone>(map: ShardedMap<Id, Arc<T>>) -> Vec<T> {
            map.into_values()
                .map(|v| Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone()))
                .collect()
        }
        let mut data = Dataset {
            tenants: self.tenants,
            phones: rows(self.phones.phones.finish()),
            lines: rows(self.lines.lines.finish()),
            templates: self.templates,
            directory_entries: self.directory_entries,
            directory_sources: self.directory_sources,
            api_tokens: self.api_tokens,
        };
        data.sort();
        data
    }
}

impl MirrorState {
    /// Indexes a finished load.
    pub(crate) fn from_loading(
        loading: Loading,
        cursor: Cursor,
        meta: Meta,
        version: u64,
    ) -> MirrorState {
        let Loading {
            tenants,
            phones,
            lines,
            templates,
            directory_entries,
            directory_sources,
            api_tokens,
            seen_above,
        } = loading;
        let PhoneRows {
            phones: phone_map,
            by_mac,
            by_tenant,
        } = phones;
        // The tenant index beside the line index: on one thread after it,
        // it would add its sort to the start's critical path.
        let (phones_by_tenant, (lines, lines_by_phone)) = std::thread::scope(|scope| {
            let by_tenant = scope.spawn(move || by_tenant.finish());
            let lines = lines.finish();
            (
                by_tenant.join().expect("tenant index build panicked"),
                lines,
            )
        });
        let mut state = MirrorState {
            version,
            cursor,
            seen_above,
            meta,
            tenant_by_slug: ShardedMap::from_entries(
                tenants.iter().map(|t| (t.slug.clone(), t.id)),
            ),
            tenants: ShardedMap::from_entries(tenants.into_iter().map(|t| (t.id, Arc::new(t)))),
            phones: phone_map.finish(),
            phone_by_mac: by_mac.finish(),
            phones_by_tenant,
            lines,
            lines_by_phone,
            template_by_key: ShardedMap::from_entries(templates.iter().map(|t| (t.key(), t.id))),
            templates: ShardedMap::from_entries(templates.into_iter().map(|t| (t.id, Arc::new(t)))),
            directory_by_tenant: group_build(directory_entries.iter().map(|d| (d.tenant_id, d.id))),
            directory_numbers: numbers_by_tenant(&directory_entries),
            directory: ShardedMap::from_entries(
                directory_entries.into_iter().map(|d| (d.id, Arc::new(d))),
            ),
            sources_by_tenant: group_build(directory_sources.iter().map(|s| (s.tenant_id, s.id))),
            sources: ShardedMap::from_entries(
                directory_sources.into_iter().map(|s| (s.id, Arc::new(s))),
            ),
            token_by_hash: ShardedMap::from_entries(
                api_tokens.iter().map(|t| (t.token_hash.clone(), t.id)),
            ),
            tokens: ShardedMap::from_entries(api_tokens.into_iter().map(|t| (t.id, Arc::new(t)))),
            stamps: Stamps::new(version),
            ..MirrorState::default()
        };
        // By owner once the phones are in: a phone-scope template's is its
        // phone's tenant.
        (state.templates_by_group, state.templates_by_mac) = state.template_groups();
        state
    }
}

/// Each tenant's count of directory numbers, as `MirrorState::apply` keeps it.
fn numbers_by_tenant(entries: &[DirectoryEntry]) -> ShardedMap<Id, u64> {
    let mut counts = std::collections::HashMap::<Id, u64>::new();
    for e in entries.iter().filter(|e| !e.numbers.is_empty()) {
        *counts.entry(e.tenant_id).or_default() += e.numbers.len() as u64;
    }
    ShardedMap::from_entries(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line((phone_id, position, id): LineKey) -> Line {
        Line {
            id,
            phone_id,
            position,
            extension: format!("{id}").into(),
            display_name: "".into(),
            auth_user: "".into(),
            password: None,
            registrar: "sip.example.net".into(),
            proxy: None,
            settings: "{}".into(),
            updated_at: 0,
        }
    }

    /// Each phone's line ids, as the sort builds them.
    fn sorted(keys: &[LineKey]) -> ShardedMap<Id, Arc<[Id]>> {
        index_by_sort(keys.to_vec())
    }

    fn same(a: &ShardedMap<Id, Arc<[Id]>>, b: &ShardedMap<Id, Arc<[Id]>>, phones: &[Id]) {
        assert_eq!(a.len(), b.len());
        for phone in phones {
            assert_eq!(a.get(phone), b.get(phone), "phone {phone}");
        }
    }

    fn groups(keys: &[LineKey]) -> LineGroups {
        let mut groups = LineGroups::with_capacity(4);
        keys.iter().for_each(|&key| groups.push(key));
        groups
    }

    /// A snapshot's order: phones in any order, each phone's lines
    /// together and in position order.
    #[test]
    fn keys_grouped_by_phone_index_as_the_sort_does() {
        let keys = [
            (9, 1, 90),
            (9, 2, 91),
            (3, 1, 30),
            (5, 1, 52),
            (5, 3, 50),
            (5, 4, 51),
        ];
        let grouped = groups(&keys).finish().expect("keys in snapshot order");
        same(&grouped, &sorted(&keys), &[3, 5, 9]);
        assert_eq!(
            grouped.get(&5).map(|ids| ids.to_vec()),
            Some(vec![52, 50, 51])
        );
    }

    /// Any other order is noticed, and the lines are indexed by sort.
    #[test]
    fn keys_out_of_order_fall_back_to_the_sort() {
        let phone_twice = [(3, 1, 30), (5, 1, 50), (3, 2, 31)];
        let positions_back = [(3, 2, 31), (3, 1, 30), (5, 1, 50)];
        let position_twice = [(3, 1, 31), (3, 1, 30)];
        for keys in [&phone_twice[..], &positions_back, &position_twice] {
            assert!(groups(keys).finish().is_none(), "{keys:?}");
            let mut rows = LineRows::indexed_beside(keys.len());
            keys.iter().for_each(|&key| rows.push(line(key)));
            rows.index_with(groups(keys));
            let (lines, by_phone) = rows.finish();
            assert_eq!(lines.len(), keys.len());
            same(&by_phone, &sorted(keys), &[3, 5]);
        }
        // Never handed its groups: indexed by sort too.
        let mut rows = LineRows::indexed_beside(2);
        phone_twice.iter().for_each(|&key| rows.push(line(key)));
        same(&rows.finish().1, &sorted(&phone_twice), &[3, 5]);
    }
}

//! Stamps: the mirror version at which an input of a derived cache last
//! changed. A cache stores the stamps of everything an entry was computed
//! from and compares them with the current state's on fill and on read, so
//! an entry computed from an older state can never be served, whatever order
//! the fill and the change stream's invalidation happen in.
//!
//! Rows need no stamp: an unchanged row keeps its `Arc` across versions and a
//! changed one gets a new one, so holding the `Arc` and comparing pointers is
//! the row's stamp. Stamps cover what a row pointer cannot: a key or a set
//! of rows ("the tenant-scope template of tenant 7 for yealink
//! `{mac}.cfg`", "a tenant's directory"), where a row that appears or goes
//! is a change too.

use std::hash::Hash;

use crate::model::{Family, Id, Mac, Template, TemplateScope};

/// An input a derived cache depends on, as a set of rows.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Input<'a> {
    /// The stored template at one key, or its absence: a template that
    /// appears, changes or goes is a change. One key, not every template of
    /// the file, so one tenant's edits never outdate another's files.
    Template {
        family: Family,
        file: &'a str,
        scope: ScopeKey<'a>,
    },
    /// A tenant's directory entries, and the tenant row (its region decides
    /// how their numbers normalize).
    Directory(Id),
    /// A tenant's directory sources, and the tenant row.
    Sources(Id),
}

/// A template key's scope, typed the way resolution meets it (a phone's
/// MAC, a tenant's id), so checking needs no text built on the hot path.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ScopeKey<'a> {
    Family,
    Model(&'a str),
    Tenant(Id),
    Phone(Mac),
    /// A stored key that reads as neither (it can never apply).
    Other(&'a str),
}

impl<'a> ScopeKey<'a> {
    /// The scope a stored template's key names.
    pub fn of(t: &'a Template) -> ScopeKey<'a> {
        match t.scope {
            TemplateScope::Family => ScopeKey::Family,
            TemplateScope::Model => ScopeKey::Model(&t.scope_key),
            TemplateScope::Tenant => t
                .scope_key
                .parse()
                .map_or(ScopeKey::Other(&t.scope_key), ScopeKey::Tenant),
            TemplateScope::Phone => t
                .scope_key
                .parse()
                .map_or(ScopeKey::Other(&t.scope_key), ScopeKey::Phone),
        }
    }
}

impl<'a> Input<'a> {
    /// The key a stored template occupies.
    pub fn of_template(t: &'a Template) -> Input<'a> {
        Input::Template {
            family: t.family,
            file: &t.file_pattern,
            scope: ScopeKey::of(t),
        }
    }
}

impl Input<'_> {
    /// The slot in [`Stamps`]. Two inputs that share a slot share a stamp:
    /// a change to either looks like a change to both, which costs a
    /// re-render and never serves a stale one.
    pub(crate) fn slot(&self) -> u64 {
        crate::shard::stable_hash(self)
    }
}

/// The stamps of one mirror state: slot → version of the last change.
/// A slot never changed since the state was built reads as the build's
/// version, so a full reload changes every stamp at once.
#[derive(Clone, Default)]
pub(crate) struct Stamps {
    /// The version of the state's last full build.
    base: u64,
    /// Slots are never removed one by one: reading a removed one would
    /// give `base` again, which an entry from before its last change may
    /// carry. Past [`MAX_STAMPED`] they are all dropped at once and `base`
    /// moves to the change's version, which no earlier entry carries.
    changed: crate::shard::ShardedMap<u64, u64>,
}

/// Slots kept before they are all dropped. Every key that ever changed
/// keeps one (a phone-scope template's key names a MAC), so a tenant that
/// creates and deletes such templates in a loop would otherwise grow every
/// node's mirror without end. Dropping them outdates every cached render
/// at once, as a full reload does: at ~32 bytes a slot this is ~3 MB, and
/// a tenant needs 100,000 such changes to cause it.
const MAX_STAMPED: usize = 100_000;

impl Stamps {
    pub(crate) fn new(base: u64) -> Stamps {
        Stamps {
            base,
            changed: Default::default(),
        }
    }

    pub(crate) fn get(&self, input: Input<'_>) -> u64 {
        self.changed
            .get(&input.slot())
            .copied()
            .unwrap_or(self.base)
    }

    pub(crate) fn bump(&mut self, slot: u64, version: u64) {
        if self.changed.len() >= MAX_STAMPED && self.changed.get(&slot).is_none() {
            self.base = version;
            self.changed = Default::default();
            return;
        }
        self.changed.insert(slot, version);
    }

    pub(crate) fn len(&self) -> usize {
        self.changed.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn stamps_stay_bounded_and_never_read_as_an_earlier_version() {
        let mut stamps = Stamps::new(1);
        let mut version = 1;
        let mut kept: Vec<(u64, u64)> = Vec::new();
        for slot in 0..(MAX_STAMPED as u64 + 10) {
            version += 1;
            stamps.bump(slot, version);
            kept.push((slot, version));
            assert!(stamps.len() <= MAX_STAMPED);
        }
        // Whatever a cache entry stored before, reading its slot now gives
        // a version no older than the change it missed.
        for (slot, bumped) in kept {
            let now = stamps.changed.get(&slot).copied().unwrap_or(stamps.base);
            assert!(now >= bumped, "slot {slot}: {now} < {bumped}");
        }
    }
    use crate::mirror::{LoadedFrom, Mirror};
    use crate::model::*;

    fn tenant(id: Id, region: &str) -> Row {
        Row::Tenant(Tenant {
            id,
            slug: format!("t{id}").into(),
            name: "T".into(),
            default_region: region.into(),
            settings: "{}".into(),
            updated_at: 1,
        })
    }

    fn template(id: Id, pattern: &str, body: &str) -> Row {
        Row::Template(Template {
            id,
            scope: TemplateScope::Family,
            family: Family::Yealink,
            scope_key: "".into(),
            file_pattern: pattern.into(),
            body: body.into(),
            version: 1,
            updated_by: "test".into(),
            updated_at: 1,
        })
    }

    fn entry(id: Id, tenant_id: Id, name: &str) -> Row {
        Row::DirectoryEntry(DirectoryEntry {
            id,
            tenant_id,
            external_id: Some(format!("e{id}").into()),
            name: name.into(),
            company: None,
            numbers: Vec::new(),
            updated_at: 1,
        })
    }

    fn apply(mirror: &Mirror, rows: Vec<(Entity, Id, Option<Row>)>) {
        let state = mirror.load();
        mirror.apply(rows, state.cursor(), state.meta().clone());
    }

    fn set(mirror: &Mirror, row: Row) {
        apply(mirror, vec![(row.entity(), row.id(), Some(row))]);
    }

    #[test]
    fn stamps_change_exactly_with_their_inputs() {
        let mirror = Mirror::new();
        let mut data = Dataset::default();
        for row in [
            tenant(1, "US"),
            tenant(2, "US"),
            template(10, "{mac}.cfg", "a"),
        ] {
            data.push(row);
        }
        mirror.reset(
            data,
            Cursor::default(),
            Meta::default(),
            LoadedFrom::Database,
        );
        let key = |file, scope| Input::Template {
            family: Family::Yealink,
            file,
            scope,
        };
        let cfg = key("{mac}.cfg", ScopeKey::Family);
        let boot = key("{mac}.boot", ScopeKey::Family);
        let stamps = |m: &Mirror| {
            let s = m.load();
            [
                s.stamp(cfg),
                s.stamp(boot),
                s.stamp(Input::Directory(1)),
                s.stamp(Input::Directory(2)),
                s.stamp(Input::Sources(1)),
            ]
        };
        let start = stamps(&mirror);

        set(&mirror, template(10, "{mac}.cfg", "b"));
        let after = stamps(&mirror);
        assert_ne!(after[0], start[0], "an edited template");
        assert_eq!(after[1..], start[1..]);

        // A new template under another name is a change to that name only.
        set(&mirror, template(11, "{mac}.boot", "boot"));
        let next = stamps(&mirror);
        assert_eq!(next[0], after[0]);
        assert_ne!(next[1], after[1], "a template that appeared");

        // A template renamed changes both names; a deleted one its own.
        set(&mirror, template(11, "{mac}.cfg", "boot"));
        let renamed = stamps(&mirror);
        assert_ne!(renamed[0], next[0]);
        assert_ne!(renamed[1], next[1]);
        apply(&mirror, vec![(Entity::Template, 11, None)]);
        let deleted = stamps(&mirror);
        assert_ne!(deleted[0], renamed[0]);
        assert_eq!(deleted[1], renamed[1]);

        // A directory entry touches its tenant's directory, not sources,
        // not another tenant; moving it touches both tenants.
        set(&mirror, entry(20, 1, "Alice"));
        let entered = stamps(&mirror);
        assert_ne!(entered[2], deleted[2]);
        assert_eq!(entered[3..], deleted[3..]);
        set(&mirror, entry(20, 2, "Alice"));
        let moved = stamps(&mirror);
        assert_ne!(moved[2], entered[2]);
        assert_ne!(moved[3], entered[3]);

        // The tenant row (its region) touches its directory and sources.
        set(&mirror, tenant(1, "GB"));
        let region = stamps(&mirror);
        assert_ne!(region[2], moved[2]);
        assert_ne!(region[4], moved[4]);
        assert_eq!(region[3], moved[3]);

        // A row written again unchanged is no change.
        set(&mirror, tenant(1, "GB"));
        assert_eq!(stamps(&mirror), region);

        // One tenant's template is a change to its key only: another
        // tenant's files of the same name are untouched.
        let (own, other) = (
            key("{mac}.cfg", ScopeKey::Tenant(1)),
            key("{mac}.cfg", ScopeKey::Tenant(2)),
        );
        let before = mirror.load();
        let mut tenant_template = match template(12, "{mac}.cfg", "t") {
            Row::Template(t) => t,
            _ => unreachable!(),
        };
        tenant_template.scope = TemplateScope::Tenant;
        tenant_template.scope_key = "1".into();
        set(&mirror, Row::Template(tenant_template));
        let after = mirror.load();
        assert_ne!(after.stamp(own), before.stamp(own));
        assert_eq!(after.stamp(other), before.stamp(other));
        assert_eq!(after.stamp(cfg), before.stamp(cfg));
        let region = stamps(&mirror);

        // A full reload changes every stamp.
        let data = mirror.load().to_dataset();
        mirror.reset(
            data,
            Cursor::default(),
            Meta::default(),
            LoadedFrom::Database,
        );
        let reloaded = stamps(&mirror);
        for (a, b) in reloaded.iter().zip(region.iter()) {
            assert_ne!(a, b);
        }
    }

    #[test]
    fn a_phones_line_ids_are_a_new_arc_whenever_a_line_changes() {
        let line = |id: Id, phone_id: Id, position: i32, name: &str| {
            Row::Line(Line {
                id,
                phone_id,
                position,
                extension: "100".into(),
                display_name: name.into(),
                auth_user: "100".into(),
                password: None,
                registrar: "sip.example.net".into(),
                proxy: None,
                settings: "{}".into(),
                updated_at: 1,
            })
        };
        let mirror = Mirror::new();
        let mut data = Dataset::default();
        data.push(line(1, 7, 1, "a"));
        data.push(line(2, 8, 1, "b"));
        mirror.reset(
            data,
            Cursor::default(),
            Meta::default(),
            LoadedFrom::Database,
        );
        let ids = |m: &Mirror, phone| m.load().line_ids(phone).cloned();
        let (seven, eight) = (ids(&mirror, 7).unwrap(), ids(&mirror, 8).unwrap());
        set(&mirror, line(1, 7, 1, "renamed"));
        assert!(!Arc::ptr_eq(&seven, &ids(&mirror, 7).unwrap()), "a value");
        assert!(Arc::ptr_eq(&eight, &ids(&mirror, 8).unwrap()));
        let seven = ids(&mirror, 7).unwrap();
        set(&mirror, line(1, 8, 2, "renamed"));
        assert!(ids(&mirror, 7).is_none(), "moved away");
        assert!(!Arc::ptr_eq(&eight, &ids(&mirror, 8).unwrap()), "moved in");
        assert_eq!(&*seven, &[1]);
    }
}

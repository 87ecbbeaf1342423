//! The render cache against every order a fill and an edit can land in: a
//! cached file always equals what a provisioner with no cache renders from
//! the same mirror, and the self-check catches an entry that does not.

use std::sync::Arc;

use dialtone_sync::*;

use crate::error::ProvisionError;
use crate::provision::{ProvisionOptions, Provisioner, Request};
use crate::render_cache::RenderKey;
use crate::templates::Shipped;

const SHIPPED_CFG: &str = "#!version:1.0.0.1\n# shipped\n\
{% for line in lines %}account.{{ line.position }}.display_name = {{ line.display_name }}\n{% endfor %}\
tenant = {{ tenant.name }}\nlabel = {{ phone.label }}\n";

pub(crate) const FILE: &str = "001565000001.cfg";

fn tenant(name: &str) -> Tenant {
    Tenant {
        id: 1,
        slug: "acme".into(),
        name: name.into(),
        default_region: "US".into(),
        settings: "{}".into(),
        updated_at: 1,
    }
}

fn phone(id: Id, mac: &str, label: &str) -> Phone {
    Phone {
        id,
        tenant_id: 1,
        mac: mac.parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: Some(label.into()),
        variables: "{}".into(),
        http_user: None,
        http_password: None,
        updated_at: 1,
    }
}

fn line(id: Id, phone_id: Id, position: i32, name: &str) -> Line {
    Line {
        id,
        phone_id,
        position,
        extension: format!("{}", 100 + id).into(),
        display_name: name.into(),
        auth_user: format!("u{id}").into(),
        password: None,
        registrar: "sip.example.net".into(),
        proxy: None,
        settings: "{}".into(),
        updated_at: 1,
    }
}

pub(crate) fn template(
    id: Id,
    scope: TemplateScope,
    scope_key: &str,
    body: &str,
    version: i64,
) -> Template {
    Template {
        id,
        scope,
        family: Family::Yealink,
        scope_key: scope_key.into(),
        file_pattern: "{mac}.cfg".into(),
        body: body.into(),
        version,
        updated_by: "test".into(),
        updated_at: 1,
    }
}

pub(crate) fn dataset() -> Dataset {
    Dataset {
        tenants: vec![tenant("Acme")],
        phones: vec![
            phone(1, "001565000001", "front"),
            phone(2, "001565000002", "back"),
        ],
        lines: vec![line(1, 1, 1, "Reception"), line(2, 2, 1, "Sales")],
        ..Default::default()
    }
}

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) mirror: Arc<Mirror>,
    pub(crate) provisioner: Provisioner,
}

impl Fixture {
    pub(crate) fn new(data: Dataset) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("yealink")).unwrap();
        std::fs::write(dir.path().join("yealink/{mac}.cfg.tera"), SHIPPED_CFG).unwrap();
        let mirror = dialtone_sync::testing::build::mirror_of(data);
        let provisioner = Self::provisioner(&mirror, dir.path());
        Fixture {
            _dir: dir,
            mirror,
            provisioner,
        }
    }

    fn provisioner(mirror: &Arc<Mirror>, dir: &std::path::Path) -> Provisioner {
        Provisioner::new(
            mirror.clone(),
            dialtone_sync::testing::test_key(),
            Shipped::load(dir, 1).unwrap(),
            ProvisionOptions::default(),
        )
    }

    pub(crate) fn get(&self, path: &str) -> String {
        let file = self
            .provisioner
            .provision(&Request {
                path,
                ..Default::default()
            })
            .unwrap();
        String::from_utf8(file.body.to_vec()).unwrap()
    }

    /// What a provisioner with an empty cache renders now.
    fn fresh(&self, path: &str) -> String {
        let other = Self::provisioner(&self.mirror, self._dir.path());
        let file = other
            .provision(&Request {
                path,
                ..Default::default()
            })
            .unwrap();
        String::from_utf8(file.body.to_vec()).unwrap()
    }

    pub(crate) fn apply(&self, rows: Vec<Row>) {
        let changes = rows.into_iter().map(|r| (r.entity(), r.id(), Some(r)));
        let current = self.mirror.load();
        self.mirror
            .apply(changes.collect(), current.cursor(), current.meta().clone());
    }

    fn delete(&self, entity: Entity, id: Id) {
        let current = self.mirror.load();
        self.mirror.apply(
            vec![(entity, id, None)],
            current.cursor(),
            current.meta().clone(),
        );
    }
}

/// A render that started on an older state and finishes after the edit
/// (and after any invalidation) must not be served afterwards.
#[test]
fn a_render_from_an_older_state_never_lands_in_the_cache() {
    let f = Fixture::new(dataset());
    let old = f.mirror.load();
    let mut events = f.mirror.subscribe();
    f.apply(vec![Row::Line(line(1, 1, 1, "Edited"))]);
    // The change stream is followed before the slow render finishes.
    while let Ok(event) = events.try_recv() {
        f.provisioner.invalidate(&event);
    }
    let request = Request {
        path: FILE,
        ..Default::default()
    };
    let slow = f.provisioner.provision_at(&old, &request).unwrap();
    assert!(String::from_utf8_lossy(&slow.body).contains("Reception"));
    let served = f.get(FILE);
    assert!(served.contains("display_name = Edited"), "{served}");
}

/// Without any invalidation at all, every kind of edit still reaches the
/// next fetch: reads check what each entry was made from.
#[test]
fn every_input_is_checked_on_read_without_the_change_stream() {
    let f = Fixture::new(dataset());
    let other = "001565000002.cfg";
    type Edit = Box<dyn Fn(&Fixture)>;
    let mut edits: Vec<(&str, Edit)> = vec![
        (
            "line",
            Box::new(|f| f.apply(vec![Row::Line(line(1, 1, 1, "Lobby"))])),
        ),
        (
            "new line",
            Box::new(|f| f.apply(vec![Row::Line(line(3, 1, 2, "Second"))])),
        ),
        ("removed line", Box::new(|f| f.delete(Entity::Line, 3))),
        (
            "phone",
            Box::new(|f| f.apply(vec![Row::Phone(phone(1, "001565000001", "moved"))])),
        ),
        (
            "tenant",
            Box::new(|f| f.apply(vec![Row::Tenant(tenant("Acme & Sons"))])),
        ),
        (
            "family template",
            Box::new(|f| {
                f.apply(vec![Row::Template(template(
                    10,
                    TemplateScope::Family,
                    "",
                    "family v1 {{ phone.label }}\n",
                    1,
                ))])
            }),
        ),
        (
            "model template",
            Box::new(|f| {
                f.apply(vec![Row::Template(template(
                    11,
                    TemplateScope::Model,
                    "T46S",
                    "model v1 {{ phone.label }}\n",
                    1,
                ))])
            }),
        ),
        (
            "tenant template",
            Box::new(|f| {
                f.apply(vec![Row::Template(template(
                    12,
                    TemplateScope::Tenant,
                    "1",
                    "tenant v1 {{ tenant.name }}\n",
                    1,
                ))])
            }),
        ),
        (
            "phone template",
            Box::new(|f| {
                f.apply(vec![Row::Template(template(
                    13,
                    TemplateScope::Phone,
                    "001565000001",
                    "phone v1\n",
                    1,
                ))])
            }),
        ),
        (
            "phone template edited",
            Box::new(|f| {
                f.apply(vec![Row::Template(template(
                    13,
                    TemplateScope::Phone,
                    "001565000001",
                    "phone v2\n",
                    2,
                ))])
            }),
        ),
        (
            "phone template deleted",
            Box::new(|f| f.delete(Entity::Template, 13)),
        ),
        (
            "tenant template deleted",
            Box::new(|f| f.delete(Entity::Template, 12)),
        ),
        (
            "shipped reload",
            Box::new(|f| {
                f.delete(Entity::Template, 11);
                f.delete(Entity::Template, 10);
                f.get(FILE);
                std::fs::write(
                    f._dir.path().join("yealink/{mac}.cfg.tera"),
                    "# shipped v2\n",
                )
                .unwrap();
                f.provisioner.reload_shipped().unwrap();
            }),
        ),
    ];
    let mut last = f.get(FILE);
    for (what, edit) in edits.drain(..) {
        let other_before = f.get(other);
        edit(&f);
        let served = f.get(FILE);
        assert_eq!(served, f.fresh(FILE), "after the {what} edit");
        assert_ne!(
            served, last,
            "the {what} edit changed nothing it could be tested by"
        );
        assert_eq!(
            f.get(other),
            f.fresh(other),
            "other phone after the {what} edit"
        );
        if !matches!(
            what,
            "tenant"
                | "family template"
                | "model template"
                | "tenant template"
                | "tenant template deleted"
                | "shipped reload"
        ) {
            assert_eq!(f.get(other), other_before, "{what} touched another phone");
        }
        last = served;
    }
}

/// A compiled template is used only for the body it was compiled from,
/// even when a reload brings a different body under the same id and
/// version (a restored backup, say).
#[test]
fn a_compiled_template_is_tied_to_its_body() {
    let mut data = dataset();
    data.templates = vec![template(20, TemplateScope::Family, "", "body A\n", 1)];
    let f = Fixture::new(data);
    assert_eq!(f.get(FILE), "body A\n");
    let mut data = dataset();
    data.templates = vec![template(20, TemplateScope::Family, "", "body B\n", 1)];
    f.mirror.reset(
        data,
        Cursor::default(),
        Meta::default(),
        LoadedFrom::Database,
    );
    assert_eq!(f.get(FILE), "body B\n");
}

#[test]
fn the_self_check_finds_a_corrupted_entry_and_drops_it() {
    let f = Fixture::new(dataset());
    let good = f.get(FILE);
    f.get("001565000002.cfg");
    let clean = f.provisioner.self_check(100);
    assert_eq!((clean.compared, clean.stale, clean.outdated), (2, 0, 0));

    let key = RenderKey {
        family: Family::Yealink,
        file: FILE.into(),
        phone: Some(1),
        model: None,
        directory: None,
    };
    let mut bad = f.provisioner.rendered.peek(&key).unwrap();
    bad.body = Arc::from(&b"# not what the template says\n"[..]);
    f.provisioner.rendered.put(key.clone(), bad);
    assert_ne!(f.get(FILE), good, "the corruption is served until found");

    let found = f.provisioner.self_check(100);
    assert_eq!((found.compared, found.stale), (2, 1), "{found:?}");
    assert_eq!(f.get(FILE), good);
    assert_eq!(f.provisioner.self_check(100).stale, 0);
}

/// A round renders outside the render pool, so it stops starting renders
/// when its time is spent; what it leaves is the next round's first.
#[test]
fn a_self_check_round_past_its_time_leaves_the_rest_for_the_next_pass() {
    let f = Fixture::new(dataset());
    f.apply(vec![Row::Phone(phone(3, "001565000003", "third"))]);
    for file in [FILE, "001565000002.cfg", "001565000003.cfg"] {
        f.get(file);
    }
    // Two of the three taken, neither visited: both are the next round's.
    let spent = f
        .provisioner
        .self_check_within(2, std::time::Duration::ZERO);
    assert_eq!((spent.compared, spent.skipped), (0, 2), "{spent:?}");
    let next = f.provisioner.self_check(2);
    assert_eq!((next.compared, next.skipped), (2, 0), "{next:?}");
    let last = f.provisioner.self_check(2);
    assert_eq!(last.compared, 1, "the pass's third: {last:?}");
}

#[test]
fn the_self_check_drops_outdated_entries_without_counting_them_stale() {
    let f = Fixture::new(dataset());
    f.get(FILE);
    f.apply(vec![Row::Line(line(1, 1, 1, "Edited"))]);
    let report = f.provisioner.self_check(100);
    assert_eq!((report.outdated, report.stale), (1, 0), "{report:?}");
    assert_eq!(f.provisioner.cached_files(), 0);
}

/// A SIGHUP that finds the shipped templates as they were (logrotate's)
/// keeps every rendered file; one that finds a change drops them.
#[test]
fn a_reload_of_unchanged_shipped_templates_keeps_rendered_files() {
    let f = Fixture::new(dataset());
    f.get(FILE);
    let cached = f.provisioner.cached_files();
    assert!(cached > 0);
    let (_, changed) = f.provisioner.reload_shipped().unwrap();
    assert!(!changed);
    assert_eq!(f.provisioner.cached_files(), cached);
    std::fs::write(
        f._dir.path().join("yealink/{mac}.cfg.tera"),
        "# shipped v2\n",
    )
    .unwrap();
    let (_, changed) = f.provisioner.reload_shipped().unwrap();
    assert!(changed);
    assert_eq!(f.provisioner.cached_files(), 0);
}

/// One tenant's template edits outdate only the files they could render:
/// another tenant's cached files stay hits.
#[test]
fn a_tenants_template_leaves_other_tenants_cached() {
    let mut data = dataset();
    data.tenants.push(Tenant {
        id: 2,
        slug: "globex".into(),
        ..tenant("Globex")
    });
    data.phones.push(Phone {
        tenant_id: 2,
        ..phone(3, "001565000003", "theirs")
    });
    let f = Fixture::new(data);
    let theirs = "001565000003.cfg";
    let request = Request {
        path: theirs,
        ..Default::default()
    };
    let before = f.provisioner.provision(&request).unwrap();
    for version in 1..=3 {
        f.apply(vec![Row::Template(template(
            30,
            TemplateScope::Tenant,
            "1",
            &format!("acme v{version}\n"),
            version,
        ))]);
        assert_eq!(f.get(FILE), format!("acme v{version}\n"));
        let after = f.provisioner.provision(&request).unwrap();
        assert!(
            Arc::ptr_eq(&before.body, &after.body),
            "acme's edit re-rendered globex's file"
        );
    }
}

/// A failed render is remembered like a file: only while its inputs are
/// current. A fix reaches the next fetch with no change stream followed,
/// and a failure rendered from an older state never sticks.
#[test]
fn a_failed_render_is_forgotten_when_its_inputs_change() {
    let f = Fixture::new(dataset());
    let request = Request {
        path: FILE,
        ..Default::default()
    };
    let broken = "{{ throw(message=\"broken\") }}";
    f.apply(vec![Row::Template(template(
        40,
        TemplateScope::Tenant,
        "1",
        broken,
        1,
    ))]);
    for _ in 0..2 {
        let failed = f.provisioner.provision(&request);
        assert!(
            matches!(failed, Err(ProvisionError::Render { .. })),
            "{failed:?}"
        );
    }
    f.apply(vec![Row::Template(template(
        40,
        TemplateScope::Tenant,
        "1",
        "fixed\n",
        2,
    ))]);
    assert_eq!(f.get(FILE), "fixed\n");
    // A failure from the state before the fix does not replace it.
    f.apply(vec![Row::Template(template(
        40,
        TemplateScope::Tenant,
        "1",
        broken,
        3,
    ))]);
    let current = f.mirror.load();
    f.apply(vec![Row::Template(template(
        40,
        TemplateScope::Tenant,
        "1",
        "fixed again\n",
        4,
    ))]);
    assert!(f.provisioner.provision_at(&current, &request).is_err());
    assert_eq!(f.get(FILE), "fixed again\n");
}

/// Compiled templates are counted by what they may hold, not by number,
/// and a template saved again takes its own entry's place: a tenant saving
/// a large template again and again (~5.8 MB counted each) once filled the
/// cache's bytes with versions nobody rendered any more.
#[test]
fn compiled_templates_are_kept_once_per_template() {
    let body = "a = b\n".repeat(40_000);
    let f = Fixture::new(dataset());
    for version in 1..=60 {
        let mut versioned = body.clone();
        versioned.push_str(&format!("version = {version}\n"));
        f.apply(vec![Row::Template(template(
            20,
            TemplateScope::Family,
            "",
            &versioned,
            version,
        ))]);
        assert!(f.get(FILE).ends_with(&format!("version = {version}\n")));
    }
    let compiled = f.provisioner.compiled.settled();
    let capacity = ProvisionOptions::default().compiled_cache_bytes;
    assert!(
        compiled.weighted_size() <= capacity,
        "{} of {capacity}",
        compiled.weighted_size()
    );
    assert_eq!(compiled.entry_count(), 1);
}

//! What one tenant can hold of the render cache, and that the bytes the
//! share reckons per tenant always match the entries the cache holds.

use std::collections::HashMap;
use std::sync::Arc;

use dialtone_sync::*;

use crate::provision::{ProvisionOptions, Provisioner, Rendered, Request};
use crate::templates::Shipped;

const CFG: &str = "#!version:1.0.0.1\n\
{% for line in lines %}account.{{ line.position }}.display_name = {{ line.display_name }}\n{% endfor %}\
label = {{ phone.label }}\n";

/// Small enough that a few dozen phones' files fill it.
const CACHE_BYTES: u64 = 32 << 10;

fn tenant(id: Id, slug: &str) -> Tenant {
    Tenant {
        id,
        slug: slug.into(),
        name: slug.into(),
        default_region: "US".into(),
        settings: "{}".into(),
        updated_at: 1,
    }
}

fn phone(id: Id, tenant_id: Id) -> Phone {
    Phone {
        id,
        tenant_id,
        mac: format!("0015650{id:05x}").parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: Some(format!("desk {id}, {}", "x".repeat(200)).into()),
        variables: "{}".into(),
        http_user: None,
        http_password: None,
        updated_at: 1,
    }
}

fn line(phone_id: Id) -> Line {
    Line {
        id: phone_id,
        phone_id,
        position: 1,
        extension: format!("{}", 100 + phone_id).into(),
        display_name: format!("Person {phone_id}").into(),
        auth_user: format!("u{phone_id}").into(),
        password: None,
        registrar: "sip.example.net".into(),
        proxy: None,
        settings: "{}".into(),
        updated_at: 1,
    }
}

/// Phones 1 to 30 of tenant 1 fill over half the cache.
const QUIET: std::ops::RangeInclusive<Id> = 1..=30;
/// Tenant 2's, ten times the cache.
const BUSY: std::ops::RangeInclusive<Id> = 31..=330;

fn fixture() -> (tempfile::TempDir, Arc<Mirror>, Provisioner) {
    let phones: Vec<Phone> = (1..=330)
        .map(|id| phone(id, if QUIET.contains(&id) { 1 } else { 2 }))
        .collect();
    let data = Dataset {
        tenants: vec![tenant(1, "small"), tenant(2, "big")],
        lines: phones.iter().map(|p| line(p.id)).collect(),
        phones,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("yealink")).unwrap();
    std::fs::write(dir.path().join("yealink/{mac}.cfg.tera"), CFG).unwrap();
    let mirror = dialtone_sync::testing::build::mirror_of(data);
    let provisioner = Provisioner::new(
        mirror.clone(),
        dialtone_sync::testing::test_key(),
        Shipped::load(dir.path(), 1).unwrap(),
        ProvisionOptions {
            render_cache_bytes: CACHE_BYTES,
            ..Default::default()
        },
    );
    (dir, mirror, provisioner)
}

fn fetch(provisioner: &Provisioner, id: Id) -> Rendered {
    let path = format!("0015650{id:05x}.cfg");
    provisioner
        .provision(&Request {
            path: &path,
            ..Default::default()
        })
        .unwrap()
}

fn key_of(id: Id) -> crate::render_cache::RenderKey {
    crate::render_cache::RenderKey {
        family: Family::Yealink,
        file: format!("0015650{id:05x}.cfg").into(),
        phone: Some(id),
        model: None,
        directory: None,
    }
}

/// The bytes per tenant the cache's entries weigh, counted afresh.
fn recount(provisioner: &Provisioner) -> HashMap<Id, u64> {
    let files = provisioner.rendered.files();
    // Entries past the bound are evicted by pending housekeeping.
    files.weighted_size();
    let mut held = HashMap::new();
    for key in files.keys() {
        if let Some(file) = files.peek_main(&key) {
            let tenant = file
                .inputs
                .as_ref()
                .unwrap()
                .phone
                .as_ref()
                .unwrap()
                .tenant_id;
            *held.entry(tenant).or_default() += u64::from(crate::render_files::weight(&key, &file));
        }
    }
    held
}

/// A tenant asking for its phones' files again and again (which raises
/// them in the cache's frequency sketch above a quiet tenant's) pushed
/// the quiet tenant's files out, to be rendered anew at their next
/// fetch. Once the cache is full, the busy tenant grows to its fair part
/// (half, with two tenants holding any) and no further: past it, its own
/// oldest entries make room for its new ones, so it still keeps a file it
/// asks for again.
#[test]
fn a_busy_tenant_does_not_push_a_quiet_ones_files_out() {
    let (_dir, _mirror, provisioner) = fixture();
    let quiet: Vec<Rendered> = QUIET.map(|id| fetch(&provisioner, id)).collect();
    for id in QUIET {
        fetch(&provisioner, id);
    }
    let files = provisioner.rendered.files();
    assert!(files.held_by(1) > CACHE_BYTES / 2, "{}", files.held_by(1));
    let hot = *BUSY.end();
    for _round in 0..4 {
        for id in BUSY.filter(|id| *id != hot) {
            fetch(&provisioner, id);
        }
    }
    // Looked at, not fetched: a fetch that missed would render and keep
    // its file in the place of another of the quiet tenant's.
    let kept = QUIET
        .zip(&quiet)
        .filter(|(id, before)| {
            provisioner
                .rendered
                .peek(&key_of(*id))
                .is_some_and(|now| Arc::ptr_eq(&before.body, &now.body))
        })
        .count();
    // Half the main store (15/16 of the cache) is about 25 of them.
    assert!(kept >= 20, "only {kept} of the quiet tenant's files stayed");
    let fair = CACHE_BYTES * 15 / 16 / 2;
    assert!(
        files.held_by(2) <= fair + 1024,
        "{} > {fair}",
        files.held_by(2)
    );
    // Over its part, the busy tenant still keeps what it asks for again.
    let first = fetch(&provisioner, hot);
    assert!(Arc::ptr_eq(&first.body, &fetch(&provisioner, hot).body));
    assert!(files.weighted_size() <= CACHE_BYTES);
    assert_eq!(recount(&provisioner), files.held());
}

/// A tenant alone on a node fills the whole cache, and a full cache still
/// takes its new files: the share holds a tenant back only while others
/// hold a quarter. (Held back regardless, a one-tenant node's cache never
/// took a file again once full.)
#[test]
fn a_tenant_alone_keeps_filling_a_full_cache() {
    let (_dir, _mirror, provisioner) = fixture();
    let hot = *BUSY.end();
    for id in BUSY.filter(|id| *id != hot) {
        fetch(&provisioner, id);
    }
    let files = provisioner.rendered.files();
    assert!(files.held_by(2) > CACHE_BYTES / 2);
    // A phone new to the cache, fetched again and again, is kept, full as
    // the cache is.
    let mut kept = false;
    for _ in 0..20 {
        let first = fetch(&provisioner, hot);
        kept = Arc::ptr_eq(&first.body, &fetch(&provisioner, hot).body);
        if kept {
            break;
        }
    }
    assert!(kept, "a full cache took no file of its only tenant");
    assert_eq!(recount(&provisioner), files.held());
}

/// The share reckoning follows every way an entry leaves: replaced by an
/// edit's render, dropped by the change stream, evicted, cleared.
#[test]
fn what_a_tenant_holds_is_reckoned_as_entries_come_and_go() {
    let (_dir, mirror, provisioner) = fixture();
    for id in (1..=330).chain(1..=40) {
        fetch(&provisioner, id);
    }
    let files = provisioner.rendered.files();
    files.weighted_size();
    assert_eq!(recount(&provisioner), files.held());
    assert!(!files.held().is_empty());

    // An edit of tenant 2's phones: the change stream drops their files,
    // and the next fetches render and keep them again.
    let current = mirror.load();
    let edits: Vec<_> = (31..=50)
        .map(|id| {
            let mut p = phone(id, 2);
            p.label = Some("moved".into());
            (Entity::Phone, id, Some(Row::Phone(p)))
        })
        .collect();
    let mut events = mirror.subscribe();
    mirror.apply(edits, current.cursor(), current.meta().clone());
    while let Ok(event) = events.try_recv() {
        provisioner.invalidate(&event);
    }
    for id in 31..=50 {
        fetch(&provisioner, id);
    }
    files.weighted_size();
    assert_eq!(recount(&provisioner), files.held());

    assert_eq!(files.held_total(), files.weighted_size());

    provisioner.clear_render_cache();
    files.weighted_size();
    assert!(files.held().is_empty(), "{:?}", files.held());
    assert_eq!(files.held_total(), 0);
}

/// A file of `tenant`'s phone `id`, `size` bytes long.
fn file_of(tenant: Id, id: Id, size: usize) -> (crate::render_cache::RenderKey, Rendered) {
    let inputs = crate::render_inputs::Inputs {
        family: Family::Yealink,
        template: "{mac}.cfg",
        phone: Some(Arc::new(phone(id, tenant))),
        tenant: None,
        line_ids: None,
        templates: [0; 4],
        shipped: 0,
        model: None,
        directory: None,
    };
    let file = Rendered {
        body: Arc::from(vec![b'x'; size]),
        etag: Arc::from(""),
        content_type: "text/plain",
        kind: crate::identify::FileKind::DeviceConfig,
        family: Some(Family::Yealink),
        file: None,
        inputs: Some(Arc::new(inputs)),
        unproven: None,
    };
    (key_of(id), file)
}

/// Past its part, a tenant's file too large for its oldest entries to
/// make room for is not kept, and costs none of them; one they can make
/// room for takes the place of as few as it needs.
#[test]
fn a_file_its_oldest_cannot_make_room_for_costs_them_nothing() {
    let files = crate::render_files::Files::new(64 << 10);
    let fill = |tenant, id, size| {
        let (key, file) = file_of(tenant, id, size);
        assert!(files.admits(&key, &file, false));
        files.insert(key, file, false);
    };
    // Two tenants, the cache full: tenant 2 well past its half.
    for id in 1..=20 {
        fill(1, id, 512);
    }
    for id in 100..=200 {
        fill(2, id, 512);
    }
    let before = files.entry_count();
    assert!(files.held_by(2) > files.held_total() / 2);

    let (key, huge) = file_of(2, 500, 200 << 10);
    assert!(!files.admits(&key, &huge, false));
    assert_eq!(files.entry_count(), before, "entries dropped for nothing");

    let (key, small) = file_of(2, 501, 512);
    assert!(files.admits(&key, &small, false));
    files.insert(key.clone(), small, false);
    assert!(
        files.entry_count() >= before - 2,
        "{} of {before}",
        files.entry_count()
    );
    assert!(files.get(&key).is_some());
    assert_eq!(files.held_by(1), 20 * (512 + 256 + key.file.len() as u64));
}

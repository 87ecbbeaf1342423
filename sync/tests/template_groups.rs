//! The mirror's templates by owner (`templates_of`, `template_count`,
//! `platform_templates`) against what `template_tenant` says of every
//! template, through loads and batches that create, delete and rekey
//! templates and move, swap and delete the phones that phone-scope
//! templates follow.

use std::collections::BTreeMap;

use dialtone_sync::model::*;
use dialtone_sync::*;

const TENANTS: [Id; 3] = [1, 2, 3];

/// MACs the random batches use: few, so that phones share them.
const MACS: u64 = 4;

fn mac(n: u64) -> Mac {
    format!("{:012x}", 0x0015_6500_0000 + n).parse().unwrap()
}

fn tenant(id: Id) -> Row {
    Row::Tenant(Tenant {
        id,
        slug: format!("t{id}").into(),
        name: format!("Tenant {id}").into(),
        default_region: "GB".into(),
        settings: "{}".into(),
        updated_at: 1,
    })
}

fn phone(id: Id, tenant_id: Id, mac_n: u64) -> Row {
    phone_at(id, tenant_id, mac_n, 1)
}

fn phone_at(id: Id, tenant_id: Id, mac_n: u64, updated_at: Millis) -> Row {
    Row::Phone(Phone {
        updated_at,
        ..testing::build::phone_row(id, tenant_id, mac(mac_n), Family::Yealink)
    })
}

fn template(id: Id, scope: TemplateScope, scope_key: &str) -> Row {
    Row::Template(Template {
        id,
        scope,
        family: Family::Yealink,
        scope_key: scope_key.into(),
        file_pattern: format!("f{id}.cfg").into(),
        body: "x\n".into(),
        version: 1,
        updated_by: "test".into(),
        updated_at: 1,
    })
}

fn tenant_template(id: Id, tenant: Id) -> Row {
    template(id, TemplateScope::Tenant, &tenant.to_string())
}

fn phone_template(id: Id, mac_n: u64) -> Row {
    template(id, TemplateScope::Phone, &mac(mac_n).to_string())
}

/// Each tenant's template ids by the index, checked against a walk of
/// every template; the platform group against the family and model ones.
fn grouped(state: &MirrorState) -> BTreeMap<Id, Vec<Id>> {
    let mut groups = BTreeMap::new();
    for t in TENANTS {
        let listed: Vec<Id> = state.templates_of(t).map(|x| x.id).collect();
        let mut walked: Vec<Id> = state
            .templates()
            .filter(|x| state.template_tenant(x) == Some(t))
            .map(|x| x.id)
            .collect();
        walked.sort_unstable();
        assert_eq!(listed, walked, "tenant {t}'s templates");
        assert_eq!(state.template_count(t), listed.len(), "tenant {t}'s count");
        groups.insert(t, listed);
    }
    let platform: Vec<Id> = state.platform_templates().map(|x| x.id).collect();
    let mut walked: Vec<Id> = state
        .templates()
        .filter(|x| matches!(x.scope, TemplateScope::Family | TemplateScope::Model))
        .map(|x| x.id)
        .collect();
    walked.sort_unstable();
    assert_eq!(platform, walked, "the platform's templates");
    groups
}

fn apply(mirror: &Mirror, batch: Vec<(Entity, Id, Option<Row>)>) {
    let state = mirror.load();
    mirror.apply(batch, state.cursor(), state.meta().clone());
}

fn ids_of(mirror: &Mirror, tenant: Id) -> Vec<Id> {
    grouped(&mirror.load()).remove(&tenant).unwrap()
}

#[test]
fn templates_follow_their_keys_and_their_phones() {
    let mut data = Dataset::default();
    for t in TENANTS {
        data.push(tenant(t));
    }
    // Phone 10 (tenant 1) has MAC 1; phone 20 (tenant 2) MAC 2.
    data.push(phone(10, 1, 1));
    data.push(phone(20, 2, 2));
    data.push(template(100, TemplateScope::Family, ""));
    data.push(template(101, TemplateScope::Model, "T46S"));
    data.push(tenant_template(102, 1));
    data.push(phone_template(103, 1));
    // No phone has MAC 3 yet: the template is nobody's.
    data.push(phone_template(104, 3));
    let mirror = testing::build::mirror_of(data);
    assert_eq!(ids_of(&mirror, 1), [102, 103], "as loaded");
    assert_eq!(ids_of(&mirror, 2), Vec::<Id>::new());

    // A new template, and one rekeyed to another tenant, and a phone's
    // template rekeyed to another phone.
    apply(
        &mirror,
        vec![
            (Entity::Template, 105, Some(tenant_template(105, 2))),
            (Entity::Template, 102, Some(tenant_template(102, 3))),
            (Entity::Template, 103, Some(phone_template(103, 2))),
        ],
    );
    assert_eq!(ids_of(&mirror, 1), Vec::<Id>::new());
    assert_eq!(ids_of(&mirror, 2), [103, 105]);
    assert_eq!(ids_of(&mirror, 3), [102]);

    // Phone 20 moves to tenant 3: its template goes along.
    apply(&mirror, vec![(Entity::Phone, 20, Some(phone(20, 3, 2)))]);
    assert_eq!(ids_of(&mirror, 2), [105]);
    assert_eq!(ids_of(&mirror, 3), [102, 103]);

    // Phone 10 is swapped to MAC 3: the template of MAC 3 becomes its
    // tenant's; then phone 20 is deleted, and its template is nobody's.
    apply(&mirror, vec![(Entity::Phone, 10, Some(phone(10, 1, 3)))]);
    assert_eq!(ids_of(&mirror, 1), [104]);
    apply(&mirror, vec![(Entity::Phone, 20, None)]);
    assert_eq!(ids_of(&mirror, 3), [102]);
    // A new phone of MAC 2 takes the template that waited for it.
    apply(&mirror, vec![(Entity::Phone, 30, Some(phone(30, 2, 2)))]);
    assert_eq!(ids_of(&mirror, 2), [103, 105]);

    // Deleted templates leave their groups.
    apply(
        &mirror,
        vec![(Entity::Template, 103, None), (Entity::Template, 101, None)],
    );
    assert_eq!(ids_of(&mirror, 2), [105]);
    let state = mirror.load();
    assert_eq!(
        state.platform_templates().map(|t| t.id).collect::<Vec<_>>(),
        [100]
    );
    assert_eq!(
        state
            .templates_within(Some(2))
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        [105]
    );
    assert_eq!(
        state.templates_within(None).count(),
        state.counts().templates
    );

    // Two phones of one MAC, a swap half applied: the one written last is
    // the one the MAC finds, even by a write that changes neither its MAC
    // nor its tenant.
    apply(&mirror, vec![(Entity::Phone, 40, Some(phone(40, 3, 3)))]);
    assert_eq!(ids_of(&mirror, 1), Vec::<Id>::new());
    assert_eq!(ids_of(&mirror, 3), [102, 104]);
    apply(
        &mirror,
        vec![(Entity::Phone, 10, Some(phone_at(10, 1, 3, 2)))],
    );
    assert_eq!(ids_of(&mirror, 1), [104]);
    assert_eq!(ids_of(&mirror, 3), [102]);
}

/// Random batches over few MACs, so that phones share a MAC for a while
/// (a swap half applied) and templates wait for phones: after each batch,
/// and after a reload of the same rows, the index is what a walk says.
#[test]
fn random_batches_keep_the_index_as_a_walk_finds_it() {
    let mut data = Dataset::default();
    for t in TENANTS {
        data.push(tenant(t));
    }
    let mirror = testing::build::mirror_of(data);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..1_000 {
        let mut batch = Vec::new();
        for _ in 0..(1 + next() % 6) {
            let r = next();
            let id = 1 + (r >> 8) as Id % 12;
            let owner = 1 + (r >> 16) as Id % 3;
            let mac_n = (r >> 24) % MACS;
            match r % 7 {
                // Sometimes only another field changes: while another phone
                // holds the MAC too, that write alone decides which of them
                // the MAC finds.
                0 | 1 => {
                    let row = phone_at(id, owner, mac_n, 1 + (r >> 32) as Millis % 3);
                    batch.push((Entity::Phone, id, Some(row)));
                }
                2 => batch.push((Entity::Phone, id, None)),
                3 => batch.push((
                    Entity::Template,
                    100 + id,
                    Some(phone_template(100 + id, mac_n)),
                )),
                4 => batch.push((
                    Entity::Template,
                    100 + id,
                    Some(tenant_template(100 + id, owner)),
                )),
                5 => batch.push((
                    Entity::Template,
                    100 + id,
                    Some(template(100 + id, TemplateScope::Family, "")),
                )),
                _ => batch.push((Entity::Template, 100 + id, None)),
            }
        }
        apply(&mirror, batch);
        let state = mirror.load();
        let applied = grouped(&state);
        let reloaded = MirrorState::build(state.to_dataset(), state.cursor(), Meta::default(), 1);
        // A reload of two phones of one MAC keeps either for it: compare
        // only where the MAC finds the same phone.
        let same_macs = (0..MACS).all(|n| {
            state.phone_by_mac(&mac(n)).map(|p| p.id)
                == reloaded.phone_by_mac(&mac(n)).map(|p| p.id)
        });
        let rebuilt = grouped(&reloaded);
        if same_macs {
            assert_eq!(rebuilt, applied, "a reload groups as the batches did");
        }
    }
}

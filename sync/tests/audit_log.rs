//! The audit log on both backends: a tenant's filtered reads, and the
//! retention that keeps the table (and those reads) bounded.

#[macro_use]
mod common;

use std::time::Duration;

use dialtone_sync::testing::build::{audit, tenant};
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

fn by(actor: &str, tenant: &str, entity: &str) -> Audit {
    Audit {
        tenant: Some(tenant.into()),
        actor: actor.into(),
        entity: entity.into(),
        ..audit("edit")
    }
}

/// A settings-only tenant edit, audited as `how`.
async fn edit(store: &dyn Store, slug: &str, how: Audit) {
    store.apply(&[tenant(slug, "US")], &how).await.unwrap();
}

both_backends!(audit_filters_keep_to_the_tenant, filters_body);
async fn filters_body(db: TestDb) {
    let store = db.store().await;
    edit(&*store, "acme", audit("setup")).await;
    edit(&*store, "globex", audit("setup")).await;
    let (data, _, _) = store.load_all().await.unwrap();
    let id = |slug: &str| data.tenants.iter().find(|t| &*t.slug == slug).unwrap().id;
    for round in 0..5 {
        edit(&*store, "acme", by("alice", "acme", "phone")).await;
        edit(&*store, "acme", by("bob", "acme", "template")).await;
        edit(&*store, "globex", by("alice", "globex", "phone")).await;
        if round == 0 {
            edit(&*store, "acme", by("carol", "acme", "tenant")).await;
        }
    }
    let read = |entity: Option<&str>, actor: Option<&str>, before_id| AuditQuery {
        tenant_id: Some(id("acme")),
        entity: entity.map(str::to_string),
        actor: actor.map(str::to_string),
        before_id,
        limit: 3,
        ..AuditQuery::default()
    };
    let phones = store
        .audit_log(&read(Some("phone"), None, None))
        .await
        .unwrap();
    assert_eq!(phones.len(), 3);
    assert!(phones
        .iter()
        .all(|r| r.entity == "phone" && r.tenant.as_deref() == Some("acme")));
    let rest = store
        .audit_log(&read(Some("phone"), None, Some(phones[2].id)))
        .await
        .unwrap();
    assert_eq!(rest.len(), 2, "five of acme's rows are of phones");
    assert!(rest[0].id < phones[2].id);
    let carol = store
        .audit_log(&read(None, Some("carol"), None))
        .await
        .unwrap();
    assert_eq!(carol.len(), 1);
    assert_eq!(carol[0].entity, "tenant");
    let both = store
        .audit_log(&read(Some("phone"), Some("bob"), None))
        .await
        .unwrap();
    assert!(both.is_empty(), "{both:?}");
}

both_backends!(audit_rows_past_their_retention_go, retention_body);
async fn retention_body(db: TestDb) {
    let store = db.store().await;
    edit(&*store, "acme", by("alice", "acme", "old")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    edit(&*store, "acme", by("alice", "acme", "new")).await;
    let pruned = store.prune_audit(Duration::from_millis(400)).await.unwrap();
    assert_eq!(pruned, 1);
    let left = store
        .audit_log(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let entities: Vec<&str> = left.iter().map(|r| &*r.entity).collect();
    assert_eq!(entities, ["new"]);
    // A retention longer than the rows' age keeps them all.
    assert_eq!(
        store.prune_audit(Duration::from_secs(3600)).await.unwrap(),
        0
    );
}

// Phones moved to another tenant leave a `move_out` row in the audit view
// of the tenant they left, one per write, counting them: by an import's
// bulk path and one by one alike, naming neither the new tenant nor the
// import's file.
both_backends!(moves_leave_a_row_for_the_tenant_left, moves_body);
async fn moves_body(db: TestDb) {
    let store = db.store().await;
    edit(&*store, "acme", audit("setup")).await;
    edit(&*store, "globex", audit("setup")).await;
    let (data, _, _) = store.load_all().await.unwrap();
    let id = |slug: &str| data.tenants.iter().find(|t| &*t.slug == slug).unwrap().id;
    let phones: Vec<store::PhoneInput> = (0..300)
        .map(
            |n| match dialtone_sync::testing::build::phone("acme", n, 1) {
                Mutation::UpsertPhone(p) => p,
                _ => unreachable!("a phone"),
            },
        )
        .collect();
    let run = |phones: &[store::PhoneInput], to: &str| {
        let moved: Vec<store::PhoneInput> = phones
            .iter()
            .cloned()
            .map(|mut p| {
                p.tenant = to.into();
                p
            })
            .collect();
        [Mutation::UpsertPhones(moved.iter().collect())]
    };
    store
        .apply(&run(&phones, "acme"), &audit("import"))
        .await
        .unwrap();
    let import = Audit {
        entity: "import".into(),
        entity_key: "globex-onboarding.csv".into(),
        ..audit("import")
    };
    // 250 in one run go the bulk way; 3 go one by one.
    store
        .apply(&run(&phones[..250], "globex"), &import)
        .await
        .unwrap();
    store
        .apply(&run(&phones[250..253], "globex"), &import)
        .await
        .unwrap();
    let rows = |tenant| AuditQuery {
        tenant_id: Some(tenant),
        limit: 50,
        ..AuditQuery::default()
    };
    let acme = store.audit_log(&rows(id("acme"))).await.unwrap();
    let mut moved: Vec<u64> = acme
        .iter()
        .filter(|r| r.action == "move_out")
        .map(|r| {
            let shown = r.summary.to_string() + &r.entity_key;
            assert!(!shown.contains("globex"), "{shown}");
            assert_eq!(r.tenant.as_deref(), Some("acme"));
            r.summary["detail"]["phones"].as_u64().unwrap()
        })
        .collect();
    moved.sort_unstable();
    assert_eq!(moved, [3, 250]);
    let globex = store.audit_log(&rows(id("globex"))).await.unwrap();
    assert!(globex.iter().all(|r| r.action != "move_out"), "{globex:?}");
}

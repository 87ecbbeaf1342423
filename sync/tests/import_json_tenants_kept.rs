//! A JSON tenant that leaves out `default_region` or `settings` keeps what
//! is stored there, as a tenants CSV without the column does: renaming a
//! tenant must not drop its provisioning networks, which would open its
//! phones to fetches from anywhere. On SQLite and PostgreSQL.

#[macro_use]
mod common;

use common::*;
use dialtone_sync::import::plan_text;
use dialtone_sync::store::{Store, WriteReport};
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

const SETTINGS: &str = r#"{"provisioning_networks":["10.1.0.0/16"],"quotas":{"phones":5}}"#;

/// Plans `json` and, when the plan asks for them, gives it the tenants as
/// stored, as `dialtone import` and the admin API do; then applies it.
async fn import(store: &dyn Store, json: &str) -> Result<WriteReport, SyncError> {
    let mut plan = plan_text("tenants.json", true, json);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    if plan.keeps_stored_tenants() {
        let stored = db_rows(store).await;
        plan.keep_stored_tenants(|slug| stored.tenants.iter().find(|t| &*t.slug == slug));
    }
    store.apply(&plan.take_mutations(), &audit("import")).await
}

/// Each tenant's slug, name, region and settings.
async fn tenants(store: &dyn Store) -> Vec<(String, String, String, String)> {
    (db_rows(store).await.tenants.iter())
        .map(|t| {
            (
                t.slug.to_string(),
                t.name.to_string(),
                t.default_region.to_string(),
                t.settings.to_string(),
            )
        })
        .collect()
}

fn t(slug: &str, name: &str, region: &str, settings: &str) -> (String, String, String, String) {
    (slug.into(), name.into(), region.into(), settings.into())
}

both_backends!(a_renaming_json_keeps_settings_and_region, renaming_body);
async fn renaming_body(db: TestDb) {
    let store = db.store().await;
    let full = format!(
        r#"{{"tenants":[
            {{"slug":"acme","name":"Acme","default_region":"GB","settings":{SETTINGS}}},
            {{"slug":"globex","name":"Globex","default_region":"DE","settings":{{}}}}
        ]}}"#
    );
    import(&*store, &full).await.unwrap();

    let rename = r#"{"tenants":[
        {"slug":"acme","name":"Acme renamed"},
        {"slug":"globex","name":"Globex renamed"},
        {"slug":"initech","name":"Initech"}
    ]}"#;
    let report = import(&*store, rename).await.unwrap();
    assert_eq!(
        (report.tenants.updated, report.tenants.inserted),
        (2, 1),
        "{report:?}"
    );
    let renamed = [
        t("acme", "Acme renamed", "GB", SETTINGS),
        t("globex", "Globex renamed", "DE", "{}"),
        t("initech", "Initech", "US", "{}"),
    ];
    assert_eq!(tenants(&*store).await, renamed);

    // The same file again writes nothing.
    let again = import(&*store, rename).await.unwrap();
    assert_eq!(again.changed(), 0, "{again:?}");
    assert_eq!(again.tenants.unchanged, 3, "{again:?}");
    assert_eq!(tenants(&*store).await, renamed);

    // Settings given, even empty, replace; the region left out is kept.
    import(
        &*store,
        r#"{"tenants":[{"slug":"acme","name":"Acme","settings":{}}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(tenants(&*store).await[0], t("acme", "Acme", "GB", "{}"));
}

both_backends!(each_tenant_object_keeps_what_it_leaves_out, mixed_body);
async fn mixed_body(db: TestDb) {
    let store = db.store().await;
    let full = format!(
        r#"{{"tenants":[
            {{"slug":"acme","name":"Acme","default_region":"GB","settings":{SETTINGS}}},
            {{"slug":"globex","name":"Globex","default_region":"DE","settings":{SETTINGS}}}
        ]}}"#
    );
    import(&*store, &full).await.unwrap();
    // One object gives settings and leaves out its region, the other the
    // reverse: each keeps what it leaves out, and takes what it gives.
    let mixed = r#"{"tenants":[
        {"slug":"acme","name":"Acme","settings":{}},
        {"slug":"globex","name":"Globex","default_region":"FR"}
    ]}"#;
    import(&*store, mixed).await.unwrap();
    assert_eq!(
        tenants(&*store).await,
        [
            t("acme", "Acme", "GB", "{}"),
            t("globex", "Globex", "FR", SETTINGS),
        ]
    );
}

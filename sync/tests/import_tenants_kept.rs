//! A tenants CSV that leaves a column out keeps what is stored for it: a
//! file of `slug,name` renames tenants and leaves their settings (quotas,
//! provisioning networks, SIP domains) and region as they are. A new
//! tenant takes the defaults. On SQLite and PostgreSQL.

#[macro_use]
mod common;

use common::*;
use dialtone_sync::import::plan_text;
use dialtone_sync::store::{Store, WriteReport};
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

const SETTINGS: &str = r#"{"provisioning_networks":["10.1.0.0/16"],"quotas":{"phones":5}}"#;

/// Plans `csv`, takes what it keeps from the tenants as stored, as
/// `dialtone import` does, and applies it.
async fn import(store: &dyn Store, csv: &str) -> Result<WriteReport, SyncError> {
    let mut plan = plan_text("tenants.csv", false, csv);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let stored = db_rows(store).await;
    plan.keep_stored_tenants(|slug| stored.tenants.iter().find(|t| &*t.slug == slug));
    store.apply(&plan.take_mutations(), &audit("import")).await
}

/// Each tenant's name, region and settings, by slug.
async fn tenants(store: &dyn Store) -> Vec<(String, String, String, String)> {
    (db_rows(store).await.tenants.iter())
        .map(|t| {
            let text = |s: &str| s.to_string();
            (
                text(&t.slug),
                text(&t.name),
                text(&t.default_region),
                text(&t.settings),
            )
        })
        .collect()
}

both_backends!(a_renaming_csv_keeps_settings_and_region, renaming_body);
async fn renaming_body(db: TestDb) {
    let store = db.store().await;
    let full = format!(
        "slug,name,default_region,settings\n\
         acme,Acme,GB,\"{}\"\n\
         globex,Globex,DE,\n",
        SETTINGS.replace('"', "\"\"")
    );
    import(&*store, &full).await.unwrap();

    let report = import(
        &*store,
        "slug,name\nacme,Acme Renamed\nglobex,Globex Renamed\ninitech,Initech\n",
    )
    .await
    .unwrap();
    assert_eq!(
        (report.tenants.updated, report.tenants.inserted),
        (2, 1),
        "{report:?}"
    );
    let t = |slug: &str, name: &str, region: &str, settings: &str| {
        (slug.into(), name.into(), region.into(), settings.into())
    };
    assert_eq!(
        tenants(&*store).await,
        [
            t("acme", "Acme Renamed", "GB", SETTINGS),
            t("globex", "Globex Renamed", "DE", "{}"),
            t("initech", "Initech", "US", "{}"),
        ]
    );

    // A column given is written, one left out still kept.
    import(&*store, "slug,name,settings\nacme,Acme,\n")
        .await
        .unwrap();
    assert_eq!(tenants(&*store).await[0], t("acme", "Acme", "GB", "{}"));
}

both_backends!(
    a_tenant_changed_after_it_was_read_fails_the_import,
    changed_body
);
async fn changed_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "GB")], &audit("setup"))
        .await
        .unwrap();
    let mut plan = plan_text("tenants.csv", false, "slug,name\nacme,Acme Renamed\n");
    let read = db_rows(&*store).await;
    plan.keep_stored_tenants(|slug| read.tenants.iter().find(|t| &*t.slug == slug));
    // Changed between the read and the write: its region must not be put
    // back by the rename.
    store
        .apply(&[tenant("acme", "FR")], &audit("edit"))
        .await
        .unwrap();
    let refused = store.apply(&plan.take_mutations(), &audit("import")).await;
    assert!(
        matches!(refused, Err(SyncError::Conflict(_))),
        "{refused:?}"
    );
    let after = &tenants(&*store).await[0];
    assert_eq!((after.1.as_str(), after.2.as_str()), ("acme Ltd", "FR"));
}

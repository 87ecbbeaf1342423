//! Exports of a small fleet written through the store and read back by
//! the import's own parse: every row comes back as it was stored, in
//! both formats, and what a format cannot carry is refused by name.

use super::*;
use crate::import::plan_text;
use crate::store::{Mutation, PhoneInput, Store};
use crate::testing::build::*;
use crate::testing::{test_key, TestDb};
use crate::{watcher, DirectoryNumber, Mirror, SourceKind};

async fn stored(mutations: &[Mutation]) -> (TestDb, Arc<dyn Store>, Arc<MirrorState>) {
    let db = TestDb::sqlite();
    let store = db.store().await;
    store.apply(mutations, &audit("seed")).await.unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    (db, store, mirror.load())
}

fn fleet() -> Vec<Mutation> {
    let mut fleet = vec![tenant("globex", "GB"), tenant("acme", "US")];
    // Out of MAC order, and one without lines.
    for (tenant, n, lines) in [("acme", 7, 2), ("globex", 3, 1), ("acme", 2, 0)] {
        fleet.push(phone(tenant, n, lines));
    }
    if let Some(Mutation::UpsertPhone(p)) = fleet.get_mut(2) {
        p.label = Some("Front, \"main\" desk".into());
        p.http_user = Some("admin".into());
        p.http_password = Some(" spaced ".into());
        p.variables = r#"{"tz":"Europe/London"}"#.into();
        p.lines[1].proxy = Some("edge.example.net".into());
        p.lines[1].settings = r#"{"blf":["101"]}"#.into();
    }
    fleet.push(entry("acme", "42", "Alice Example", &["+1 555 0100"]));
    fleet.push(entry("acme", "name:bob", "Bob", &["+1 555 0101"]));
    fleet.push(source(
        "acme",
        "ad",
        SourceKind::Ldap,
        serde_json::json!({"url": "ldap://127.0.0.1:1/", "base_dn": "dc=example"}),
        Some("bind pw"),
        250,
    ));
    fleet
}

fn export_json(state: &MirrorState, slugs: &[String]) -> (String, Exported) {
    let selection = Selection::new(state, slugs).unwrap();
    let mut out = Vec::new();
    let exported = write_json(&selection, &test_key(), &Kind::ALL, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), exported)
}

fn export_csv(state: &MirrorState, kind: Kind) -> Result<String, SyncError> {
    let selection = Selection::new(state, &[])?;
    let mut out = Vec::new();
    write_csv(&selection, &test_key(), kind, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn planned(name: &str, json: bool, text: &str) -> Vec<Mutation> {
    let mut plan = plan_text(name, json, text);
    let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors, Vec::<String>::new(), "{text}");
    plan.take_mutations()
}

fn phones_of(mutations: &[Mutation]) -> Vec<PhoneInput> {
    let mut phones: Vec<PhoneInput> = (mutations.iter())
        .flat_map(|m| match m {
            Mutation::UpsertPhone(p) => vec![p.clone()],
            Mutation::UpsertPhones(batch) => batch.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    phones.sort_by_key(|p| p.mac);
    phones
}

#[tokio::test]
async fn json_export_reads_back_as_stored_and_reimports_as_no_change() {
    let seeded = fleet();
    let (_db, store, state) = stored(&seeded).await;
    let (text, exported) = export_json(&state, &[]);
    assert_eq!(
        (exported.tenants, exported.phones, exported.lines),
        (2, 3, 3)
    );
    assert_eq!(
        (exported.directory_entries, exported.directory_sources),
        (2, 1)
    );
    assert_eq!(exported.drift, Drift::default());
    // Fixed order: tenants by slug, phones by tenant then MAC.
    let acme = text.find("\"slug\":\"acme\"").unwrap();
    assert!(acme < text.find("\"slug\":\"globex\"").unwrap(), "{text}");
    let first = text.find("001565000002").unwrap();
    assert!(first < text.find("001565000007").unwrap());
    assert!(text.find("001565000007").unwrap() < text.find("001565000003").unwrap());
    // The derived key of an entry given without an id is left to the import.
    assert!(!text.contains("name:bob"), "{text}");

    let back = planned("export.json", true, &text);
    assert_eq!(phones_of(&back), phones_of(&seeded));
    for m in &seeded {
        if !matches!(m, Mutation::UpsertPhone(_)) {
            assert!(back.contains(m), "{m:?} not read back from\n{text}");
        }
    }
    let report = store.apply(&back, &audit("reimport")).await.unwrap();
    let written = |c: crate::store::Counts| c.inserted + c.updated + c.deleted;
    assert_eq!(
        [
            report.tenants,
            report.phones,
            report.lines,
            report.directory_entries,
            report.directory_sources
        ]
        .map(written),
        [0; 5],
        "{report:?}"
    );
    // Two exports of the same data are the same bytes.
    assert_eq!(export_json(&state, &[]).0, text);
}

#[tokio::test]
async fn csv_exports_read_back_as_stored() {
    let seeded = fleet();
    let (_db, _store, state) = stored(&seeded).await;
    let phones = export_csv(&state, Kind::Phones).unwrap();
    assert_eq!(
        phones_of(&planned("phones.csv", false, &phones)),
        phones_of(&seeded)
    );
    let tenants = planned(
        "tenants.csv",
        false,
        &export_csv(&state, Kind::Tenants).unwrap(),
    );
    let directory = export_csv(&state, Kind::Directory).unwrap();
    let directory = planned("directory.csv", false, &directory);
    for m in seeded.iter().filter(|m| {
        matches!(
            m,
            Mutation::UpsertTenant(_) | Mutation::UpsertDirectoryEntry(_)
        )
    }) {
        assert!(tenants.contains(m) || directory.contains(m), "{m:?}");
    }
    let refused = export_csv(&state, Kind::DirectorySources).unwrap_err();
    assert!(refused.to_string().contains("no CSV form"), "{refused}");
}

#[tokio::test]
async fn what_a_format_cannot_carry_is_refused_or_counted_by_name() {
    let mut seeded = fleet();
    seeded.push(Mutation::UpsertDirectoryEntry(
        crate::store::DirectoryEntryInput {
            tenant: "acme".into(),
            external_id: "7".into(),
            name: "Carol".into(),
            company: None,
            numbers: ["+1 555 0102", "+1 555 0103"]
                .map(|number| DirectoryNumber {
                    number: number.into(),
                    kind: "work".into(),
                })
                .to_vec(),
        },
    ));
    if let Some(Mutation::UpsertPhone(p)) = seeded.get_mut(3) {
        p.label = Some(" Lobby ".into());
        p.lines[0].display_name = "Desk 100 ".into();
    }
    // Through the API a key is stored as given; the import would trim it
    // and make a second entry.
    seeded.push(entry("acme", " 9 ", "Dave", &["+1 555 0104"]));
    let (_db, _store, state) = stored(&seeded).await;
    let refused = export_csv(&state, Kind::Directory).unwrap_err().to_string();
    assert!(
        refused.contains("\"Carol\" of acme") && refused.contains("two work numbers"),
        "{refused}"
    );
    // JSON carries both numbers; the padded label is counted and named.
    let (text, exported) = export_json(&state, &[]);
    assert!(text.contains("+1 555 0103"));
    assert_eq!(exported.drift.values, 3, "{:?}", exported.drift);
    assert_eq!(
        exported.drift.first.as_deref(),
        Some("phone 001565000003 line 1: display_name")
    );
    // Both formats count a phone's values alike.
    let selection = Selection::new(&state, &[]).unwrap();
    let (mut json, mut csv) = (Vec::new(), Vec::new());
    let json = write_json(&selection, &test_key(), &[Kind::Phones], &mut json).unwrap();
    let csv = write_csv(&selection, &test_key(), Kind::Phones, &mut csv).unwrap();
    assert_eq!((json.drift.values, csv.drift.values), (2, 2));

    // Through the API, with its quota raised, a phone may have more lines
    // than a CSV row can number; such a file would not import.
    let (_db, _store, state) = stored(&[tenant("acme", "US"), phone("acme", 9, 129)]).await;
    let refused = export_csv(&state, Kind::Phones).unwrap_err().to_string();
    assert!(
        refused.contains("phone 001565000009 of acme has a line 129") && refused.contains("JSON"),
        "{refused}"
    );
    // JSON carries every line.
    assert_eq!(export_json(&state, &[]).1.lines, 129);
}

#[tokio::test]
async fn a_selection_names_its_tenants_and_a_wrong_key_names_the_row() {
    let (_db, _store, state) = stored(&fleet()).await;
    let (text, exported) = export_json(&state, &["globex".to_string()]);
    assert_eq!((exported.tenants, exported.phones), (1, 1));
    assert!(!text.contains("acme"), "{text}");
    let unknown = Selection::new(&state, &["nobody".to_string()])
        .err()
        .unwrap();
    assert!(unknown.to_string().contains("\"nobody\""), "{unknown}");

    let other = SecretKey::parse(&"6b".repeat(32)).unwrap();
    let selection = Selection::new(&state, &[]).unwrap();
    let failed = write_json(&selection, &other, &[Kind::Phones], &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        failed.contains("phone 001565000007 line 1") && failed.contains("does not open"),
        "{failed}"
    );
    assert!(!failed.contains("pw-"), "{failed}");
}

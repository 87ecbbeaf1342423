//! A model-scope template's key in upper or lower case names its model
//! whatever case a phone is recorded in (importers differ), and the list of
//! a template's phones agrees with what they render. The admin API refuses
//! a key in mixed case; one stored before is found only by a phone recorded
//! in that very spelling.

mod common;

use common::*;
use dialtone_sync::*;

const NAME: &str = "{mac}.cfg";

/// The fixture's phones, plus `T46S`s recorded in two other spellings.
async fn fixture() -> Fixture {
    let f = Fixture::new().await;
    f.write(&[
        phone("00:15:65:00:00:04", Family::Yealink, "t46s", &["Lower"]),
        phone("00:15:65:00:00:05", Family::Yealink, "T46s", &["Mixed"]),
    ])
    .await;
    f
}

fn model_template(key: &str) -> Mutation {
    template(
        TemplateScope::Model,
        Family::Yealink,
        key,
        NAME,
        &format!("from = {key}\n"),
    )
}

fn listed_macs(f: &Fixture, key: &str) -> Vec<String> {
    let state = f.mirror.load();
    let stored = state
        .template_by_key(&TemplateKey {
            scope: TemplateScope::Model,
            family: Family::Yealink,
            scope_key: key.into(),
            file_pattern: NAME.into(),
        })
        .expect("stored")
        .clone();
    let (phones, truncated) = f.provisioner.phones_using(&stored, 100);
    assert!(!truncated);
    let mut macs: Vec<String> = phones.iter().map(|p| p.mac.to_string()).collect();
    macs.sort();
    macs
}

const ALL_T46S: [&str; 3] = ["001565000001", "001565000004", "001565000005"];

fn macs(list: &[&str]) -> Vec<String> {
    list.iter()
        .map(|m| m.parse::<Mac>().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_key_in_one_case_applies_to_every_spelling_of_its_model() {
    let f = fixture().await;
    // Cached before the template exists: its arrival must outdate these.
    for mac in ALL_T46S {
        assert!(f
            .get(&format!("{mac}.cfg"))
            .unwrap()
            .starts_with("#!version"));
    }
    f.write(&[model_template("Trio_x"), model_template("t46s")])
        .await;
    for mac in ALL_T46S {
        assert_eq!(
            f.get(&format!("{mac}.cfg")).unwrap(),
            "from = t46s\n",
            "{mac}"
        );
    }
    // Another model keeps the shipped file.
    assert!(f.get("001565000002.cfg").unwrap().starts_with("#!version"));
    assert_eq!(listed_macs(&f, "t46s"), macs(&ALL_T46S));
}

/// Two stored keys of one model (saved before the API refused that): each
/// phone gets what resolution picks, and each template's list says the
/// same.
#[tokio::test]
async fn keys_differing_in_case_list_the_phones_they_render_for() {
    let f = fixture().await;
    f.write(&[model_template("T46s"), model_template("T46S")])
        .await;
    assert_eq!(f.get("001565000001.cfg").unwrap(), "from = T46S\n");
    assert_eq!(f.get("001565000004.cfg").unwrap(), "from = T46S\n");
    assert_eq!(f.get("001565000005.cfg").unwrap(), "from = T46s\n");
    assert_eq!(
        listed_macs(&f, "T46S"),
        macs(&["001565000001", "001565000004"])
    );
    assert_eq!(listed_macs(&f, "T46s"), macs(&["001565000005"]));
    // Once `T46S` goes, the key in mixed case is still found only by the
    // phone recorded in its spelling; the others get the shipped file.
    let id = f
        .mirror
        .load()
        .templates()
        .find(|t| &*t.scope_key == "T46S")
        .unwrap()
        .id;
    f.write(&[Mutation::DeleteTemplate { id }]).await;
    assert_eq!(f.get("001565000005.cfg").unwrap(), "from = T46s\n");
    for mac in ["001565000001", "001565000004"] {
        assert!(f
            .get(&format!("{mac}.cfg"))
            .unwrap()
            .starts_with("#!version"));
    }
    assert_eq!(listed_macs(&f, "T46s"), macs(&["001565000005"]));
}

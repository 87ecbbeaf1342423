//! Import plans of files an operator may well hand in: rows given twice
//! under `--skip-invalid`, a quote never closed, CR-only line ends, and a
//! JSON file saved with a byte-order mark.

use dialtone_sync::import::{plan_files, ImportPlan};
use dialtone_sync::store::Mutation;
use dialtone_sync::testing::build::{audit, tenant};
use dialtone_sync::testing::TestDb;

fn plan_of(name: &str, bytes: &[u8]) -> ImportPlan {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    plan_files(&[path])
}

/// Each error as `file:line:column (field): reason`, from the file name on.
fn errors(plan: &ImportPlan) -> Vec<String> {
    (plan.errors.iter())
        .map(|e| {
            let name = e.location.file.file_name().unwrap().to_string_lossy();
            let text = e.to_string();
            text[text.find(&*name).unwrap()..].to_string()
        })
        .collect()
}

/// What the plan writes, by kind: (tenants, entries and sources as
/// `tenant/key=name`, phones' MACs).
fn written(plan: &ImportPlan) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut tenants, mut directory, mut phones) = (Vec::new(), Vec::new(), Vec::new());
    for (m, _) in &plan.items {
        match m {
            Mutation::UpsertTenant(t) => tenants.push(format!("{}={}", t.slug, t.name)),
            Mutation::UpsertDirectoryEntry(e) => {
                directory.push(format!("{}/{}={}", e.tenant, e.external_id, e.name))
            }
            Mutation::UpsertDirectorySource(s) => {
                directory.push(format!("{}/{}={}", s.tenant, s.name, s.priority))
            }
            Mutation::UpsertPhones(batch) => phones.extend(batch.iter().map(|p| p.mac.to_string())),
            _ => {}
        }
    }
    (tenants, directory, phones)
}

#[tokio::test]
async fn a_row_given_again_is_skipped_not_written_over_the_first() {
    let plan = plan_of(
        "dir.csv",
        b"tenant,external_id,name,work\n\
          acme,x1,First,5550001\n\
          acme,x2,Other,5550003\n\
          acme,x1,Second,5550002\n",
    );
    let found = errors(&plan);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0]
            .starts_with("dir.csv:4:1: duplicate directory entry \"acme\"/\"x1\", first given at ")
            && found[0].ends_with("dir.csv:2:1"),
        "{found:?}"
    );
    assert_eq!(written(&plan).1, ["acme/x1=First", "acme/x2=Other"]);

    // As `--skip-invalid` goes on with the plan: the first copy is stored.
    let db = TestDb::sqlite();
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("seed"))
        .await
        .unwrap();
    let mut plan = plan;
    let report = store
        .apply(&plan.take_mutations(), &audit("import"))
        .await
        .unwrap();
    assert_eq!(
        (
            report.directory_entries.inserted,
            report.directory_entries.updated
        ),
        (2, 0)
    );
    let (data, _, _) = store.load_all().await.unwrap();
    let x1 = data
        .directory_entries
        .iter()
        .find(|e| e.external_id.as_deref() == Some("x1"))
        .unwrap();
    assert_eq!(&*x1.name, "First");

    let plan = plan_of(
        "tenants.csv",
        b"slug,name\nacme,Acme\nglobex,Globex\nacme,Acme Again\nacme,Acme Thrice\n",
    );
    assert_eq!(plan.errors.len(), 2, "{:?}", errors(&plan));
    assert_eq!(written(&plan).0, ["acme=Acme", "globex=Globex"]);

    let plan = plan_of(
        "sources.json",
        br#"{"directory_sources": [
            {"tenant": "acme", "name": "ad", "kind": "ldap", "priority": 1, "settings": {}},
            {"tenant": "acme", "name": " ad ", "kind": "ldap", "priority": 2, "settings": {}}
        ]}"#,
    );
    assert_eq!(plan.errors.len(), 1, "{:?}", errors(&plan));
    assert!(
        errors(&plan)[0].starts_with("sources.json:3:"),
        "{:?}",
        errors(&plan)
    );
    assert_eq!(written(&plan).1, ["acme/ad=1"]);
}

const PHONES_HEAD: &str = "tenant,mac,family,label\n";

#[test]
fn a_quote_never_closed_spoils_the_file_where_it_opens() {
    let plan = plan_of(
        "phones.csv",
        format!(
            "{PHONES_HEAD}\
             acme,0015650000a1,yealink,Lobby\n\
             acme,0015650000a2,yealink,\"Big room\n\
             acme,0015650000a3,yealink,Hall\n\
             acme,0015650000a4,yealink,Desk\n\
             acme,0015650000a5,yealink,Door\n"
        )
        .as_bytes(),
    );
    assert_eq!(
        errors(&plan),
        [
            "phones.csv:3:1: malformed CSV: the quote that opens the cell in column 4 (label) on \
          this line is never closed, so every line after it would be read into that cell"
        ]
    );
    assert_eq!(plan.whole_file_errors, 1);

    // Opened on the second line of its record, after a quoted break; with
    // CRLF line ends, and with the input ending in the open cell's CR.
    for (text, line) in [
        ("acme,0015650000a1,\"yeal\nink\",\"Big\n", 3),
        (
            "acme,0015650000a1,yealink,Lobby\r\nacme,0015650000a2,\"x\r\ny\",\"Big\r\n",
            4,
        ),
        ("acme,0015650000a1,yealink,\"Big\r", 2),
        ("acme,0015650000a1,yealink,\"", 2),
    ] {
        let plan = plan_of("phones.csv", format!("{PHONES_HEAD}{text}").as_bytes());
        let found = errors(&plan);
        assert_eq!(found.len(), 1, "{text:?}: {found:?}");
        assert!(
            found[0].starts_with(&format!("phones.csv:{line}:1: malformed CSV: the quote")),
            "{text:?}: {found:?}"
        );
    }

    // Quotes that close, at the very end too, and files that end early.
    for text in [
        "acme,0015650000a1,yealink,\"Big \"\"room\"\"\"",
        "acme,0015650000a1,yealink,\"Big\nroom\"\n",
        "acme,0015650000a1,yealink,\"Big\rroom\"\r",
        "acme,0015650000a1,yealink,Lobby",
        "",
    ] {
        let plan = plan_of("phones.csv", format!("{PHONES_HEAD}{text}").as_bytes());
        // Read whole: a label with a line break is refused at its cell
        // (`checks::unfit`), not the file.
        let found = errors(&plan);
        assert!(
            found
                .iter()
                .all(|e| e.starts_with("phones.csv:2:4 (label): label: U+000")),
            "{text:?}: {found:?}"
        );
    }
    let plan = plan_of("tenants.csv", b"slug,name");
    assert_eq!(errors(&plan), Vec::<String>::new());
    let plan = plan_of("empty.csv", b"");
    assert!(errors(&plan)[0].contains("cannot tell what this CSV holds"));
}

#[test]
fn cr_only_line_ends_name_each_row_its_own_line() {
    let plan = plan_of(
        "cr.csv",
        b"tenant,mac,family,label\r\
          acme,001565000001,yealink,a\r\
          \r\
          acme,001565000002,yealink,\"two\rlines\"\r\
          acme,001565000003,nosuch,b\r\
          acme,001565000004,yealink,\"x\r\n\"\r\
          acme,001565000005,nosuch,c\r",
    );
    let found = errors(&plan);
    assert_eq!(found.len(), 3, "{found:?}");
    // A label with a line break is refused at its row (`checks::unfit`).
    assert!(found[0].starts_with("cr.csv:4:4 (label): "), "{found:?}");
    assert!(found[1].starts_with("cr.csv:6:3 (family): "), "{found:?}");
    assert!(found[2].starts_with("cr.csv:9:3 (family): "), "{found:?}");
    assert_eq!(written(&plan).2.len(), 2);
}

#[test]
fn a_json_file_may_start_with_a_byte_order_mark() {
    let plan = plan_of(
        "bom.json",
        b"\xef\xbb\xbf{\"tenants\": [{\"slug\": \"acme\", \"name\": \"Acme\"}]}",
    );
    assert_eq!(errors(&plan), Vec::<String>::new());
    assert_eq!(written(&plan).0, ["acme=Acme"]);
    // Only at its start.
    let plan = plan_of("bom.json", b"{\"tenants\": []}\xef\xbb\xbf");
    assert_eq!(plan.errors.len(), 1);
}

//! A CSV file with malformed records among its rows, planned and then
//! applied as `dialtone import --skip-invalid` applies it, on SQLite and
//! PostgreSQL: every bad row is reported at its line, the good rows after
//! a malformed one are imported, and no phone loses stored lines because
//! one of its rows was skipped.

#[macro_use]
mod common;

use common::*;
use dialtone_sync::import::plan_files;
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

const HEAD: &str = "tenant,mac,family,model,line,extension,display_name,password,registrar\n";

fn row(n: u32, line: u32, name: &str) -> String {
    format!("acme,001565{n:06x},yealink,T46S,{line},{n}{line},{name},pw,sip.example.net\n")
}

/// Every stored line as (MAC, position, display name), sorted.
async fn stored_lines(store: &dyn store::Store) -> Vec<(String, i32, String)> {
    let data = db_rows(store).await;
    let mut lines: Vec<_> = data
        .lines
        .iter()
        .map(|l| {
            let phone = data.phones.iter().find(|p| p.id == l.phone_id).unwrap();
            (
                phone.mac.to_string(),
                l.position,
                l.display_name.to_string(),
            )
        })
        .collect();
    lines.sort();
    lines
}

both_backends!(
    malformed_rows_are_all_reported_and_the_rest_imported,
    malformed_body
);
async fn malformed_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("test"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Phones 1 and 2 with two lines each, 3 with one.
    let mut first = String::from(HEAD);
    for (n, lines) in [(1, 2), (2, 2), (3, 1)] {
        for line in 1..=lines {
            first.push_str(&row(n, line, "Desk"));
        }
    }
    let path = dir.path().join("first.csv");
    std::fs::write(&path, &first).unwrap();
    let mut plan = plan_files(&[path]);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    store
        .apply(&plan.take_mutations(), &audit("import"))
        .await
        .unwrap();
    let before = stored_lines(&*store).await;
    assert_eq!(before.len(), 5);

    // Every desk renamed, but phone 1's second row has a comma too many
    // (line 3), phone 2's second is Latin-1 (line 5), and after them a new
    // phone lacks its registrar (line 7) and a MAC is wrong (line 9).
    let mut text = HEAD.as_bytes().to_vec();
    text.extend(row(1, 1, "Room").as_bytes());
    text.extend(row(1, 2, "Smith, Jo").as_bytes());
    text.extend(row(2, 1, "Room").as_bytes());
    text.extend(
        row(2, 2, "Ren#e")
            .bytes()
            .map(|b| if b == b'#' { 0xe9 } else { b }),
    );
    text.extend(row(3, 1, "Room").as_bytes());
    text.extend(
        row(4, 1, "Room")
            .replace(",sip.example.net", ",")
            .as_bytes(),
    );
    text.extend(row(5, 1, "Room").as_bytes());
    text.extend(row(6, 1, "Room").replace("001565", "zz1565").as_bytes());
    text.extend(row(7, 1, "Room").as_bytes());
    let path = dir.path().join("second.csv");
    std::fs::write(&path, &text).unwrap();
    let mut plan = plan_files(&[path]);

    // Without --skip-invalid any error means nothing is written, so all of
    // them must be there to fix in one pass.
    let found: Vec<String> = plan
        .errors
        .iter()
        .map(|e| {
            let l = &e.location;
            format!(
                "{}:{} {}",
                l.line,
                l.column,
                l.field.as_deref().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            "3:1 -",
            "5:7 display_name",
            "7:9 registrar",
            "9:2 mac",
            "2:1 -",
            "4:1 -"
        ],
        "{:?}",
        plan.errors
    );
    assert!(
        plan.errors[0]
            .to_string()
            .contains("second.csv:3:1: malformed CSV: 10 cells where the header has 9"),
        "{}",
        plan.errors[0]
    );
    assert!(
        plan.errors[1]
            .to_string()
            .contains("second.csv:5:7 (display_name): malformed CSV"),
        "{}",
        plan.errors[1]
    );
    assert_eq!(stored_lines(&*store).await, before);

    // With it, the rest is written: phones 3, 5 and 7, after the malformed
    // rows; phones 1 and 2, whose rows were cut, keep every stored line.
    store
        .apply(&plan.take_mutations(), &audit("import"))
        .await
        .unwrap();
    let line =
        |n: u32, position: i32, name: &str| (format!("001565{n:06x}"), position, name.to_string());
    assert_eq!(
        stored_lines(&*store).await,
        [
            line(1, 1, "Desk"),
            line(1, 2, "Desk"),
            line(2, 1, "Desk"),
            line(2, 2, "Desk"),
            line(3, 1, "Room"),
            line(5, 1, "Room"),
            line(7, 1, "Room"),
        ]
    );
}

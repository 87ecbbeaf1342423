//! What a CSV export writes of tenants' own text, and what it refuses:
//! cells a spreadsheet would run as formulas are escaped and read back
//! exactly, keys an import would take for one are refused by name, and
//! every directory entry a CSV row cannot hold is named.

use std::sync::Arc;

use dialtone_sync::export::{write_csv, write_json, Kind, Selection};
use dialtone_sync::import::plan_text;
use dialtone_sync::store::{DirectoryEntryInput, Mutation, PhoneInput, TenantInput};
use dialtone_sync::testing::build::*;
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::{watcher, DirectoryNumber, Mirror, MirrorState, SourceKind, SyncError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

async fn stored(mutations: &[Mutation]) -> (TestDb, Arc<MirrorState>) {
    let db = TestDb::sqlite();
    let store = db.store().await;
    store.apply(mutations, &audit("seed")).await.unwrap();
    let mirror = Mirror::new();
    watcher::full_load(&mirror, &*store).await.unwrap();
    (db, mirror.load())
}

fn export_csv(state: &MirrorState, kind: Kind) -> Result<String, SyncError> {
    let selection = Selection::new(state, &[])?;
    let mut out = Vec::new();
    write_csv(&selection, &test_key(), kind, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn export_json(state: &MirrorState, kinds: &[Kind]) -> Result<String, SyncError> {
    let selection = Selection::new(state, &[])?;
    let mut out = Vec::new();
    write_json(&selection, &test_key(), kinds, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn planned(name: &str, text: &str) -> Vec<Mutation> {
    let mut plan = plan_text(name, false, text);
    let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors, Vec::<String>::new(), "{text}");
    plan.take_mutations()
}

/// Text a spreadsheet or the escape could trip on, pieced together;
/// control characters only in `secret`s, as names may not hold them.
fn tricky(rng: &mut StdRng, secret: bool) -> String {
    const PIECES: &[&str] = &[
        "=",
        "+",
        "-",
        "@",
        "'",
        "''",
        "\"",
        ",",
        " ",
        "1",
        "5.5",
        "x",
        "é",
        "=HYPERLINK(\"http://evil.example/\",\"x\")",
        "+15551234567",
        "-5",
        "@SUM(A1)",
    ];
    const CONTROLS: &[&str] = &["\t", "\r", "\n", "\r\n"];
    let pieces = rng.gen_range(1..=4);
    (0..pieces)
        .map(|_| match rng.gen_range(0..4) {
            0 if secret => *CONTROLS.choose(rng).unwrap(),
            _ => *PIECES.choose(rng).unwrap(),
        })
        .collect()
}

/// Tricky text an import keeps as it is (it trims all but passwords).
fn tricky_trimmed(rng: &mut StdRng) -> String {
    loop {
        let text = tricky(rng, false);
        if !text.trim().is_empty() {
            return text.trim().to_string();
        }
    }
}

fn fleet(rng: &mut StdRng) -> Vec<Mutation> {
    let mut fleet = Vec::new();
    for t in 0..8 {
        fleet.push(Mutation::UpsertTenant(TenantInput {
            slug: format!("t{t}"),
            name: tricky_trimmed(rng),
            default_region: "US".into(),
            settings: "{}".into(),
        }));
    }
    for n in 0..60u32 {
        let Mutation::UpsertPhone(mut phone) = phone(&format!("t{}", n % 8), n, 2) else {
            unreachable!()
        };
        phone.label = Some(tricky_trimmed(rng));
        phone.http_user = Some("admin".into());
        phone.http_password = Some(tricky(rng, true));
        for line in &mut phone.lines {
            line.display_name = tricky_trimmed(rng);
            line.password = Some(tricky(rng, true));
        }
        fleet.push(Mutation::UpsertPhone(phone));
    }
    for n in 0..60 {
        let prefix = ["", "+", "-", "=", "'", "@"].choose(rng).unwrap();
        fleet.push(Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
            tenant: format!("t{}", n % 8),
            external_id: format!("{}{n}", tricky_trimmed(rng)),
            name: tricky_trimmed(rng),
            company: Some(tricky_trimmed(rng)),
            numbers: vec![DirectoryNumber {
                number: format!("{prefix}555 01{n:02}").into(),
                kind: "mobile".into(),
            }],
        }));
    }
    fleet
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

/// A signed decimal number, which a spreadsheet takes as a number.
fn plain_number(cell: &str) -> bool {
    let unsigned = cell.strip_prefix(['+', '-']).unwrap_or(cell);
    let mut parts = unsigned.splitn(2, '.');
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
}

#[tokio::test]
async fn every_tricky_value_reads_back_exactly_and_no_cell_runs_as_a_formula() {
    for seed in 0..4 {
        let mut rng = StdRng::seed_from_u64(seed);
        let seeded = fleet(&mut rng);
        let (_db, state) = stored(&seeded).await;
        let mut escaped = 0;
        for kind in [Kind::Tenants, Kind::Phones, Kind::Directory] {
            let text = export_csv(&state, kind).unwrap();
            let mut cells = ::csv::ReaderBuilder::new().from_reader(text.as_bytes());
            for record in cells.records() {
                for cell in record.unwrap().iter() {
                    escaped += usize::from(cell.starts_with('\''));
                    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
                    assert!(!formula || plain_number(cell), "{cell:?} in\n{text}");
                }
            }
            let back = planned("export.csv", &text);
            if kind == Kind::Phones {
                assert_eq!(phones_of(&back), phones_of(&seeded), "seed {seed}");
                continue;
            }
            let of_kind = |m: &&Mutation| match kind {
                Kind::Tenants => matches!(m, Mutation::UpsertTenant(_)),
                _ => matches!(m, Mutation::UpsertDirectoryEntry(_)),
            };
            let seeded: Vec<&Mutation> = seeded.iter().filter(of_kind).collect();
            assert_eq!(back.len(), seeded.len(), "seed {seed}");
            for m in seeded {
                assert!(
                    back.contains(m),
                    "seed {seed}: {m:?} not read back from\n{text}"
                );
            }
        }
        assert!(escaped > 50, "seed {seed}: {escaped} escaped cells");
    }
}

#[tokio::test]
async fn keys_an_import_would_take_for_one_refuse_the_export_by_name() {
    let (_db, state) = stored(&[
        tenant("acme", "US"),
        tenant("globex", "US"),
        phone("globex", 1, 1),
        entry("acme", "e1", "Alice", &["+1 555 0100"]),
        entry("acme", " e1 ", "Bob", &["+1 555 0101"]),
        entry("globex", "e1", "Carol", &["+1 555 0102"]),
    ])
    .await;
    let refused = export_json(&state, &Kind::ALL).unwrap_err().to_string();
    assert!(
        refused.contains("tenant acme: directory entries \" e1 \" and \"e1\" would import as one"),
        "{refused}"
    );
    let refused = export_csv(&state, Kind::Directory).unwrap_err().to_string();
    assert!(refused.contains("tenant acme"), "{refused}");
    // What holds no entries is not held up by them.
    export_json(&state, &[Kind::Tenants, Kind::Phones]).unwrap();
    export_csv(&state, Kind::Phones).unwrap();

    let ldap = || serde_json::json!({"url": "ldap://127.0.0.1:1/", "base_dn": "dc=example"});
    let (_db, state) = stored(&[
        tenant("acme", "US"),
        source("acme", "ad", SourceKind::Ldap, ldap(), None, 250),
        source("acme", "ad ", SourceKind::Ldap, ldap(), None, 250),
    ])
    .await;
    let refused = export_json(&state, &[Kind::DirectorySources])
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("tenant acme: directory sources \"ad\" and \"ad \" would import as one"),
        "{refused}"
    );
}

#[tokio::test]
async fn every_entry_a_csv_row_cannot_hold_is_named() {
    let mut seeded = vec![tenant("acme", "US"), tenant("zzz", "US")];
    seeded.push(entry("acme", "ok", "Fine", &["+1 555 0100"]));
    for n in 0..12 {
        let kinds = if n % 2 == 0 {
            ["work", "work"]
        } else {
            ["pager", "work"]
        };
        seeded.push(Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
            tenant: "zzz".into(),
            external_id: format!("{n:02}"),
            name: format!("Entry {n:02}"),
            company: None,
            numbers: (kinds.iter().enumerate())
                .map(|(i, kind)| DirectoryNumber {
                    number: format!("+1 555 02{n:02}{i}").into(),
                    kind: (*kind).into(),
                })
                .collect(),
        }));
    }
    let (_db, state) = stored(&seeded).await;
    let refused = export_csv(&state, Kind::Directory).unwrap_err().to_string();
    for named in [
        "12 directory entries have no CSV form",
        "directory entry \"Entry 00\" of zzz: two work numbers",
        "directory entry \"Entry 01\" of zzz: a number of kind \"pager\"",
        "directory entry \"Entry 09\" of zzz",
        "and 2 more",
        "--format json",
    ] {
        assert!(refused.contains(named), "{named:?} not in {refused}");
    }
    assert!(!refused.contains("Entry 10"), "{refused}");
    // JSON carries them all.
    let json = export_json(&state, &[Kind::Directory]).unwrap();
    assert!(json.contains("\"kind\":\"pager\""), "{json}");
    assert_eq!(json.matches("\"tenant\":\"zzz\"").count(), 12);
}

/// Only a file carrying the export's mark has its escapes taken off: in a
/// file written by hand, a password or label that begins with `'` is the
/// value it says (a phone given `'-x7` must not register with `-x7`).
#[test]
fn a_file_without_the_exports_mark_is_read_as_written() {
    let header = "tenant,mac,family,label,line,extension,registrar,password";
    let row = "acme,001565000001,yealink,'=SUM(1),1,101,sip.example.net,'-x7";
    let as_written = phones_of(&planned("hand.csv", &format!("{header}\n{row}\n")));
    assert_eq!(as_written[0].label.as_deref(), Some("'=SUM(1)"));
    assert_eq!(as_written[0].lines[0].password.as_deref(), Some("'-x7"));
    let marked = format!("{header},formulas_escaped\n{row},\n");
    let unescaped = phones_of(&planned("export.csv", &marked));
    assert_eq!(unescaped[0].label.as_deref(), Some("=SUM(1)"));
    assert_eq!(unescaped[0].lines[0].password.as_deref(), Some("-x7"));
}

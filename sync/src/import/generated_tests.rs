//! Phones files generated, written out and read back. The parse must give
//! back the phones that were written, whether the file is read whole or a
//! few bytes at a time, and from CSV as from JSON; every row spoiled on
//! purpose must be reported at the line and cell the writer put it in, and
//! its phone left out whole. The cells hold what CSV must quote (commas,
//! quotes, line breaks inside a cell), text beyond ASCII, MACs and
//! families in every accepted spelling, padding that trimming removes, and
//! passwords whose spaces it must not; rows come shuffled, with blank lines
//! between, and more of them than one read-ahead batch carries.

use std::collections::BTreeSet;

use super::*;
use crate::store::PhoneInput;
use files::{json_document, phones, write_csv, Spoil, Written};

mod files;

/// Where an error points: line, column, field.
type Place = (u64, u64, Option<String>);

/// What the plan should report for `written`: per spoiled row its line,
/// column and field, and per phone with one its first good row's line.
fn expected_errors(written: &Written) -> (Vec<Place>, Vec<usize>) {
    let column = |h: &str| written.headers.iter().position(|x| *x == h).unwrap() as u64 + 1;
    let mut errors = Vec::new();
    let mut spoiled = BTreeSet::new();
    for (row, line) in &written.rows {
        let field = match row.spoil {
            Spoil::None => continue,
            Spoil::Position => "line",
            Spoil::Family => "family",
            Spoil::NotUtf8 => "label",
        };
        errors.push((*line, column(field), Some(field.to_string())));
        spoiled.insert(row.phone);
    }
    for &phone in &spoiled {
        let first_good =
            (written.rows.iter()).find(|(row, _)| row.phone == phone && row.spoil == Spoil::None);
        if let Some((_, line)) = first_good {
            errors.push((*line, 1, None));
        }
    }
    errors.sort();
    (errors, spoiled.into_iter().collect())
}

fn places(plan: &ImportPlan) -> Vec<Place> {
    let mut places: Vec<_> = (plan.errors.iter())
        .map(|e| (e.location.line, e.location.column, e.location.field.clone()))
        .collect();
    places.sort();
    places
}

fn planned_phones(plan: &ImportPlan) -> Vec<PhoneInput> {
    let mut phones: Vec<PhoneInput> = (plan.items.iter())
        .flat_map(|(m, _)| match m {
            Mutation::UpsertPhones(batch) => batch.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    phones.sort_by_key(|p| p.mac);
    phones
}

/// `got` is `want`; else the first phone that differs, whole.
#[track_caller]
fn assert_same(got: &[PhoneInput], want: &[PhoneInput], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{what}: {} phones planned, {} written; the first to differ, #{i}:\n planned {:?}\n written {:?}",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

/// A reader that hands out a few bytes at a time, so records, quoted
/// line breaks and CRLFs are cut at every place.
struct Trickle<'a> {
    bytes: &'a [u8],
    rng: files::Rng,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (1 + self.rng.below(7)).min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

fn plan_trickled(name: &str, bytes: &[u8], seed: u64) -> ImportPlan {
    let mut plan = ImportPlan::default();
    let mut phones = Phones::default();
    let lines = bytes.iter().filter(|&&b| b == b'\n').count();
    let file: Arc<Path> = Arc::from(Path::new(name));
    let reader = Trickle {
        bytes,
        rng: files::Rng::new(seed),
    };
    csv::plan(&file, reader, (lines, bytes.len()), &mut plan, &mut phones);
    finish(plan, phones)
}

fn texts(plan: &ImportPlan) -> Vec<String> {
    plan.errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn generated_phones_files_read_back_as_written() {
    for seed in [0x9e37_79b9_7f4a_7c15_u64, 7, 1 << 40, 0xdead_beef] {
        let mut rng = files::Rng::new(seed);
        let generated = phones(&mut rng, 2_500);
        let written = write_csv(&mut rng, &generated, 0);
        assert!(
            written.rows.len() > 2 * 2_048,
            "more rows than two read-ahead batches"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phones.csv");
        std::fs::write(&path, &written.bytes).unwrap();
        let plan = plan_files(std::slice::from_ref(&path));
        assert_eq!(texts(&plan), Vec::<String>::new(), "seed {seed}");
        let want: Vec<PhoneInput> = generated.iter().map(|g| g.phone.clone()).collect();
        assert_same(&planned_phones(&plan), &want, &format!("seed {seed}: CSV"));

        let trickled = plan_trickled(path.to_str().unwrap(), &written.bytes, seed);
        assert_eq!(texts(&trickled), Vec::<String>::new(), "seed {seed}");
        let what = format!("seed {seed}: CSV a few bytes at a time");
        assert_same(&planned_phones(&trickled), &want, &what);

        let json = json_document(&mut rng, &generated);
        let from_json = super::plan_text("phones.json", true, &json);
        assert_eq!(texts(&from_json), Vec::<String>::new(), "seed {seed}");
        assert_same(
            &planned_phones(&from_json),
            &want,
            &format!("seed {seed}: JSON"),
        );
    }
}

#[test]
fn generated_spoiled_rows_are_reported_where_they_are_and_their_phones_left_out() {
    for seed in [3_u64, 0x5151_5151, 1 << 33] {
        let mut rng = files::Rng::new(seed);
        let generated = phones(&mut rng, 2_500);
        let written = write_csv(&mut rng, &generated, 4);
        let (want_errors, spoiled) = expected_errors(&written);
        assert!(
            spoiled.len() > 100,
            "seed {seed}: {} phones spoiled",
            spoiled.len()
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phones.csv");
        std::fs::write(&path, &written.bytes).unwrap();
        let plan = plan_files(std::slice::from_ref(&path));
        assert_eq!(
            places(&plan),
            want_errors,
            "seed {seed}: {:#?}",
            texts(&plan)
        );
        let want: Vec<PhoneInput> = (generated.iter().enumerate())
            .filter(|(i, _)| spoiled.binary_search(i).is_err())
            .map(|(_, g)| g.phone.clone())
            .collect();
        assert_same(&planned_phones(&plan), &want, &format!("seed {seed}"));

        // The same reports, word for word, read a few bytes at a time.
        let trickled = plan_trickled(path.to_str().unwrap(), &written.bytes, seed);
        assert_eq!(texts(&trickled), texts(&plan), "seed {seed}");
        assert_same(
            &planned_phones(&trickled),
            &want,
            &format!("seed {seed}, trickled"),
        );
    }
}

/// The generated phones stored, exported and read back: both formats
/// give back every phone as generated, which is what makes an export a
/// file to edit and import again.
#[tokio::test]
async fn generated_phones_exported_read_back_as_stored() {
    use crate::export::{write_csv, write_json, Kind, Selection};
    use crate::testing::{build, test_key, TestDb};

    let mut rng = files::Rng::new(0x0e_c5_90_27);
    let generated = phones(&mut rng, 2_500);
    let want: Vec<PhoneInput> = generated.iter().map(|g| g.phone.clone()).collect();
    let db = TestDb::sqlite();
    let store = db.store().await;
    let mut seed: Vec<Mutation> = ["acme", "globex-2", "t0"]
        .map(|slug| build::tenant(slug, "US"))
        .to_vec();
    seed.extend(want.iter().cloned().map(Mutation::UpsertPhone));
    store.apply(&seed, &build::audit("seed")).await.unwrap();
    let mirror = crate::Mirror::new();
    crate::watcher::full_load(&mirror, &*store).await.unwrap();
    let state = mirror.load();
    let selection = Selection::new(&state, &[]).unwrap();

    let mut json = Vec::new();
    let exported = write_json(&selection, &test_key(), &Kind::ALL, &mut json).unwrap();
    assert_eq!(exported.phones, 2_500);
    assert_eq!(exported.drift.values, 0, "{:?}", exported.drift);
    let from_json = super::plan_text("export.json", true, std::str::from_utf8(&json).unwrap());
    assert_eq!(texts(&from_json), Vec::<String>::new());
    assert_same(&planned_phones(&from_json), &want, "exported JSON");

    let mut csv = Vec::new();
    write_csv(&selection, &test_key(), Kind::Phones, &mut csv).unwrap();
    let from_csv = super::plan_text("export.csv", false, std::str::from_utf8(&csv).unwrap());
    assert_eq!(texts(&from_csv), Vec::<String>::new());
    assert_same(&planned_phones(&from_csv), &want, "exported CSV");
}

//! Import files come from spreadsheets and exports: anything. Input: a
//! format byte (even: CSV, odd: JSON), then the document. Beyond "no
//! panic": every error points inside the document, and a file plans
//! exactly as the same text given whole (the admin API's path), though
//! the file is read as a stream and the text is not.
#![no_main]

use std::path::PathBuf;

use dialtone_sync::import::{plan_files, plan_text, ImportPlan};
use dialtone_sync::Mutation;
use libfuzzer_sys::fuzz_target;

fn file(json: bool) -> PathBuf {
    let ext = if json { "json" } else { "csv" };
    std::env::temp_dir().join(format!("dialtone-fuzz-import-{}.{ext}", std::process::id()))
}

/// Everything a plan says, as text: errors in order, then each item.
fn summary(plan: &ImportPlan) -> (Vec<String>, Vec<String>) {
    let errors = plan.errors.iter().map(|e| e.to_string()).collect();
    let items = plan.items.iter().map(|(m, l)| format!("{l} {m:?}")).collect();
    (errors, items)
}

fuzz_target!(|data: &[u8]| {
    let Some((&format, document)) = data.split_first() else { return };
    let json = format % 2 == 1;
    let path = file(json);
    std::fs::write(&path, document).expect("the fuzz file is writable");
    let plan = plan_files(std::slice::from_ref(&path));

    let lines = document.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    for e in &plan.errors {
        let at = &e.location;
        assert_eq!(at.file.as_ref(), path.as_path(), "{e}");
        assert!(at.line <= lines, "{e}: past the document's {lines} lines");
        // Only a file that cannot be read at all has no place in it.
        assert!(at.line >= 1 || e.message.starts_with("cannot read"), "{e}: before the document");
        assert!(!e.message.is_empty(), "{e}");
    }
    assert!(plan.whole_file_errors <= plan.errors.len());
    // Each phone of the batch has its origin, and no MAC is there twice.
    let mut batched = 0;
    for (m, _) in &plan.items {
        if let Mutation::UpsertPhones(batch) = m {
            assert!(batch.macs_distinct());
            batched += batch.len();
        }
    }
    assert_eq!(batched, plan.phones.len());

    if let Ok(text) = std::str::from_utf8(document) {
        let whole = plan_text(path.to_str().expect("a UTF-8 temp path"), json, text);
        assert_eq!(summary(&whole), summary(&plan), "read whole and as a file");
        assert_eq!(whole.whole_file_errors, plan.whole_file_errors);
    }
});

//! An import refuses the identities the admin API refuses (a MAC no phone
//! can have, a line user that breaks registration, a hand-written generated
//! directory key), row by row, where they are: an export of rows stored
//! before these checks imports back with each such row named, not a panic.

use super::*;

fn errors_of(name: &str, text: &str) -> (Vec<String>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let plan = plan_files(&[path]);
    assert_eq!(plan.whole_file_errors, 0, "{name}: a row's, not the file's");
    let errors = plan.errors.iter().map(|e| e.to_string()).collect();
    (errors, plan.changes())
}

#[test]
fn macs_no_phone_can_have_are_row_errors() {
    let bad = ["000000000000", "ffffffffffff", "01005e000001"];
    // Spreadsheets' shapes too, read as they always were.
    let good = [
        "001565000010",
        "00:15:65:00:00:11",
        "00-15-65-00-00-12",
        "0015.6500.0013",
        "0015-6500-0014",
        "001565-000015",
    ];
    let mut csv = String::from("tenant,mac,family\n");
    for mac in bad.iter().chain(&good) {
        csv.push_str(&format!("acme,{mac},yealink\n"));
    }
    let (errors, kept) = errors_of("phones.csv", &csv);
    assert_eq!(errors.len(), bad.len(), "{errors:?}");
    for (row, error) in errors.iter().enumerate() {
        assert!(
            error.contains(&format!("phones.csv:{}:2 (mac): ", row + 2)),
            "{errors:?}"
        );
    }
    assert_eq!(kept, good.len());

    // A JSON phone's MAC is read with the file: a bad one stops the file,
    // as any unreadable MAC did before, at its place.
    for mac in bad {
        let json = format!(
            "{{\"phones\": [\n{{\"tenant\": \"acme\", \"mac\": \"{mac}\", \"family\": \"yealink\"}}\n]}}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phones.json");
        std::fs::write(&path, json).unwrap();
        let plan = plan_files(&[path]);
        let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{mac}: {errors:?}");
        assert!(errors[0].contains("phones.json:2:"), "{mac}: {errors:?}");
        assert!(errors[0].contains("no phone's MAC"), "{mac}: {errors:?}");
        assert_eq!(plan.changes(), 0);
    }
}

#[test]
fn a_line_user_that_breaks_registration_is_a_row_error() {
    let csv = "tenant,mac,family,extension,auth_user,registrar\n\
               acme,001565000001,yealink,201,,sip\n\
               acme,001565000002,yealink,\"201\nstatic.x = y\",,sip\n\
               acme,001565000003,yealink,203,a b,sip\n";
    let (errors, kept) = errors_of("phones.csv", csv);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("phones.csv:3:4 (extension): "),
        "{errors:?}"
    );
    assert!(errors[1].contains("(auth_user): "), "{errors:?}");
    assert_eq!(kept, 1);

    let json = r#"{"phones": [
        {"tenant": "acme", "mac": "001565000001", "family": "yealink",
         "lines": [{"extension": "2 01", "display_name": "x", "auth_user": "201", "registrar": "sip"}]}
    ]}"#;
    let (errors, _) = errors_of("phones.json", json);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("extension"), "{errors:?}");
}

#[test]
fn an_explicit_id_in_the_generated_namespace_is_a_row_error() {
    let csv = "tenant,external_id,name,work\n\
               acme,name:alice,Bob,+1 555 0100\n\
               acme,,Alice,+1 555 0101\n";
    let (errors, kept) = errors_of("directory.csv", csv);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("directory.csv:2:2 (external_id): ") && errors[0].contains("reserved"),
        "{errors:?}"
    );
    assert_eq!(kept, 1);

    let json = r#"{"directory": [
        {"tenant": "acme", "external_id": "name:alice", "name": "Bob", "numbers": [{"number": "+1 555 0100"}]},
        {"tenant": "acme", "name": "Alice", "numbers": [{"number": "+1 555 0101"}]}
    ]}"#;
    let (errors, kept) = errors_of("directory.json", json);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("(directory[0] external_id): "),
        "{errors:?}"
    );
    assert_eq!(kept, 1);
}

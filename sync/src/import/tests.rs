//! The CSV and JSON parsers: what a plan holds and where each error points.

use super::*;
use crate::store::{Kept, PhoneInput};

fn plan_text(name: &str, text: &str) -> ImportPlan {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    plan_files(&[path])
}

#[test]
fn csv_phones_group_lines_by_mac() {
    let plan = plan_text(
        "phones.csv",
        "tenant,mac,family,model,line,extension,display_name,password,registrar\n\
         acme,00:15:65:aa:bb:01,yealink,T46S,2,102,Reception 2,pw2,sip.example.net\n\
         acme,001565aabb01,yealink,T46S,1,101,Reception,pw1,sip.example.net\n\
         acme,0004f2aabb02,poly,VVX 450,,201,,,sip.example.net\n",
    );
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let phones = phones(&plan);
    assert_eq!(phones.len(), 2);
    let p = &phones[0];
    assert_eq!(p.mac.to_string(), "001565aabb01");
    assert_eq!(p.lines.len(), 2);
    assert_eq!(p.lines[0].extension, "101");
    assert_eq!(p.lines[1].display_name, "Reception 2");
    assert_eq!(p.lines[1].auth_user, "102");
    assert_eq!(p.lines[1].password.as_deref(), Some("pw2"));
    assert_eq!(
        (p.model.as_deref(), p.label.as_deref()),
        (Some("T46S"), None)
    );
    assert_eq!(p.variables, "{}");
    let p = &phones[1];
    assert_eq!(p.lines[0].display_name, "201");
    assert_eq!(p.lines[0].password, None);
    assert_eq!(p.model.as_deref(), Some("VVX 450"));
}

#[test]
fn csv_json_cells_are_canonical_however_often_they_repeat() {
    // Written two ways and repeated (the cache's hits), one past the
    // length the cache keeps, and blank ones (answered before the cache).
    let long = format!("{{\"\"k\"\": \"\"{}\"\"}}", "x".repeat(300));
    let plan = plan_text(
        "phones.csv",
        &format!(
            "tenant,mac,family,extension,registrar,variables,line_settings\n\
             acme,001565aabb01,yealink,101,sip,\"{{\"\"b\"\": 1, \"\"a\"\": 2}}\",\"{{\"\"codec\"\": \"\"G722\"\"}}\"\n\
             acme,001565aabb02,yealink,102,sip,\"{{\"\"a\"\":2,\"\"b\"\":1}}\",\n\
             acme,001565aabb03,yealink,103,sip,\"{{\"\"b\"\": 1, \"\"a\"\": 2}}\",\"{{\"\"codec\"\": \"\"G722\"\"}}\"\n\
             acme,001565aabb04,yealink,104,sip,\"{long}\",\"{long}\"\n\
             acme,001565aabb05,yealink,105,sip,\"{long}\",\n\
             acme,001565aabb06,yealink,106,sip,\"  \",\" \"\n"
        ),
    );
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let phones = phones(&plan);
    let long_canonical = format!("{{\"k\":\"{}\"}}", "x".repeat(300));
    let got: Vec<(&str, &str)> = phones
        .iter()
        .map(|p| (p.variables.as_str(), p.lines[0].settings.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (r#"{"a":2,"b":1}"#, r#"{"codec":"G722"}"#),
            (r#"{"a":2,"b":1}"#, "{}"),
            (r#"{"a":2,"b":1}"#, r#"{"codec":"G722"}"#),
            (long_canonical.as_str(), long_canonical.as_str()),
            (long_canonical.as_str(), "{}"),
            ("{}", "{}"),
        ]
    );
    // A bad cell is reported on every row that has it, not once.
    let plan = plan_text(
        "phones.csv",
        "tenant,mac,family,extension,registrar,variables\n\
         acme,001565aabb01,yealink,101,sip,[1]\n\
         acme,001565aabb02,yealink,102,sip,[1]\n",
    );
    let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    for (e, line) in text.iter().zip(["phones.csv:2:6", "phones.csv:3:6"]) {
        assert!(
            e.contains(line) && e.contains("must be a JSON object"),
            "{e}"
        );
    }
}

/// The plan's phones, from its one batch.
fn phones(plan: &ImportPlan) -> Vec<PhoneInput> {
    let batches: Vec<&crate::store::PhoneBatch> = plan
        .items
        .iter()
        .filter_map(|(m, _)| match m {
            Mutation::UpsertPhones(b) => Some(b),
            _ => None,
        })
        .collect();
    assert!(batches.len() <= 1, "{batches:?}");
    let phones: Vec<PhoneInput> = batches.iter().flat_map(|b| b.iter()).collect();
    assert_eq!(phones.len(), plan.phones.len());
    phones
}

#[test]
fn csv_lines_ordered_and_gaps_rejected() {
    let plan = plan_text(
        "phones.csv",
        "tenant,mac,family,line,extension,registrar\n\
         acme,0004f2000001,poly,3,103,sip\n\
         acme,0004f2000002,poly,2,202,sip\n\
         acme,0004f2000001,poly,1,101,sip\n\
         acme,0004f2000003,poly,1,301,sip\n\
         acme,0004f2000001,poly,2,102,sip\n",
    );
    let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].contains("phones.csv:3:1: phone 0004f2000002: line numbers must run")
            && text[0].ends_with("got [2]"),
        "{text:?}"
    );
    let phones = phones(&plan);
    assert_eq!(phones.len(), 2);
    assert_eq!(phones[0].mac.to_string(), "0004f2000001");
    let extensions: Vec<&str> = phones[0]
        .lines
        .iter()
        .map(|l| l.extension.as_str())
        .collect();
    assert_eq!(extensions, ["101", "102", "103"]);
    assert_eq!(phones[1].lines[0].extension, "301");
    assert_eq!(plan.phones.location(1).line, 5);
}

#[test]
fn csv_phone_given_again_differently_is_an_error_in_any_order() {
    let head = "tenant,mac,family,extension,registrar\n";
    // In MAC order, and not.
    for rows in [
        "acme,0004f2000001,poly,101,sip\nacme,0004f2000002,poly,201,sip\nbeta,0004f2000002,poly,202,sip\n",
        "acme,0004f2000002,poly,201,sip\nacme,0004f2000001,poly,101,sip\nbeta,0004f2000002,poly,202,sip\n",
    ] {
        let plan = plan_text("phones.csv", &format!("{head}{rows}"));
        let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains(": phone 0004f2000002 is left out: its row at ")
                && text[0].ends_with("phones.csv:4 is invalid, and its other rows alone would replace all of its stored lines"),
            "{text:?}"
        );
        assert!(
            text[1].contains("phones.csv:4:1 (tenant): phone 0004f2000002 appears again"),
            "{text:?}"
        );
        let macs: Vec<String> = phones(&plan).iter().map(|p| p.mac.to_string()).collect();
        assert_eq!(macs, ["0004f2000001"]);
    }
}

#[test]
fn csv_bad_mac_names_line_and_column() {
    let plan = plan_text(
        "phones.csv",
        "tenant,mac,family,extension,registrar\nacme,001565aabb01,yealink,101,sip\nacme,00156zzz,yealink,102,sip\n",
    );
    assert_eq!(plan.errors.len(), 1);
    let e = &plan.errors[0];
    assert_eq!((e.location.line, e.location.column), (3, 2));
    assert!(e.to_string().contains("phones.csv:3:2 (mac)"), "{e}");
    assert!(e.message.contains("not a MAC"), "{e}");
}

#[test]
fn json_bad_value_names_line_and_column() {
    let plan = plan_text(
        "data.json",
        "{\n  \"tenants\": [{\"slug\": \"acme\", \"name\": \"Acme\"}],\n  \"phones\": [\n    {\"tenant\": \"acme\", \"mac\": \"nope\", \"family\": \"snom\"}\n  ]\n}\n",
    );
    assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
    let e = &plan.errors[0];
    assert_eq!(e.location.line, 4);
    assert!(e.location.column > 20, "{e}");
    assert!(e.message.contains("not a MAC"), "{e}");
}

/// A JSON file's phones are packed as they are read; one the parse then
/// refuses leaves none behind, so nothing but its own error is reported
/// (not its phones again as duplicates of another file's).
#[test]
fn json_refused_after_its_phones_leaves_only_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("phones.csv");
    std::fs::write(&csv, "tenant,mac,family\nacme,0004f2000001,poly\n").unwrap();
    let phone = "{\"tenant\": \"acme\", \"mac\": \"0004f2000001\", \"family\": \"poly\"}";
    for (document, error) in [
        (format!("{{\"phones\": [{phone}]}} ,"), ":1:"),
        (
            format!("{{\"phones\": [{phone}], \"phone\": []}}"),
            "unknown field `phone`, expected one of `tenants`, `phones`",
        ),
        (
            format!("{{\"phones\": [{phone}], \"phones\": []}}"),
            "duplicate field `phones`",
        ),
        (
            format!("{{\"phones\": [{phone}, 7]}}"),
            "invalid type: integer `7`",
        ),
    ] {
        let json = dir.path().join("data.json");
        std::fs::write(&json, &document).unwrap();
        let plan = plan_files(&[csv.clone(), json]);
        let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 1, "{document}: {text:?}");
        assert!(
            text[0].contains("data.json") && text[0].contains(error),
            "{document}: {text:?}"
        );
        assert_eq!(plan.whole_file_errors, 1);
        assert_eq!(phones(&plan).len(), 1, "{document}: the CSV's phone alone");
    }
}

#[test]
fn json_not_utf8_names_where() {
    let plan = plan_bytes(
        "data.json",
        b"{\"phones\": [\n  {\"label\": \"Desk \xff\"}]}",
    );
    let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].ends_with("data.json:2:19: not UTF-8 text: JSON must be UTF-8"),
        "{text:?}"
    );
    assert_eq!(plan.whole_file_errors, 1);
}

#[test]
fn json_positions_and_order() {
    let plan = plan_text(
        "data.json",
        "{\"phones\": [\n {\"tenant\": \"acme\", \"mac\": \"0004132a0001\", \"family\": \"snom\", \"lines\": [{\"extension\": \"1\", \"registrar\": \"r\"}]}\n],\n\"tenants\": [\n {\"slug\": \"acme\", \"name\": \"Acme\", \"default_region\": \"gb\"}\n],\n\"directory\": [{\"tenant\": \"acme\", \"name\": \"Bob\", \"numbers\": [{\"number\": \"+1 (555) 010-1234\"}]}]}",
    );
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert!(matches!(&plan.items[0].0, Mutation::UpsertTenant(t) if t.default_region == "GB"));
    assert_eq!(plan.items[1].1.line, 2);
    assert!(
        matches!(&plan.items[2].0, Mutation::UpsertDirectoryEntry(d) if d.external_id == "name:bob")
    );
}

/// Element positions come from the root object's members only: a
/// tenant's setting or name spelling `"phones": [` first does not move
/// them, and a member's key may be escaped.
#[test]
fn json_positions_are_the_root_members_elements() {
    let text = "{\"tenants\": [{\"slug\": \"acme\", \"name\": \"\\\"phones\\\": [{\",\n\
                \"settings\": {\"phones\": [{\"a\": 1}, {\"b\": [2, {}]}]}}],\n\
                \"ph\\u006fnes\": [\n\
                \x20 {\"tenant\": \"acme\", \"mac\": \"0004f2000001\", \"family\": \"poly\"},\n\
                \x20    {\"tenant\": \"acme\", \"mac\": \"0004f2000001\", \"family\": \"poly\"}\n\
                ]}";
    let plan = super::plan_text("data.json", true, text);
    let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        ["data.json:5:6 (phones[1]): duplicate phone 0004f2000001, first given at data.json:4:3 (phones[0])"]
    );
    assert_eq!(plan.items[0].1.line, 1, "the tenant");
}

/// A column named twice would be read from its first copy only, the
/// second's cells dropped without a word: the file is refused instead.
#[test]
fn a_column_given_twice_is_an_error() {
    for (file, text) in [
        (
            "p.csv",
            "tenant,mac,family,label,label\nacme,001565000001,yealink,a,b\n",
        ),
        (
            "d.csv",
            "tenant,name,work,work\nacme,Alice,5550101234,5550101299\n",
        ),
    ] {
        let plan = plan_text(file, text);
        let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("{file}:1:")) && e.contains("given twice")),
            "{errors:?}"
        );
    }
}

/// Without `extension` a phones file keeps every phone's lines, so a line
/// column there would be dropped unread: refused, at that column.
#[test]
fn line_columns_without_extension_are_an_error() {
    let plan = plan_text(
        "p.csv",
        "tenant,mac,family,label,password\nacme,001565000001,yealink,a,s3cret\n",
    );
    assert_eq!(plan.whole_file_errors, 1);
    let error = plan.errors[0].to_string();
    assert!(
        error.contains("p.csv:1:5") && error.contains("needs the `extension` column"),
        "{error}"
    );
    // Without any line column the file is a phones file that keeps lines.
    let plan = plan_text(
        "p.csv",
        "tenant,mac,family,label\nacme,001565000001,yealink,a\n",
    );
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let Mutation::UpsertPhones(batch) = &plan.items[0].0 else {
        panic!("not a batch: {:?}", plan.items[0].0);
    };
    let kept = batch.get(0).kept;
    for field in [
        Kept::LINES,
        Kept::HTTP_PASSWORD,
        Kept::MODEL,
        Kept::VARIABLES,
    ] {
        assert!(kept.contains(field), "{field:?} not kept: {kept:?}");
    }
    assert!(!kept.contains(Kept::LABEL));
}

#[test]
fn duplicates_and_unknown_columns_are_errors() {
    let plan = plan_text(
        "t.csv",
        "slug,name,colour\nacme,Acme,red\nacme,Acme again,blue\n",
    );
    let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter().any(|e| e.contains("unknown column \"colour\"")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("duplicate tenant") && e.contains("t.csv:3")),
        "{text:?}"
    );
}

#[test]
fn duplicate_phone_across_files_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let head = "tenant,mac,family,extension,registrar\n";
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    std::fs::write(&a, format!("{head}acme,001565aabb01,yealink,101,sip\n")).unwrap();
    std::fs::write(
        &b,
        format!("{head}acme,001565aabb02,yealink,102,sip\nacme,001565AABB01,yealink,103,sip\n"),
    )
    .unwrap();
    let plan = plan_files(&[a, b]);
    let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].contains("b.csv:3:1: duplicate phone 001565aabb01, first given at ")
            && text[0].ends_with("a.csv:2:1"),
        "{text:?}"
    );
}

#[test]
fn csv_row_disagreeing_with_its_phone_names_the_field_it_differs_in() {
    let plan = plan_text(
        "phones.csv",
        "tenant,mac,family,model,label,http_password,line,extension,registrar\n\
         acme,0004f2000001,poly,VVX,,,1,101,sip\n\
         acme,0004f2000002,poly,VVX,Desk,pw,1,201,sip\n\
         beta,0004f2000001,poly,VVX,,,2,102,sip\n\
         acme,0004f2000001,poly,VVX 2,,,3,103,sip\n\
         acme,0004f2000003,poly,VVX,Hall,,1,301,sip\n\
         acme,0004f2000003,poly,VVX,Lobby,,2,302,sip\n\
         acme,0004f2000004,poly,VVX,,pw,1,401,sip\n\
         acme,0004f2000004,poly,VVX,,pw ,2,402,sip\n\
         acme,0004f2000002,poly,VVX,Desk,pw,2,202,sip\n",
    );
    let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    let again = |mac: &str, field: &str, first: u32| {
        format!(
            "({field}): phone {mac} appears again with another {field} than on its first row, \
             line {first}: every row of a phone repeats the phone's own fields"
        )
    };
    let left_out = |mac: &str| format!("phone {mac} is left out: its row at ");
    let expected = [
        ("2:1", left_out("0004f2000001"), "/phones.csv:4 is invalid"),
        ("4:1", again("0004f2000001", "tenant", 2), ""),
        ("5:4", again("0004f2000001", "model", 2), ""),
        ("6:1", left_out("0004f2000003"), "/phones.csv:7 is invalid"),
        ("7:5", again("0004f2000003", "label", 6), ""),
        ("8:1", left_out("0004f2000004"), "/phones.csv:9 is invalid"),
        ("9:6", again("0004f2000004", "http_password", 8), ""),
    ];
    assert_eq!(text.len(), expected.len(), "{text:?}");
    for (text, (place, message, tail)) in text.iter().zip(expected) {
        let at = format!("/phones.csv:{place}");
        assert!(
            text.contains(&at) && text.contains(&message) && text.contains(tail),
            "{text:?}: {at} {message} {tail}"
        );
    }
    // A password's value is never echoed into an error.
    assert!(!text.iter().any(|t| t.contains("pw ")), "{text:?}");
    // Not the phone with its first row only: its line list is complete,
    // so that would delete its other stored lines under --skip-invalid.
    let phones = phones(&plan);
    assert_eq!(phones.len(), 1);
    assert_eq!(phones[0].mac.to_string(), "0004f2000002");
    assert_eq!(phones[0].lines.len(), 2);
    assert_eq!(plan.phones.location(0).line, 3);
}

#[test]
fn json_phone_given_twice_is_an_error_and_phones_keep_their_element() {
    let plan = plan_text(
        "data.json",
        "{\"phones\": [\n {\"tenant\": \"acme\", \"mac\": \"0004132a0001\", \"family\": \"snom\"},\n  {\"tenant\": \"acme\", \"mac\": \"0004132a0002\", \"family\": \"snom\"},\n {\"tenant\": \"acme\", \"mac\": \"0004132A0001\", \"family\": \"snom\"}\n]}",
    );
    let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0]
            .contains("data.json:4:2 (phones[2]): duplicate phone 0004132a0001, first given at ")
            && text[0].ends_with("data.json:2:2 (phones[0])"),
        "{text:?}"
    );
    assert_eq!(phones(&plan).len(), 2);
    let second = plan.phones.location(1);
    assert_eq!(
        (second.line, second.column, second.field.as_deref()),
        (3, 3, Some("phones[1]"))
    );
}

#[test]
fn phones_across_files_keep_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let head = "tenant,mac,family,line,extension,registrar\n";
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    std::fs::write(&a, format!("{head}acme,001565aabb01,yealink,1,101,sip\n")).unwrap();
    std::fs::write(
        &b,
        format!("{head}acme,001565aabb02,yealink,2,202,sip\nacme,001565aabb03,yealink,1,301,sip\n"),
    )
    .unwrap();
    let plan = plan_files(&[a, b]);
    let text: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].ends_with("b.csv:2:1: phone 001565aabb02: line numbers must run 1, 2, 3... without gaps or repeats, got [2]"),
        "{text:?}"
    );
    let macs: Vec<String> = phones(&plan).iter().map(|p| p.mac.to_string()).collect();
    assert_eq!(macs, ["001565aabb01", "001565aabb03"]);
    assert_eq!(
        plan.phones.location(1).to_string(),
        format!("{}:3:1", dir.path().join("b.csv").display())
    );
    assert_eq!(plan.changes(), 2);
}

#[test]
fn directory_csv_collects_number_columns() {
    let plan = plan_text(
        "dir.csv",
        "tenant,external_id,name,company,work,mobile\nacme,42,Alice,Acme,555.010.1234,\nacme,,Bob,,,\n",
    );
    assert_eq!(plan.errors.len(), 1);
    assert!(plan.errors[0]
        .message
        .contains("numbers: at least one, each with at least three digits"));
    let Mutation::UpsertDirectoryEntry(d) = &plan.items[0].0 else {
        panic!()
    };
    assert_eq!(d.numbers.len(), 1);
    assert_eq!(&*d.numbers[0].kind, "work");
}

/// Two people of one name without ids: the second is named, with what to
/// do; with ids of their own, both import.
#[test]
fn two_entries_of_one_name_without_ids_say_to_give_them_ids() {
    let plan = plan_text(
        "dir.csv",
        "tenant,external_id,name,work\n\
         acme,,John Smith,+1 212 555 0101\n\
         acme,,john smith,+1 212 555 0102\n",
    );
    let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("dir.csv:3:")
            && errors[0].contains("two entries of this name and no external_id")
            && errors[0].contains("first given at"),
        "{errors:?}"
    );
    let plan = plan_text(
        "dir.csv",
        "tenant,external_id,name,work\n\
         acme,7,John Smith,+1 212 555 0101\n\
         acme,8,John Smith,+1 212 555 0102\n",
    );
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
}

/// A cell of two numbers, as Google Contacts exports a contact's two work
/// numbers, is refused where it is instead of imported as one number made
/// of both (which no caller has, and the first number lost).
#[test]
fn a_cell_of_several_numbers_is_refused_at_its_column() {
    let plan = plan_text(
        "dir.csv",
        "tenant,name,work,mobile\n\
         acme,Alice,+44 20 7946 0000 ::: +44 20 7946 0001,\n\
         acme,Bob,,\"+44 7700 900001\n+44 7700 900002\"\n\
         acme,Carol,\"+1 555 010 0100,,98765432#\",\n",
    );
    let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("dir.csv:2:3 (work)") && errors[0].contains("one number each"),
        "{errors:?}"
    );
    assert!(errors[1].contains("dir.csv:3:4 (mobile)"), "{errors:?}");
    // A dial string with pauses and tones is one number.
    assert_eq!(plan.changes(), 1);
}

#[test]
fn csv_errors_name_their_own_line_after_blank_lines_and_quoted_breaks() {
    let head = "tenant,mac,family,extension,password,registrar\n";
    for (ending, last) in [("\n", "\n"), ("\r\n", "\n"), ("\n", "")] {
        let rows = [
            "acme,001565aabb01,yealink,101,a,sip",
            "",
            "acme,00156zzz,yealink,102,b,sip",
            "",
            "",
            "acme,001565aabb03,yealink,103,\"two\nlines\",sip",
            "acme,001565aabb04,nofamily,104,d,sip",
        ];
        let text = format!("{head}{}{last}", rows.join("\n")).replace('\n', ending);
        let plan = plan_text("phones.csv", &text);
        let found: Vec<String> = plan
            .errors
            .iter()
            .map(|e| format!("{}:{}", e.location.line, e.location.column))
            .collect();
        // Header line 1; the bad MAC is on line 4, the bad family on 9
        // (after a quoted field that spans lines 7 and 8).
        assert_eq!(
            found,
            ["4:2", "9:3"],
            "{ending:?} {last:?}: {:?}",
            plan.errors
        );
    }
}

/// U+0000 is refused at its own row and cell, in CSV and JSON alike:
/// PostgreSQL cannot store it in text, and SQLite would cut it short.
#[test]
fn nul_characters_are_refused_where_they_are() {
    let plan = plan_text(
        "phones.csv",
        "tenant,mac,family,model,line,extension,display_name,password,registrar\n\
         acme,001565aabb01,yealink,T46S,1,101,Recep\0tion,pw1,sip.example.net\n\
         acme,001565aabb02,yealink,T46S,1,102,Fine,pw2,sip.example.net\n",
    );
    assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
    let e = &plan.errors[0];
    assert!(
        e.to_string().contains("phones.csv:2:7 (display_name)"),
        "{e}"
    );
    assert!(e.message.contains("U+0000"), "{e}");
    assert_eq!(phones(&plan).len(), 1, "the other row stands");

    let plan = plan_text(
        "data.json",
        "{\"phones\": [\n {\"tenant\": \"acme\", \"mac\": \"0004132a0001\", \"family\": \"snom\", \
         \"lines\": [{\"extension\": \"1\", \"registrar\": \"r\"}, \
         {\"extension\": \"2\", \"display_name\": \"a\\u0000b\", \"registrar\": \"r\"}]}\n]}",
    );
    assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
    let e = &plan.errors[0];
    assert_eq!(e.location.line, 2, "{e}");
    assert_eq!(
        e.location.field.as_deref(),
        Some("phones[0] line 2 display_name")
    );
    assert!(e.message.contains("U+0000"), "{e}");
    assert!(phones(&plan).is_empty());
}

/// Writes `bytes` (not necessarily UTF-8) as `name` and plans it.
fn plan_bytes(name: &str, bytes: &[u8]) -> ImportPlan {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    plan_files(&[path])
}

fn places(plan: &ImportPlan) -> Vec<String> {
    plan.errors
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
        .collect()
}

/// A record csv cannot take (a cell too many or too few, text that is not
/// UTF-8) spoils its own row only: each is reported at its line, and the
/// rows after it are still read and checked.
#[test]
fn csv_malformed_records_are_each_reported_and_the_rest_is_read() {
    let text: &[u8] = b"tenant,mac,family,extension,display_name,registrar\n\
        acme,001565aabb01,yealink,101,a,sip\n\
        \n\
        acme,001565aabb02,yealink,102,Smith, Jo,sip\n\
        acme,001565aabb03,yealink,103,c,sip\n\
        acme,001565aabb04,yealink,104,Ren\xe9e,sip\n\
        acme,001565zzzz05,yealink,105,e,sip\n\
        acme,001565aabb06,yealink,106,\"two\nlines\",sip,extra\n\
        \x20\x20\n\
        acme,001565aabb07,yealink,107,\"Ren\xe9e\non two lines\",sip\n\
        acme,001565aabb08,yealink\n\
        acme,001565aabb09,nofamily,109,i,sip\n\
        acme,001565aabb10,yealink,110,j,sip\n";
    let plan = plan_bytes("phones.csv", text);
    // Line 4 one cell too many; 6 Latin-1 in display_name; 7 a bad MAC;
    // 8 (a quoted break to 9) a cell too many; 10 blank but for spaces;
    // 11 (to 12) Latin-1 again; 13 cells missing; 14 a bad family.
    assert_eq!(
        places(&plan),
        [
            "4:1 -",
            "6:5 display_name",
            "7:2 mac",
            "8:1 -",
            "11:5 display_name",
            "13:1 -",
            "14:3 family",
        ],
        "{:?}",
        plan.errors
    );
    assert!(
        plan.errors[0]
            .message
            .contains("malformed CSV: 7 cells where the header has 6"),
        "{}",
        plan.errors[0]
    );
    assert!(
        plan.errors[1].message.contains("not valid UTF-8"),
        "{}",
        plan.errors[1]
    );
    assert!(
        plan.errors[5]
            .message
            .contains("malformed CSV: 3 cells where the header has 6"),
        "{}",
        plan.errors[5]
    );
    let macs: Vec<String> = phones(&plan).iter().map(|p| p.mac.to_string()).collect();
    assert_eq!(macs, ["001565aabb01", "001565aabb03", "001565aabb10"]);

    // Other kinds of file alike.
    let plan = plan_bytes(
        "tenants.csv",
        b"slug,name\nacme,Acme\nbeta,Beta,Inc\ncaf\xe9,Cafe\ndelta,Delta\n-x,Dash\n",
    );
    assert_eq!(
        places(&plan),
        ["3:1 -", "4:1 slug", "6:1 slug"],
        "{:?}",
        plan.errors
    );
    assert_eq!(plan.items.len(), 2);
}

/// A phone one of whose rows is in error is left out whole, and said so:
/// its line list is complete, so importing its other rows would delete
/// the stored line the bad row was to give.
#[test]
fn csv_phone_with_an_invalid_row_is_left_out_whole() {
    let text: &[u8] = b"tenant,mac,family,line,extension,display_name,registrar\n\
        acme,001565aabb01,yealink,1,101,a,sip\n\
        acme,001565aabb01,yealink,2,102,Smith, Jo,sip\n\
        acme,001565aabb02,yealink,1,201,b,sip\n\
        acme,001565aabb02,yealink,2,202,Ren\xe9e,sip\n\
        acme,001565aabb03,yealink,1,301,c,sip\n\
        acme,001565aabb03,yealink,2,302,c,\n\
        acme,001565aabb04,yealink,1,401,d,sip\n\
        acme,001565aabb04,yealink,2,402,d,sip\n";
    let plan = plan_bytes("phones.csv", text);
    assert_eq!(
        places(&plan),
        [
            "3:1 -",
            "5:6 display_name",
            "7:7 registrar",
            "2:1 -",
            "4:1 -",
            "6:1 -"
        ],
        "{:?}",
        plan.errors
    );
    for (e, (mac, row)) in plan.errors[3..].iter().zip([
        ("001565aabb01", 3),
        ("001565aabb02", 5),
        ("001565aabb03", 7),
    ]) {
        assert!(
            e.message
                .starts_with(&format!("phone {mac} is left out: its row at "))
                && e.message.contains(&format!("phones.csv:{row} is invalid")),
            "{e}"
        );
    }
    let phones = phones(&plan);
    assert_eq!(phones.len(), 1);
    assert_eq!(phones[0].mac.to_string(), "001565aabb04");
    assert_eq!(phones[0].lines.len(), 2);
}

/// Failing to read the input is no row's fault: it ends the file, after
/// the rows read before it are checked.
#[test]
fn csv_read_failure_ends_the_file() {
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let text = "tenant,mac,family,extension,registrar\n\
                acme,001565aabb01,yealink,101,sip\n\
                acme,00156zzz,yealink,102,sip\n";
    let file: Arc<Path> = Arc::from(Path::new("phones.csv"));
    let mut plan = ImportPlan::default();
    let mut phones_ = Phones::default();
    super::csv::plan(
        &file,
        std::io::Read::chain(text.as_bytes(), Broken),
        (3, text.len()),
        &mut plan,
        &mut phones_,
    );
    let plan = finish(plan, phones_);
    assert_eq!(places(&plan), ["3:2 mac", "4:1 -"], "{:?}", plan.errors);
    assert!(
        plan.errors[1].message.contains("cannot read: disk on fire"),
        "{}",
        plan.errors[1]
    );
    assert_eq!(phones(&plan).len(), 1);
}

//! How a file is saved, not what it holds: a byte-order mark, UTF-16, cells
//! separated by something else than commas. A file from disk and the same
//! bytes sent to the admin API ([`plan_bytes`]) get the same answer.

use super::*;

/// The errors of `bytes` as the file `name`, then as the admin API's body
/// (JSON or CSV as `name` says), each as `line:column: message`. The two
/// must agree.
fn errors(name: &str, bytes: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let file = plan_files(&[path]);
    let body = plan_bytes("request", name.ends_with(".json"), bytes);
    let text = |plan: &ImportPlan| -> Vec<String> {
        (plan.errors.iter())
            .map(|e| {
                let l = &e.location;
                format!("{}:{}: {}", l.line, l.column, e.message)
            })
            .collect()
    };
    let (file, body) = (text(&file), text(&body));
    assert_eq!(file, body, "{name}: a file and the API's body disagree");
    file
}

const PHONES_JSON: &str = "{\"phones\": [{\"tenant\": \"acme\", \"mac\": \"001565000001\", \
                           \"family\": \"yealink\"}]}\r\n";

#[test]
fn a_json_document_after_a_byte_order_mark_is_read() {
    let bytes = [b"\xef\xbb\xbf".as_slice(), PHONES_JSON.as_bytes()].concat();
    assert_eq!(errors("phones.json", &bytes), Vec::<String>::new());
    let plan = plan_bytes("request", true, &bytes);
    assert_eq!(plan.changes(), 1);
    // Its faults are still placed as an editor shows them, the mark unseen.
    let bad = b"\xef\xbb\xbf{\"phones\": 7}";
    let found = errors("phones.json", bad);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("1:12: "), "{found:?}");
}

#[test]
fn utf16_is_named_whatever_the_kind() {
    let utf16 = |text: &str, big_endian: bool| -> Vec<u8> {
        let mut bytes = if big_endian {
            vec![0xfe, 0xff]
        } else {
            vec![0xff, 0xfe]
        };
        for unit in text.encode_utf16() {
            let pair = if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            };
            bytes.extend(pair);
        }
        bytes
    };
    let csv = "tenant\tmac\tfamily\r\nacme\t001565000001\tyealink\r\n";
    for big_endian in [false, true] {
        for (name, text) in [("phones.csv", csv), ("phones.json", PHONES_JSON)] {
            let found = errors(name, &utf16(text, big_endian));
            assert_eq!(
                found,
                ["1:1: UTF-16 text: save the file as CSV UTF-8 (a JSON document as UTF-8)"],
                "{name}"
            );
        }
    }
}

#[test]
fn cells_separated_by_semicolons_or_tabs_are_named() {
    for (separator, said) in [(";", "semicolons (;)"), ("\t", "tabs")] {
        let text = "tenant,mac,family\nacme,001565000001,yealink\n".replace(',', separator);
        let found = errors("phones.csv", text.as_bytes());
        assert_eq!(
            found,
            [format!(
                "1:1: the file's cells are separated by {said}, not commas: save it as \
                 comma-separated \"CSV UTF-8\""
            )],
        );
    }
    // A header of one column that names no kind is still just that.
    let found = errors("phones.csv", b"serial\n42\n");
    assert!(
        found[0].contains("cannot tell what this CSV holds"),
        "{found:?}"
    );
}

/// Bytes that are not UTF-8 are named where they are, by line and column
/// (and a CSV's cell by its column's name), not by their offset.
#[test]
fn bytes_that_are_not_utf8_are_placed() {
    let found = errors(
        "phones.json",
        b"{\"phones\": [\n  {\"label\": \"Desk \xff\"}]}",
    );
    assert_eq!(found, ["2:19: not UTF-8 text: JSON must be UTF-8"]);
    let csv = b"tenant,mac,family,label\nacme,001565000001,yealink,Ren\xe9e\n";
    let plan = plan_bytes("request", false, csv);
    let e = &plan.errors[0];
    assert_eq!(
        (
            e.location.line,
            e.location.column,
            e.location.field.as_deref()
        ),
        (2, 4, Some("label")),
        "{e}"
    );
    assert!(e.message.contains("not valid UTF-8"), "{e}");
}

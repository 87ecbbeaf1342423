//! `dialtone import` of files saved the way a spreadsheet or an editor
//! saves them: named for what is wrong with how they were saved, whether
//! read from a file or from standard input.

mod common;

use common::*;

fn utf16le(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xff, 0xfe];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    bytes
}

#[test]
fn utf16_and_semicolons_are_named_from_a_file_and_from_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    assert!(with_input(dir.path(), &url, &["migrate"], b"")
        .status
        .success());
    let utf16 = "UTF-16 text: save the file as CSV UTF-8";
    let semicolons =
        "separated by semicolons (;), not commas: save it as comma-separated \"CSV UTF-8\"";
    let cases = [
        (
            "phones.csv",
            utf16le("tenant\tmac\tfamily\r\nacme\t001565000001\tyealink\r\n"),
            utf16,
        ),
        ("tenants.json", utf16le("{\"tenants\": []}"), utf16),
        (
            "phones.csv",
            b"tenant;mac;family\r\nacme;001565000001;yealink\r\n".to_vec(),
            semicolons,
        ),
    ];
    for (name, bytes, said) in cases {
        std::fs::write(dir.path().join(name), &bytes).unwrap();
        let from_file = with_input(dir.path(), &url, &["import", name], b"");
        let from_stdin = with_input(dir.path(), &url, &["import", "-"], &bytes);
        for (out, place) in [
            (from_file, format!("{name}:1:1: ")),
            (from_stdin, "stdin:1:1: ".into()),
        ] {
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{name}: {err}");
            let line = err.lines().find(|l| l.contains(said)).unwrap_or_default();
            assert!(line.starts_with(&place), "{name}: {err}");
        }
    }
}

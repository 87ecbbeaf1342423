//! `dialtone export -` piped to `dialtone import -`: an export that fails
//! partway writes nothing to standard output (a CSV cut short is still a
//! valid CSV), and what standard input brings in is read past a
//! byte-order mark.

mod common;

use common::*;

/// Tenant `aaa`'s entries come first in an export; `zzz` has two entries
/// a CSV row cannot hold, which a tenant may make through the API.
const FLEET: &str = r#"{
"tenants": [{"slug": "aaa", "name": "Aaa"}, {"slug": "zzz", "name": "Zzz"}],
"directory": [
  {"tenant": "aaa", "external_id": "1", "name": "Alice", "numbers": [{"number": "+1 555 0100", "kind": "work"}]},
  {"tenant": "aaa", "external_id": "2", "name": "Bob", "numbers": [{"number": "+1 555 0101", "kind": "work"}]},
  {"tenant": "zzz", "external_id": "1", "name": "Carol", "numbers": [
    {"number": "+1 555 0102", "kind": "work"}, {"number": "+1 555 0103", "kind": "work"}]},
  {"tenant": "zzz", "external_id": "2", "name": "Dave", "numbers": [{"number": "+1 555 0104", "kind": "pager"}]}
]}"#;

#[test]
fn a_failed_export_writes_nothing_to_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let out = with_input(dir.path(), &url, &["migrate"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = with_input(dir.path(), &url, &["import", "-"], FLEET.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));

    let args = ["export", "-", "--format", "csv", "--kind", "directory"];
    let out = with_input(dir.path(), &url, &args, b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&out.stdout), "", "a failed export wrote to stdout");
    for named in [
        "2 directory entries have no CSV form",
        "\"Carol\" of zzz: two work numbers",
        "\"Dave\" of zzz: a number of kind \"pager\"",
        "--format json",
    ] {
        assert!(stderr.contains(named), "{named:?} not in {stderr}");
    }

    // JSON carries it all, and reads back through a pipe.
    let out = with_input(dir.path(), &url, &["export", "-"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"kind\":\"pager\""));
    let other = sqlite_url(&dir.path().join("other"));
    std::fs::create_dir(dir.path().join("other")).unwrap();
    assert!(with_input(dir.path(), &other, &["migrate"], b"")
        .status
        .success());
    let back = with_input(dir.path(), &other, &["import", "-"], &out.stdout);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert!(
        text(&back.stdout).contains("directory entries +4"),
        "{}",
        text(&back.stdout)
    );
}

#[test]
fn standard_input_is_read_past_a_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    assert!(with_input(dir.path(), &url, &["migrate"], b"")
        .status
        .success());
    let json = b"\xef\xbb\xbf{\"tenants\": [{\"slug\": \"acme\", \"name\": \"Acme\"}]}";
    let out = with_input(dir.path(), &url, &["import", "-"], json);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("tenants +1"),
        "{}",
        text(&out.stdout)
    );
    let csv = b"\xef\xbb\xbfslug,name\nglobex,Globex\n";
    let out = with_input(dir.path(), &url, &["import", "-"], csv);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

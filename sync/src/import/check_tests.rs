//! A row the admin API refuses ([`crate::checks`]) is an invalid row of an
//! import too, in CSV and JSON: reported at its file, line, column and
//! field, and left out of the plan while the other rows stay in it (what
//! `--skip-invalid` imports).

use super::*;

/// Each case: a file, the one error it must give (a place, then part of
/// the reason), and the rows the plan must keep.
const CASES: &[(&str, &str, &str, &str, usize)] = &[
    (
        "phones.csv",
        "tenant,mac,family,model,label\n\
         acme,001565000001,yealink,T46S,Desk\n\
         acme,001565000002,yealink,../T46S,Desk\n",
        "phones.csv:3:4 (model)",
        "model: letters, digits",
        1,
    ),
    (
        "phones.csv",
        "tenant,mac,family,http_user,http_password\n\
         acme,001565000001,yealink,admin,pw\n\
         acme,001565000002,yealink,admin,\n",
        "phones.csv:3:5 (http_password)",
        "http_password: required when http_user is set",
        1,
    ),
    (
        "phones.csv",
        "tenant,mac,family,http_user,http_password\n\
         acme,001565000001,yealink,admin,pw\n\
         acme,001565000002,yealink,,pw\n",
        "phones.csv:3:4 (http_user)",
        "http_user: required when http_password is set",
        1,
    ),
    (
        "phones.csv",
        "tenant,mac,family,extension,display_name,registrar\n\
         acme,001565000001,yealink,101,Desk,sip\n\
         acme,001565000002,yealink,102,LONG,sip\n",
        "phones.csv:3:5 (display_name)",
        "text fields are at most 256 bytes",
        1,
    ),
    (
        "phones.json",
        r#"{"phones": [
            {"tenant": "acme", "mac": "001565000001", "family": "yealink", "label": "Desk"},
            {"tenant": "acme", "mac": "001565000002", "family": "yealink",
             "lines": [{"extension": "101", "registrar": "sip", "proxy": "LONG"}]}
        ]}"#,
        "phones.json:3:13 (phones[1] line 1 proxy)",
        "text fields are at most 256 bytes",
        1,
    ),
    (
        "phones.json",
        r#"{"phones": [
            {"tenant": "acme", "mac": "001565000001", "family": "yealink"},
            {"tenant": "acme", "mac": "001565000002", "family": "yealink", "http_user": "admin"}
        ]}"#,
        "phones.json:3:13 (phones[1] http_password)",
        "http_password: required when http_user is set",
        1,
    ),
    (
        "phones.json",
        r#"{"phones": [
            {"tenant": "acme", "mac": "001565000001", "family": "yealink"},
            {"tenant": "acme", "mac": "001565000002", "family": "yealink", "http_password": "pw"}
        ]}"#,
        "phones.json:3:13 (phones[1] http_user)",
        "http_user: required when http_password is set",
        1,
    ),
    (
        "directory.csv",
        "tenant,name,work,mobile\n\
         acme,Alice,+1 555 0100,\n\
         acme,Bob,+1 555 0101,12\n",
        "directory.csv:3:4 (mobile)",
        "each with at least three digits",
        1,
    ),
    (
        "directory.csv",
        "tenant,name,company,work\n\
         acme,Alice,Acme,+1 555 0100\n\
         acme,Bob,LONG,+1 555 0101\n",
        "directory.csv:3:3 (company)",
        "fields of at most 256 bytes",
        1,
    ),
    (
        "directory.json",
        r#"{"directory": [
            {"tenant": "acme", "name": "Alice", "numbers": [{"number": "+1 555 0100"}]},
            {"tenant": "acme", "name": "Bob", "numbers": [NUMBERS]}
        ]}"#,
        "directory.json:3:13 (directory[1] numbers)",
        "at most 16 numbers",
        1,
    ),
    (
        "sources.json",
        r#"{"directory_sources": [
            {"tenant": "acme", "name": "ad", "kind": "http", "settings": {}},
            {"tenant": "acme", "name": "slow", "kind": "http", "settings": {}, "timeout_ms": 60000}
        ]}"#,
        "sources.json:3:13 (directory_sources[1] timeout_ms)",
        "timeout_ms: 1 to 10000",
        1,
    ),
    (
        "sources.json",
        r#"{"directory_sources": [
            {"tenant": "acme", "name": "ad", "kind": "http", "settings": {}},
            {"tenant": "acme", "name": "a\nb", "kind": "http", "settings": {}}
        ]}"#,
        "sources.json:3:13 (directory_sources[1] name)",
        "none of them control characters",
        1,
    ),
    // A reader splitting on Unicode line breaks saw a forged fail2ban line.
    (
        "sources.json",
        r#"{"directory_sources": [
            {"tenant": "acme", "name": "ad", "kind": "http", "settings": {}},
            {"tenant": "acme", "name": "x\u2028provisioning: ban 192.0.2.5 for 600s after repeated misses", "kind": "http", "settings": {}}
        ]}"#,
        "sources.json:3:13 (directory_sources[1] name)",
        "name holds U+2028, a line break or invisible formatting character",
        1,
    ),
    (
        "sources.json",
        r#"{"directory_sources": [
            {"tenant": "acme", "name": "ad", "kind": "http", "settings": {}},
            {"tenant": "acme", "name": "crm\u202egnissim", "kind": "http", "settings": {}}
        ]}"#,
        "sources.json:3:13 (directory_sources[1] name)",
        "name holds U+202E",
        1,
    ),
    (
        "tenants.csv",
        "slug,name\nacme,Acme\nglobex,\"Glo\u{202e}bex\"\n",
        "tenants.csv:3:2 (name)",
        "tenant name holds U+202E",
        1,
    ),
    (
        "tenants.json",
        r#"{"tenants": [
            {"slug": "acme", "name": "Acme"},
            {"slug": "globex", "name": "LONGNAME"}
        ]}"#,
        "tenants.json:3:13 (tenants[1] name)",
        "name: at most 256 characters",
        1,
    ),
    // An object nested past what an export can carry back in.
    (
        "phones.json",
        r#"{"phones": [
            {"tenant": "acme", "mac": "001565000001", "family": "yealink"},
            {"tenant": "acme", "mac": "001565000002", "family": "yealink", "variables": {"a": DEEP}}
        ]}"#,
        "phones.json:3:13 (phones[1] variables)",
        "variables nests 41 levels deep; at most 32",
        1,
    ),
    (
        "phones.csv",
        "tenant,mac,family,variables\n\
         acme,001565000001,yealink,\n\
         acme,001565000002,yealink,\"{\"\"a\"\": DEEP}\"\n",
        "phones.csv:3:4 (variables)",
        "nests 41 levels deep; at most 32",
        1,
    ),
    (
        "tenants.json",
        r#"{"tenants": [
            {"slug": "acme", "name": "Acme"},
            {"slug": "deep", "name": "Deep", "settings": {"a": DEEP}}
        ]}"#,
        "tenants.json:3:13 (tenants[1] settings)",
        "settings nests 41 levels deep; at most 32",
        1,
    ),
    // Long digit columns a spreadsheet turned into numbers: their digits
    // are gone, or other characters came with them.
    (
        "phones.csv",
        "tenant,mac,family,extension,auth_user,registrar\n\
         acme,001565000001,yealink,101,4930123,sip\n\
         acme,001565000002,yealink,4.47701E+11,,sip\n",
        "phones.csv:3:4 (extension)",
        "extension: \"4.47701E+11\" looks like a spreadsheet's scientific notation: its digits \
         are lost; if it came from a spreadsheet, format the column as text and export again",
        1,
    ),
    (
        "phones.csv",
        "tenant,mac,family,extension,auth_user,registrar\n\
         acme,001565000001,yealink,101,4930123,sip\n\
         acme,001565000002,yealink,102,4.47701E+11,sip\n",
        "phones.csv:3:5 (auth_user)",
        "auth_user: \"4.47701E+11\" looks like a spreadsheet's scientific notation",
        1,
    ),
    (
        "phones.json",
        r#"{"phones": [
            {"tenant": "acme", "mac": "001565000001", "family": "yealink"},
            {"tenant": "acme", "mac": "001565000002", "family": "yealink",
             "lines": [{"extension": "1,5E+3", "registrar": "sip"}]}
        ]}"#,
        "phones.json:3:13 (phones[1] line 1 extension)",
        "looks like a spreadsheet's scientific notation",
        1,
    ),
    (
        "directory.csv",
        "tenant,name,work,mobile\n\
         acme,Alice,+1 555 0100,\n\
         acme,Bob,+1 555 0101,4.47701E+11\n",
        "directory.csv:3:4 (mobile)",
        "numbers: \"4.47701E+11\" looks like a spreadsheet's scientific notation",
        1,
    ),
    (
        "directory.csv",
        "tenant,name,work\n\
         acme,Alice,\"+15551234567,,123\"\n\
         acme,Carol,15551234567.00\n",
        "directory.csv:3:3 (work)",
        "numbers: \"15551234567.00\" looks like a number a spreadsheet gave decimal places",
        1,
    ),
    (
        "directory.csv",
        "tenant,name,work\n\
         acme,Alice,\"+1 555 0100,,42\"\n\
         acme,Tom,\"15,551,234,567\"\n",
        "directory.csv:3:3 (work)",
        "numbers: \"15,551,234,567\" looks like a number a spreadsheet grouped in thousands; \
         if it came from a spreadsheet, format the column as text and export again",
        1,
    ),
    (
        "directory.json",
        r#"{"directory": [
            {"tenant": "acme", "name": "Alice", "numbers": [{"number": "555.123.4567"}]},
            {"tenant": "acme", "name": "Bob", "numbers": [{"number": "1.55512E+10"}]}
        ]}"#,
        "directory.json:3:13 (directory[1] numbers)",
        "looks like a spreadsheet's scientific notation",
        1,
    ),
];

#[test]
fn rows_the_admin_api_refuses_are_invalid_rows_where_they_are() {
    let long = "x".repeat(257);
    let numbers = vec![r#"{"number": "+1 555 0100"}"#; 17].join(", ");
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    for &(name, text, place, reason, kept) in CASES {
        let text = (text.replace("LONGNAME", &"n".repeat(257)))
            .replace("LONG", &long)
            .replace("NUMBERS", &numbers)
            .replace("DEEP", &deep);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let plan = plan_files(&[path]);
        let errors: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{place}: {errors:?}");
        assert!(
            errors[0].contains(&format!("{place}: ")) && errors[0].contains(reason),
            "{place}: {errors:?}"
        );
        assert_eq!(
            plan.whole_file_errors, 0,
            "{place}: a row's, not the file's"
        );
        assert_eq!(plan.changes(), kept, "{place}");
    }
}

/// What the checks take is what is stored: a CSV cell is checked trimmed,
/// and a phones file that leaves out one half of the HTTP login keeps its
/// stored half, which the file cannot show.
#[test]
fn cells_are_checked_as_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phones.csv");
    let padded = format!(" {} ", "x".repeat(256));
    std::fs::write(
        &path,
        format!(
            "tenant,mac,family,model,label,http_user\n\
             acme,001565000001,yealink, VVX 450 ,{padded},admin\n"
        ),
    )
    .unwrap();
    let plan = plan_files(&[path]);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert_eq!(plan.changes(), 1);
}

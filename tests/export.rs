//! `dialtone export` through the binary: a fleet exported from one
//! backend imports into the other as the same rows (the same export,
//! byte for byte, also piped from `export -` to `import -`), an export imported again writes nothing, an edited
//! CSV changes just its edit, and the file is its owner's alone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::Backend;

fn dt(dir: &Path, url: &str, args: &[&str]) -> (String, String) {
    let mut cmd = dialtone(dir, url);
    cmd.args(args);
    let out = run(cmd);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "dialtone {args:?}: {stderr}");
    (stdout, stderr)
}

/// `dt` with `input` on standard input.
fn dt_input(dir: &Path, url: &str, args: &[&str], input: &[u8]) -> (String, String) {
    let out = with_input(dir, url, args, input);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "dialtone {args:?}: {stderr}");
    (stdout, stderr)
}

const DIRECTORY_CSV: &str = "tenant,external_id,name,company,work,mobile\n\
acme,42,Alice Example,\"Example, Inc\",+1 555 0100,+1 555 0199\n\
acme,,Bob Builder,,+1 555 0101,\n";

const SOURCES_JSON: &str = r#"{"tenants": [{"slug": "globex", "name": "Globex", "default_region": "GB"}],
"directory_sources": [{"tenant": "acme", "name": "ad", "kind": "ldap",
  "settings": {"url": "ldap://127.0.0.1:1/", "base_dn": "dc=example,dc=net"}, "secret": "bind \"pw\""}],
"phones": [{"tenant": "globex", "mac": "00:04:f2:00:00:01", "family": "poly", "model": "VVX 450",
  "http_user": "admin", "http_password": " spaced ",
  "lines": [{"extension": "200", "password": "p,w", "registrar": "sip.example.net",
             "proxy": "edge.example.net", "settings": {"blf": ["201"]}}]}]}"#;

/// No row inserted, updated or deleted, by the summary line (its six
/// counts: tenants to templates).
fn wrote_nothing(summary: &str) -> bool {
    summary.starts_with("imported: ")
        && summary.matches(" +0 ~0 ").count() == 6
        && summary.matches(" -0").count() == 6
}

#[test]
fn a_fleet_moves_between_backends_through_an_export() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let from = rt.block_on(TestDb::new(Backend::Sqlite));
    let to = rt.block_on(TestDb::new(Backend::Postgres));
    let dir = tempfile::tempdir().unwrap();
    let files = [
        write_file(dir.path(), "tenants.csv", TENANTS_CSV),
        write_file(dir.path(), "phones.csv", &phones_csv(1, 300)),
        write_file(dir.path(), "directory.csv", DIRECTORY_CSV),
        write_file(dir.path(), "more.json", SOURCES_JSON),
    ];
    let mut import = vec!["import"];
    import.extend(files.iter().map(|f| f.to_str().unwrap()));
    dt(dir.path(), &from.url, &import);

    let (_, said) = dt(dir.path(), &from.url, &["export", "first.json"]);
    assert!(
        said.contains("tenants 2, phones 301, lines 301, directory entries 2, directory sources 1"),
        "{said}"
    );
    assert!(!said.contains("warning"), "{said}");
    let first = dir.path().join("first.json");
    let mode = std::fs::metadata(&first).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "an export holds secrets in clear");
    let exported = std::fs::read_to_string(&first).unwrap();
    assert!(exported.contains(r#""secret":"bind \"pw\"""#), "{exported}");

    // Imported again where it came from: nothing written.
    let (summary, _) = dt(dir.path(), &from.url, &["import", "first.json"]);
    assert!(wrote_nothing(&summary), "{summary}");

    // Piped into PostgreSQL (`export -` to `import -`), then out again:
    // the same file.
    let (piped, _) = dt(dir.path(), &from.url, &["export", "-"]);
    assert!(piped == exported, "the file and standard output differ");
    let (summary, _) = dt_input(dir.path(), &to.url, &["import", "-"], piped.as_bytes());
    assert!(summary.contains("phones +301 ~0 =0 -0"), "{summary}");
    dt(dir.path(), &to.url, &["export", "second.json"]);
    let second = std::fs::read_to_string(dir.path().join("second.json")).unwrap();
    assert!(exported == second, "the two backends' exports differ");

    // A CSV of one tenant's phones, one label edited: one phone updated.
    let (csv, _) = dt(
        dir.path(),
        &to.url,
        &["export", "--tenant", "acme", "--format", "csv", "-"],
    );
    assert_eq!(csv.lines().count(), 301, "a header and 300 phones");
    assert!(!csv.contains("globex"));
    let edited = csv.replacen(",T46S,,{}", ",T46S,Lobby,{}", 1);
    assert_ne!(edited, csv);
    let edited = write_file(dir.path(), "edited.csv", &edited);
    let (summary, _) = dt(dir.path(), &to.url, &["import", edited.to_str().unwrap()]);
    assert!(summary.contains("phones +0 ~1 =299 -0"), "{summary}");
    assert!(summary.contains("lines +0 ~0 =300 -0"), "{summary}");
}

#[test]
fn export_refusals_are_clear_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    dt(dir.path(), &url, &["demo"]);
    // A command line asking for what cannot be done exits 2, as clap's own
    // refusals do; a tenant the database lacks is found out running (1).
    let refused = |args: &[&str], code: i32, says: &str| {
        let mut cmd = dialtone(dir.path(), &url);
        cmd.args(args);
        let out = run(cmd);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(&["export", "out.txt"], 2, "name the file .json or .csv");
    refused(
        &["export", "--kind", "directory-sources", "out.csv"],
        2,
        "no CSV form",
    );
    refused(
        &["export", "--kind", "tenants", "--kind", "phones", "out.csv"],
        2,
        "a CSV file holds one kind",
    );
    refused(
        &["export", "--tenant", "nobody", "out.json"],
        1,
        "\"nobody\"",
    );
    // Another key cannot open the secrets: refused before anything is read.
    let mut cmd = dialtone(dir.path(), &url);
    cmd.env("DIALTONE_SECRETS__KEY", "6b".repeat(32))
        .args(["export", "out.json"]);
    let out = run(cmd);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not the key this database's secrets are sealed with"),
        "{}",
        text(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("out") || name.starts_with(".dialtone-export"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "refusals leave no file");
}

#[test]
fn import_reads_standard_input_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    dt(dir.path(), &url, &["migrate"]);
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS_CSV);
    let mut csv = phones_csv(1, 3);
    csv.push_str("acme,00:15:65:zz:00:09,yealink,T46S,1,109,Desk,pw,sip.example.net\n");
    let refused = |args: &[&str], input: &[u8], says: &str| {
        let out = with_input(dir.path(), &url, args, input);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    let tenants = tenants.to_str().unwrap();
    refused(&["import", tenants, "-"], csv.as_bytes(), "stdin:5:2 (mac)");
    refused(&["import", "-"], b" \n", "standard input is empty");
    refused(&["import", "-", "-"], b"", "given twice");
    let good = phones_csv(1, 3);
    let (summary, _) = dt_input(dir.path(), &url, &["import", tenants, "-"], good.as_bytes());
    assert!(summary.contains("phones +3 ~0 =0 -0"), "{summary}");
}

/// Rows an earlier release stored past this release's checks are exported
/// all the same, and named with a count: imported elsewhere, the file
/// would be refused for them.
#[test]
fn an_export_names_the_rows_the_import_would_refuse() {
    use dialtone_sync::store::TenantInput;
    use dialtone_sync::testing::build;
    use dialtone_sync::Mutation;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(Backend::Sqlite));
    let store = rt.block_on(db.store());
    let mut rows = vec![Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme\u{3164}".into(),
        default_region: "US".into(),
        settings: r#"{"ntp_server": "pool\u000bntp"}"#.into(),
    })];
    for n in 1..=7 {
        let Mutation::UpsertPhone(mut phone) = build::phone("acme", n, 1) else {
            unreachable!()
        };
        match n {
            1 => phone.lines[0].display_name = "Front\nDesk".into(),
            2 => phone.lines[0].auth_user = "4.47701E+11".into(),
            3..=6 => phone.label = Some("Lab\u{1}".into()),
            _ => phone.lines[0].password = Some("p\u{1}w".into()),
        }
        rows.push(Mutation::UpsertPhone(phone));
    }
    rows.push(build::entry("acme", "e1", "Alice", &["4.47701E+11"]));
    rt.block_on(store.apply(&rows, &build::audit("seed")))
        .unwrap();
    rt.block_on(store.close());

    let dir = tempfile::tempdir().unwrap();
    let (_, said) = dt(dir.path(), &db.url, &["export", "fleet.json"]);
    assert!(
        said.contains("warning: 8 rows hold values this release's import refuses"),
        "{said}"
    );
    // Counted as the export opens it, not opened again to be named.
    assert!(
        said.contains(
            "warning: 1 line passwords hold a control character XML files cannot carry, which \
             this release's import refuses (the first: phone "
        ) && said.contains("07 line 1: password)"),
        "{said}"
    );
    let named = [
        "tenant acme: tenant name holds U+3164",
        "; phone 001565000001 line 1 display_name: U+000A",
        "; phone 001565000002 line 1 auth_user: \"4.47701E+11\" looks like a spreadsheet's",
        "; phone 001565000003 label: U+0001",
        "; phone 001565000004 label: U+0001",
        "; and 3 more",
    ];
    for named in named {
        assert!(said.contains(named), "{named:?} not in {said}");
    }
    assert!(!said.contains("001565000005"), "five named: {said}");
    assert!(
        dir.path().join("fleet.json").exists(),
        "written all the same"
    );

    // Of one kind, only its rows.
    let (_, said) = dt(
        dir.path(),
        &db.url,
        &["export", "--kind", "directory", "d.csv"],
    );
    assert!(
        said.contains("warning: 1 row holds values")
            && said.contains(": tenant acme directory entry \"e1\" numbers: \"4.47701E+11\""),
        "{said}"
    );
}

/// An export to standard output redirected into a file others may read
/// says so (it holds every password in clear); into a pipe, or a file of
/// its owner's alone, it says nothing.
#[test]
fn an_export_to_a_file_others_read_is_warned_of() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(Backend::Sqlite));
    let dir = tempfile::tempdir().unwrap();
    dt(dir.path(), &db.url, &["migrate"]);
    let warning = "standard output is a file others may read";
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        let path = dir.path().join(format!("out-{mode:o}.json"));
        let file = std::fs::File::create(&path).unwrap();
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .unwrap();
        let mut cmd = dialtone(dir.path(), &db.url);
        let child = cmd
            .args(["export", "-"])
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = bounded::wait_within(child, bounded::COMMAND_LIMIT, "export -");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stderr).contains(warning),
            warned,
            "{mode:o}: {}",
            text(&out.stderr)
        );
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
    }
    let (_, said) = dt(dir.path(), &db.url, &["export", "-"]);
    assert!(!said.contains(warning), "{said}");
}

/// `export - > backup.json 2>&1` put the export's own lines into the
/// file around the data (a backup that would not import, found at the
/// restore): refused, and said.
#[test]
fn an_export_whose_messages_would_go_into_its_file_is_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(Backend::Sqlite));
    let dir = tempfile::tempdir().unwrap();
    dt(dir.path(), &db.url, &["migrate"]);
    let path = dir.path().join("backup.json");
    let file = std::fs::File::create(&path).unwrap();
    let child = dialtone(dir.path(), &db.url)
        .args(["export", "-"])
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let out = bounded::wait_within(child, bounded::COMMAND_LIMIT, "export - 2>&1");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(!out.status.success(), "{written}");
    assert!(
        written.contains("standard output and standard error are the same file"),
        "{written}"
    );
    assert!(!written.contains("\"tenants\""), "{written}");
}

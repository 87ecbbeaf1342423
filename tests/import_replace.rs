//! `dialtone import --replace-directory`, through the binary on SQLite and
//! PostgreSQL: an address book exported again replaces the directory of
//! each tenant it holds entries for, the entries it leaves out deleted in
//! the same run; other tenants keep theirs, a dry run deletes nothing, it
//! will not run with `--skip-invalid`, and a file that would delete more
//! than its share of a directory is refused.

mod common;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::Backend;

const TENANTS: &str = "slug,name,default_region\nacme,Acme Inc,US\nglobex,Globex,US\n";

/// The stored directory, one `tenant/name` a line, sorted.
fn directory(dir: &std::path::Path, url: &str) -> Vec<String> {
    let mut cmd = dialtone(dir, url);
    cmd.args(["export", "--format", "csv", "--kind", "directory", "-"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (tenant, name) = (at("tenant"), at("name"));
    let mut rows: Vec<String> = lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            format!("{}/{}", cells[tenant], cells[name])
        })
        .collect();
    rows.sort();
    rows
}

fn replaces_only_the_tenants_in_the_file(backend: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new(backend));
    let dir = tempfile::tempdir().unwrap();
    let url = db.url.clone();
    let tenants = write_file(dir.path(), "tenants.csv", TENANTS);
    let first = write_file(
        dir.path(),
        "first.csv",
        "tenant,external_id,name,work\n\
         acme,1,Alice,+1 212 555 0101\n\
         acme,2,Bob,+1 212 555 0102\n\
         acme,,Carol,+1 212 555 0103\n\
         globex,9,Gina,+1 212 555 0109\n",
    );
    let (code, _, err) = import_files(dir.path(), &url, &[], &[&tenants, &first]);
    assert_eq!(code, Some(0), "{err}");

    // Bob left, Dan joined; Carol (no id of her own) stays. Globex is not in
    // the file and keeps Gina.
    let again = write_file(
        dir.path(),
        "again.csv",
        "tenant,external_id,name,work\n\
         acme,1,Alice,+1 212 555 0101\n\
         acme,,Carol,+1 212 555 0103\n\
         acme,4,Dan,+1 212 555 0104\n",
    );
    let (code, out, err) = import_files(
        dir.path(),
        &url,
        &["--replace-directory", "--dry-run"],
        &[&again],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("directory entries +1 ~0 =2 -1"), "{out}");
    assert!(out.contains("directories it would replace: acme"), "{out}");
    let before = directory(dir.path(), &url);
    assert_eq!(before.len(), 4, "a dry run wrote: {before:?}");

    let (code, out, err) = import_files(dir.path(), &url, &["--replace-directory"], &[&again]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("directory entries +1 ~0 =2 -1"), "{out}");
    assert!(out.contains("directories replaced: acme"), "{out}");
    assert_eq!(
        directory(dir.path(), &url),
        ["acme/Alice", "acme/Carol", "acme/Dan", "globex/Gina"]
    );

    // Without the flag an import adds and updates only.
    let (code, out, err) = import_files(dir.path(), &url, &[], &[&first]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("-0"), "{out}");
    assert_eq!(directory(dir.path(), &url).len(), 5);

    // A file of phones only replaces no directory, and says so.
    let phones = write_file(dir.path(), "phones.csv", &phones_csv(1, 2));
    let (code, _, err) = import_files(dir.path(), &url, &["--replace-directory"], &[&phones]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("no directory is replaced"), "{err}");
    assert_eq!(directory(dir.path(), &url).len(), 5);

    // Skipping rows would delete the stored entry of each row skipped.
    let (code, _, err) = import_files(
        dir.path(),
        &url,
        &["--replace-directory", "--skip-invalid"],
        &[&again],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");

    // A file cut short: only Alice of acme's four. Deleting three quarters
    // is past the default half: refused at acme's first row, nothing
    // written, the dry run alike.
    let short = write_file(
        dir.path(),
        "short.csv",
        "tenant,external_id,name,work
acme,1,Alice,+1 212 555 0101
",
    );
    for dry_run in [true, false] {
        let mut flags = vec!["--replace-directory"];
        flags.extend(dry_run.then_some("--dry-run"));
        let (code, _, err) = import_files(dir.path(), &url, &flags, &[&short]);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("short.csv:2")
                && err.contains("would delete 3 of the 4 entries it had (75.0%)")
                && err.contains("--max-deleted-percent"),
            "{err}"
        );
        assert_eq!(directory(dir.path(), &url).len(), 5);
    }
    // Allowed three quarters, it replaces.
    let (code, out, err) = import_files(
        dir.path(),
        &url,
        &["--replace-directory", "--max-deleted-percent", "75"],
        &[&short],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("-3"), "{out}");
    assert_eq!(directory(dir.path(), &url), ["acme/Alice", "globex/Gina"]);
    // A share goes with a replacement, and is a percentage.
    for flags in [
        &["--max-deleted-percent", "75"][..],
        &["--replace-directory", "--max-deleted-percent", "101"],
    ] {
        let (code, _, err) = import_files(dir.path(), &url, flags, &[&short]);
        assert_eq!(code, Some(2), "{flags:?}: {err}");
    }
}

#[test]
fn replace_directory_sqlite() {
    replaces_only_the_tenants_in_the_file(Backend::Sqlite);
}

#[test]
fn replace_directory_postgres() {
    replaces_only_the_tenants_in_the_file(Backend::Postgres);
}

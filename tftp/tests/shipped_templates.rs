//! Shipped templates on disk (`provisioning.templates_dir`) are checked
//! when the set is loaded: a broken file or a missing directory is
//! refused by SIGHUP and `render --all`, and logged as an error at start.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dialtone_sync::Family;
use dialtone_tftp::templates::Source;
use dialtone_tftp::Shipped;

const BROKEN_YEALINK: &str = "#!version:1.0.0.1\n{% if %}broken\n";

fn repository_templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn load_error(source: &Source) -> String {
    match Shipped::from_source(source, 1) {
        Ok(shipped) => panic!("{source:?} loaded {} templates", shipped.len()),
        Err(e) => e.to_string(),
    }
}

/// A syntax error in a shipped file fails the load, naming the file and
/// where in it; on top of the built-in set too (`templates_dir`).
#[test]
fn a_shipped_template_that_does_not_compile_is_refused_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repository_templates(), dir.path());
    let broken = dir.path().join("yealink").join("{mac}.cfg.tera");
    std::fs::write(&broken, BROKEN_YEALINK).unwrap();
    for source in [
        Source::Dir(dir.path().to_path_buf()),
        Source::BuiltInWith(dir.path().to_path_buf()),
    ] {
        let error = load_error(&source);
        assert!(
            error.contains(&broken.display().to_string()),
            "names the file: {error}"
        );
        assert!(error.contains(" line 2 column "), "names the line: {error}");
    }
}

/// The checks every tenant's template passes apply to shipped files too.
#[test]
fn a_shipped_template_the_checker_refuses_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("snom");
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("snom{model}.htm.tera");
    std::fs::write(&file, "<settings>\n{% set x = [1] %}{{ x }}</settings>\n").unwrap();
    let error = load_error(&Source::Dir(dir.path().to_path_buf()));
    assert!(
        error.contains(&file.display().to_string()) && error.contains(" line 2 column "),
        "{error}"
    );
    assert!(error.contains("`{% set %}`"), "{error}");
}

/// A configured directory that is missing, not a directory or an empty
/// path is refused by name, where it used to leave the built-in set alone.
#[test]
fn a_templates_dir_that_is_not_there_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("templatse");
    let error = load_error(&Source::BuiltInWith(missing.clone()));
    assert!(
        error.contains(&missing.display().to_string()) && error.contains("does not exist"),
        "{error}"
    );
    let file = dir.path().join("templates.tar");
    std::fs::write(&file, "not a folder").unwrap();
    let error = load_error(&Source::BuiltInWith(file.clone()));
    assert!(
        error.contains(&file.display().to_string()) && error.contains("not a directory"),
        "{error}"
    );
    let error = load_error(&Source::BuiltInWith(PathBuf::new()));
    assert!(error.contains("empty path"), "{error}");
    let error = load_error(&Source::Dir(missing));
    assert!(error.contains("does not exist"), "{error}");
}

/// The repository's templates load as they are; a directory with only some
/// family folders, or none, loads too (family folders are optional).
#[test]
fn a_good_templates_dir_still_loads() {
    let shipped = Shipped::from_source(&Source::Dir(repository_templates()), 1).unwrap();
    assert_eq!(shipped.len(), Shipped::built_in(1).len());
    assert!(shipped.same_files(&Shipped::built_in(1)));

    let dir = tempfile::tempdir().unwrap();
    let empty = Shipped::from_source(&Source::BuiltInWith(dir.path().to_path_buf()), 1).unwrap();
    assert!(empty.same_files(&Shipped::built_in(1)));

    std::fs::create_dir_all(dir.path().join("fanvil")).unwrap();
    std::fs::copy(
        repository_templates().join("fanvil/{mac}.cfg.tera"),
        dir.path().join("fanvil/{mac}.cfg.tera"),
    )
    .unwrap();
    // Stray files are warned about, not refused.
    std::fs::write(dir.path().join("fanvil/README"), "notes").unwrap();
    std::fs::create_dir_all(dir.path().join("yealinks")).unwrap();
    let one = Shipped::from_source(&Source::Dir(dir.path().to_path_buf()), 1).unwrap();
    assert_eq!(one.len(), 1);
}

/// SIGHUP's reload: a file broken on disk is refused and the running set
/// keeps serving, where phones used to go from 200 to 500.
#[tokio::test]
async fn a_reload_that_breaks_a_file_keeps_the_running_set() {
    let f = Fixture::new().await;
    let file = "001565000001.cfg";
    let before = f.get(file).unwrap();
    std::fs::write(f._dir.path().join("yealink/{mac}.cfg.tera"), BROKEN_YEALINK).unwrap();
    let error = f.provisioner.reload_shipped().unwrap_err().to_string();
    assert!(error.contains("{mac}.cfg.tera line 2 column "), "{error}");
    assert_eq!(f.get(file).unwrap(), before);
    let running = || {
        f.provisioner
            .shipped_body(Family::Yealink, "{mac}.cfg", false)
    };
    assert_eq!(running().as_deref(), Some(YEALINK_CFG));

    std::fs::remove_dir_all(f._dir.path()).unwrap();
    assert!(f.provisioner.reload_shipped().is_err());
    assert_eq!(f.get(file).unwrap(), before);
    assert_eq!(running().as_deref(), Some(YEALINK_CFG));
}

/// Tenants read the product's shipped templates; the operator's files,
/// which may branch per tenant, are shown to global admins only.
#[tokio::test]
async fn the_operators_files_are_not_the_products() {
    let f = Fixture::new().await;
    let product =
        std::fs::read_to_string(repository_templates().join("yealink/{mac}.cfg.tera")).unwrap();
    assert_ne!(product, YEALINK_CFG);
    let body = |product_only| {
        f.provisioner
            .shipped_body(Family::Yealink, "{mac}.cfg", product_only)
    };
    assert_eq!(body(false).as_deref(), Some(YEALINK_CFG));
    assert_eq!(body(true).as_deref(), Some(product.as_str()));
    let names = f.provisioner.shipped_names(true);
    let built_in = Shipped::built_in(1);
    assert_eq!(names.len(), built_in.len());
    assert!(names
        .iter()
        .all(|(family, name)| built_in.get(*family, name).is_some()));
    assert!(
        f.provisioner.shipped_names(false).len() < names.len(),
        "the fixture's set is a few files"
    );
}

/// A start is not refused for what SIGHUP refuses: after an upgrade whose
/// checks refuse a construct an older release took, a node that did not
/// start would fail every phone, not those of one file. The start serves
/// the set as read, and a folder that is not there leaves the built-in set.
#[test]
fn a_start_serves_a_set_that_does_not_check_as_read() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repository_templates(), dir.path());
    let broken = dir.path().join("yealink").join("{mac}.cfg.tera");
    std::fs::write(&broken, BROKEN_YEALINK).unwrap();
    let source = Source::BuiltInWith(dir.path().to_path_buf());
    load_error(&source);
    let (started, whole) = Shipped::from_source_at_start(&source, 1).unwrap();
    assert!(!whole);
    let built_in = Shipped::built_in(1);
    assert_eq!(started.len(), built_in.len());
    assert!(
        !started.same_files(&built_in),
        "the broken file is served as read"
    );

    let missing = Source::BuiltInWith(dir.path().join("templatse"));
    load_error(&missing);
    let (started, whole) = Shipped::from_source_at_start(&missing, 1).unwrap();
    assert!(!whole);
    assert!(started.same_files(&built_in));
    let (_, whole) =
        Shipped::from_source_at_start(&Source::BuiltInWith(dir.path().join("yealink")), 1).unwrap();
    assert!(
        whole,
        "a folder without family folders is an empty set, read whole"
    );
}

//! `dialtone render --all` through the binary: every phone of a tenant
//! gets the same phone directory, which one run wrote once per phone (41
//! GB in 20 s for one tenant of 200,000), so repeated bodies are hard
//! links to one file; `--tenant` renders only the tenants named.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const TENANTS: &str = "slug,name,default_region\nacme,Acme Inc,US\nbeta,Beta Ltd,US\n";

/// Five acme phones (001565000001 to …05) and two beta ones
/// (0015650000aa, …ab), each tenant with a small directory.
fn fleet() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let beta_phones = "tenant,mac,family,model,line,extension,display_name,password,registrar\n\
        beta,00:15:65:00:00:aa,yealink,T46S,1,300,Beta 1,pwb1,sip.example.net\n\
        beta,00:15:65:00:00:ab,yealink,T46S,1,301,Beta 2,pwb2,sip.example.net\n";
    let directory = "tenant,external_id,name,work\n\
        acme,1,Alice Acme,+1 555 0100\n\
        acme,2,Bob Acme,+1 555 0101\n\
        beta,1,Carol Beta,+1 555 0200\n";
    let files = [
        write_file(dir.path(), "tenants.csv", TENANTS),
        write_file(dir.path(), "phones.csv", &phones_csv(1, 5)),
        write_file(dir.path(), "beta.csv", beta_phones),
        write_file(dir.path(), "directory.csv", directory),
    ];
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").args(&files);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (dir, url)
}

fn render_all(dir: &Path, url: &str, out: &Path, extra: &[&str]) -> Output {
    let mut render = dialtone(dir, url);
    render
        .args(["render", "--all", "--out"])
        .arg(out)
        .args(extra);
    run(render)
}

fn acme_macs() -> Vec<String> {
    (1..=5).map(|n| format!("0015650000{n:02x}")).collect()
}

fn in_folder(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// One tenant's phones share its directory: one file, the others hard
/// links to it with its bytes; each phone's own config stays its own. A
/// second run into the same folder links again, and writes no phone's
/// config through an old link.
#[test]
fn repeated_bodies_are_hard_links_to_one_file() {
    let (dir, url) = fleet();
    let out = dir.path().join("rendered");
    for round in ["first", "second"] {
        let done = render_all(dir.path(), &url, &out, &[]);
        let said = text(&done.stdout);
        assert!(done.status.success(), "{round}: {}", text(&done.stderr));
        assert!(
            said.contains("for 7 phones") && said.contains("hard links"),
            "{round}: {said}"
        );

        let directories: Vec<PathBuf> = acme_macs()
            .iter()
            .map(|mac| out.join(format!("{mac}-directory.xml")))
            .collect();
        let first = std::fs::metadata(&directories[0]).unwrap();
        let body = std::fs::read(&directories[0]).unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("Alice Acme"),
            "{round}"
        );
        assert!(first.nlink() >= 5, "{round}: {} links", first.nlink());
        for path in &directories[1..] {
            let meta = std::fs::metadata(path).unwrap();
            assert_eq!(meta.ino(), first.ino(), "{round}: {}", path.display());
            assert_eq!(std::fs::read(path).unwrap(), body, "{round}");
        }
        // Another tenant's directory is another document.
        let beta = std::fs::metadata(out.join("0015650000aa-directory.xml")).unwrap();
        assert_ne!(beta.ino(), first.ino(), "{round}");

        for mac in acme_macs() {
            let config = out.join(format!("{mac}.cfg"));
            assert_eq!(std::fs::metadata(&config).unwrap().nlink(), 1, "{round}");
            let n = u32::from_str_radix(&mac[10..], 16).unwrap();
            let text = std::fs::read_to_string(&config).unwrap();
            assert!(text.contains(&format!("pw{n}")), "{round}: {mac}");
        }
    }
}

/// `--tenant` renders that tenant's phones only (and the common files
/// they fetch); repeated, each tenant named.
#[test]
fn tenant_renders_only_that_tenants_phones() {
    let (dir, url) = fleet();
    let out = dir.path().join("beta");
    let done = render_all(dir.path(), &url, &out, &["--tenant", "beta"]);
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(
        text(&done.stdout).contains("for 2 phones"),
        "{}",
        text(&done.stdout)
    );
    let names = in_folder(&out);
    for mac in ["0015650000aa", "0015650000ab"] {
        assert!(names.contains(&format!("{mac}.cfg")), "{names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| acme_macs().iter().any(|m| n.starts_with(m))),
        "{names:?}"
    );

    let both = dir.path().join("both");
    let done = render_all(
        dir.path(),
        &url,
        &both,
        &["--tenant", "beta", "--tenant", "acme", "--tenant", "beta"],
    );
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(
        text(&done.stdout).contains("for 7 phones"),
        "{}",
        text(&done.stdout)
    );
}

/// An unknown slug is refused, naming it, before the folder is made;
/// `--tenant` without `--all` is a usage error.
#[test]
fn an_unknown_tenant_is_refused() {
    let (dir, url) = fleet();
    let out = dir.path().join("none");
    let done = render_all(
        dir.path(),
        &url,
        &out,
        &["--tenant", "acme", "--tenant", "nosuch"],
    );
    let err = text(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no tenant \"nosuch\""), "{err}");
    assert!(!out.exists());

    let mut render = dialtone(dir.path(), &url);
    render.args(["render", "001565000001", "--tenant", "acme"]);
    let done = run(render);
    let err = text(&done.stderr);
    assert_eq!(done.status.code(), Some(2), "{err}");
    assert!(err.contains("--all"), "{err}");
}

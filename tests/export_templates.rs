//! Templates move with `dialtone export` and `dialtone import`: every
//! scope, from either backend into a fresh database of the other, with
//! the same bodies, a tenant's bound to that tenant though its id there
//! differs; the export imported again writes nothing; a tenant's export
//! holds its own templates only; a template whose body does not compile
//! is refused at its place and nothing is written.

mod common;

use std::path::Path;

use common::*;
use dialtone_sync::testing::TestDb;
use dialtone_sync::{Backend, Dataset, TemplateScope};

fn dt(dir: &Path, url: &str, args: &[&str]) -> (String, String) {
    let mut cmd = dialtone(dir, url);
    cmd.args(args);
    let out = run(cmd);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "dialtone {args:?}: {stderr}");
    (stdout, stderr)
}

fn template(scope: &str, key: Option<(&str, &str)>, body: &str) -> serde_json::Value {
    let mut t = serde_json::json!({
        "scope": scope, "family": "yealink", "file_pattern": "{mac}.cfg", "body": body,
    });
    if let Some((member, value)) = key {
        t[member] = value.into();
    }
    t
}

fn phone_template(tenant: &str, mac: &str, body: &str) -> serde_json::Value {
    let mut t = template("phone", Some(("mac", mac)), body);
    t["tenant"] = tenant.into();
    t
}

fn fleet() -> String {
    let body =
        |what: &str| format!("#!version:1.0.0.1\n# {what}\nstatic.auto_provision.enable = 1\n");
    serde_json::json!({
        "tenants": [{"slug": "acme", "name": "Acme"}, {"slug": "globex", "name": "Globex"}],
        "phones": [
            {"tenant": "acme", "mac": "001565000001", "family": "yealink", "model": "T46S"},
            {"tenant": "globex", "mac": "001565000002", "family": "yealink", "model": "T46S"},
        ],
        "templates": [
            template("family", None, &body("family")),
            template("model", Some(("model", "T46S")), &body("model")),
            template("tenant", Some(("tenant", "acme")), &body("acme")),
            template("tenant", Some(("tenant", "globex")), &body("globex")),
            phone_template("acme", "001565000001", &body("acme's phone")),
            phone_template("globex", "001565000002", &body("globex's phone")),
        ],
    })
    .to_string()
}

fn rows(rt: &tokio::runtime::Runtime, db: &TestDb) -> Dataset {
    rt.block_on(async { db.store().await.load_all().await.unwrap().0 })
}

/// The tenant-scope templates' bodies by their tenant's slug.
fn tenant_bodies(rows: &Dataset) -> Vec<(String, String)> {
    let mut bodies: Vec<(String, String)> = (rows.templates.iter())
        .filter(|t| t.scope == TemplateScope::Tenant)
        .map(|t| {
            let tenant = (rows.tenants.iter())
                .find(|tenant| tenant.id.to_string() == *t.scope_key)
                .expect("a tenant template's tenant");
            (tenant.slug.to_string(), t.body.to_string())
        })
        .collect();
    bodies.sort();
    bodies
}

fn moves(from: Backend, to: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let from_db = rt.block_on(TestDb::new(from));
    let to_db = rt.block_on(TestDb::new(to));
    let dir = tempfile::tempdir().unwrap();
    let seed = write_file(dir.path(), "seed.json", &fleet());
    // Templates are checked against the database, which must be there.
    dt(dir.path(), &from_db.url, &["migrate"]);
    dt(
        dir.path(),
        &from_db.url,
        &["import", seed.to_str().unwrap()],
    );
    // A tenant there first: acme and globex get other ids than here.
    let zeta = write_file(
        dir.path(),
        "zeta.json",
        r#"{"tenants": [{"slug": "zeta", "name": "Zeta"}]}"#,
    );
    dt(dir.path(), &to_db.url, &["import", zeta.to_str().unwrap()]);

    let (exported, said) = dt(dir.path(), &from_db.url, &["export", "-"]);
    assert!(said.contains("templates 6"), "{said}");
    let file = write_file(dir.path(), "fleet.json", &exported);
    let file = file.to_str().unwrap();
    let (summary, _) = dt(dir.path(), &to_db.url, &["import", file]);
    assert!(summary.contains("templates +6 ~0 =0 -0"), "{summary}");
    let (again, _) = dt(dir.path(), &to_db.url, &["import", file]);
    assert!(again.contains("templates +0 ~0 =6 -0"), "{again}");
    assert_eq!(again.matches(" +0 ~0 ").count(), 6, "{again}");

    let (there, _) = dt(
        dir.path(),
        &to_db.url,
        &["export", "--kind", "templates", "-"],
    );
    let (here, _) = dt(
        dir.path(),
        &from_db.url,
        &["export", "--kind", "templates", "-"],
    );
    assert!(
        here == there,
        "the two databases' templates differ:\n{here}\n{there}"
    );
    let (source, target) = (rows(&rt, &from_db), rows(&rt, &to_db));
    let acme_id = |rows: &Dataset| rows.tenants.iter().find(|t| &*t.slug == "acme").unwrap().id;
    assert_ne!(acme_id(&source), acme_id(&target));
    assert_eq!(tenant_bodies(&source), tenant_bodies(&target));
    assert!(tenant_bodies(&target)[0].1.contains("# acme"));
    let bodies = |rows: &Dataset| {
        let mut b: Vec<String> = rows.templates.iter().map(|t| t.body.to_string()).collect();
        b.sort();
        b
    };
    assert_eq!(bodies(&source), bodies(&target));

    let (acme, said) = dt(
        dir.path(),
        &to_db.url,
        &["export", "--tenant", "acme", "--kind", "templates", "-"],
    );
    assert!(said.contains("templates 2"), "{said}");
    assert!(acme.contains(r#""tenant":"acme""#), "{acme}");
    assert!(acme.contains(r#""mac":"001565000001""#), "{acme}");
    for other in [
        "globex",
        "001565000002",
        r#""scope":"family""#,
        r#""scope":"model""#,
    ] {
        assert!(!acme.contains(other), "{other} in {acme}");
    }
}

#[test]
fn templates_move_from_sqlite_to_postgres() {
    moves(Backend::Sqlite, Backend::Postgres);
}

#[test]
fn templates_move_from_postgres_to_sqlite() {
    moves(Backend::Postgres, Backend::Sqlite);
}

#[test]
fn a_template_that_does_not_compile_is_refused_at_its_place() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let url = db.url.clone();
    dt(dir.path(), &url, &["migrate"]);
    let bad = format!(
        "{{\"tenants\": [{{\"slug\": \"acme\", \"name\": \"Acme\"}}],\n\"templates\": [\n{},\n{}]}}",
        template("tenant", Some(("tenant", "acme")), "fine\n"),
        template("family", None, "line one\n{{ oops"),
    );
    let bad = write_file(dir.path(), "bad.json", &bad);
    let mut cmd = dialtone(dir.path(), &url);
    cmd.args(["import", bad.to_str().unwrap()]);
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.json:4:1 (templates[1] body): "),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    let stored = rows(&rt, &db);
    assert!(stored.tenants.is_empty() && stored.templates.is_empty());

    let (summary, said) = dt(
        dir.path(),
        &url,
        &["import", "--skip-invalid", bad.to_str().unwrap()],
    );
    assert!(said.contains("skipping 1 invalid rows"), "{said}");
    assert!(summary.contains("templates +1 ~0 =0 -0"), "{summary}");
    let stored = rows(&rt, &db);
    assert_eq!(stored.templates.len(), 1);
    assert!(stored.templates[0].updated_by.starts_with("cli:"));
}

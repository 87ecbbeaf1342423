//! The provision() core against a real (SQLite) store and mirror: rendering,
//! the override chain, error isolation, determinism and cache invalidation.

use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::store::{LineInput, PhoneInput, TemplateInput, TenantInput};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;
use dialtone_tftp::{ProvisionError, ProvisionOptions, Provisioner, Request, Shipped};

const YEALINK_CFG: &str = "#!version:1.0.0.1\n\
{% for line in lines %}account.{{ line.position }}.user_name = {{ line.auth_user }}\n\
account.{{ line.position }}.password = {{ line.password }}\n\
account.{{ line.position }}.display_name = {{ line.display_name }}\n\
{% endfor %}local_time.ntp_server1 = {{ settings.ntp_server }}\n\
remote_phonebook.data.1.url = {{ server.directory_url }}\n";

const SNOM_HTM: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<settings><phone-settings>\
{% for line in lines %}<user_realname idx=\"{{ line.position }}\" perm=\"\">{{ line.display_name }}</user_realname>{% endfor %}\
</phone-settings></settings>\n";

fn audit() -> Audit {
    Audit {
        actor: "test".into(),
        action: "test".into(),
        entity: "test".into(),
        entity_key: String::new(),
        detail: serde_json::json!({}),
    }
}

fn phone(mac: &str, family: Family, model: &str, names: &[&str]) -> Mutation {
    Mutation::UpsertPhone(PhoneInput {
        tenant: "acme".into(),
        mac: mac.parse().unwrap(),
        family,
        model: Some(model.into()),
        label: None,
        variables: "{}".into(),
        http_user: None,
        http_password: None,
        lines: names
            .iter()
            .enumerate()
            .map(|(i, name)| LineInput {
                extension: format!("{}", 101 + i),
                display_name: (*name).into(),
                auth_user: format!("u{}", 101 + i),
                password: Some(format!("secret-{i}")),
                registrar: "sip.example.net".into(),
                proxy: None,
                settings: "{}".into(),
            })
            .collect(),
    })
}

fn template(
    scope: TemplateScope,
    family: Family,
    scope_key: &str,
    name: &str,
    body: &str,
) -> Mutation {
    Mutation::UpsertTemplate(TemplateInput {
        scope,
        family,
        scope_key: scope_key.into(),
        file_pattern: name.into(),
        body: body.into(),
        updated_by: "test".into(),
    })
}

struct Fixture {
    _db: TestDb,
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    mirror: Arc<Mirror>,
    provisioner: Arc<Provisioner>,
}

impl Fixture {
    async fn new() -> Fixture {
        let db = TestDb::sqlite();
        let store = db.store().await;
        store
            .apply(
                &[
                    Mutation::UpsertTenant(TenantInput {
                        slug: "acme".into(),
                        name: "Acme & Sons".into(),
                        default_region: "US".into(),
                        settings: r#"{"ntp_server":"ntp.acme.example"}"#.into(),
                    }),
                    phone(
                        "00:15:65:00:00:01",
                        Family::Yealink,
                        "T46S",
                        &["Reception", "Back office"],
                    ),
                    phone("00:15:65:00:00:02", Family::Yealink, "T54W", &["Sales"]),
                    phone("00:04:13:00:00:03", Family::Snom, "D785", &["R&D <lab>"]),
                ],
                &audit(),
            )
            .await
            .unwrap();
        let mirror = Arc::new(Mirror::new());
        watcher::full_load(&mirror, &*store).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("yealink")).unwrap();
        std::fs::create_dir_all(dir.path().join("snom")).unwrap();
        std::fs::write(dir.path().join("yealink/{mac}.cfg.tera"), YEALINK_CFG).unwrap();
        std::fs::write(dir.path().join("snom/snom{model}-{mac}.htm.tera"), SNOM_HTM).unwrap();
        let shipped = Shipped::load(dir.path(), 1).unwrap();
        let provisioner = Arc::new(Provisioner::new(
            mirror.clone(),
            test_key(),
            shipped,
            ProvisionOptions {
                base_url: "http://prov.example.net".into(),
                ..Default::default()
            },
        ));
        Fixture {
            _db: db,
            _dir: dir,
            store,
            mirror,
            provisioner,
        }
    }

    fn get(&self, path: &str) -> Result<String, ProvisionError> {
        self.provisioner
            .provision(&Request {
                path,
                user_agent: None,
            })
            .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
    }

    /// Applies a write and brings the mirror and the render cache along, as
    /// the watcher and the change-stream follower do in the server.
    async fn write(&self, mutations: &[Mutation]) {
        let mut events = self.mirror.subscribe();
        self.store.apply(mutations, &audit()).await.unwrap();
        watcher::catch_up(&self.mirror, &*self.store).await.unwrap();
        while let Ok(event) = events.try_recv() {
            self.provisioner.invalidate(&event);
        }
    }
}

#[tokio::test]
async fn renders_a_phone_from_the_mirror() {
    let f = Fixture::new().await;
    let text = f.get("/001565000001.cfg").unwrap();
    assert!(text.starts_with("#!version:1.0.0.1\n"), "{text}");
    assert!(text.contains("account.1.user_name = u101\n"), "{text}");
    assert!(
        text.contains("account.2.display_name = Back office\n"),
        "{text}"
    );
    // Secrets are opened only here, for the phone's own file.
    assert!(text.contains("account.1.password = secret-0\n"), "{text}");
    // Tenant settings override the built-in defaults.
    assert!(
        text.contains("local_time.ntp_server1 = ntp.acme.example\n"),
        "{text}"
    );
    assert!(text.contains(
        "remote_phonebook.data.1.url = http://prov.example.net/001565000001-directory.xml"
    ));
    // XML families escape what they interpolate.
    let xml = f.get("snomD785-000413000003.htm").unwrap();
    assert!(
        xml.contains(">R&amp;D &lt;lab&gt;</user_realname>"),
        "{xml}"
    );
}

#[tokio::test]
async fn unknown_phones_and_names_reveal_nothing() {
    let f = Fixture::new().await;
    for path in [
        "001565999999.cfg",
        "nothing.txt",
        "snomD785-000413999999.htm",
        "y000000000000.boot",
    ] {
        assert_eq!(f.get(path), Err(ProvisionError::NotFound), "{path}");
    }
    // A Yealink phone asking for a Snom file name is not served either.
    assert_eq!(
        f.get("snomD785-001565000001.htm"),
        Err(ProvisionError::NotFound)
    );
    assert!(matches!(
        f.get("../001565000001.cfg"),
        Err(ProvisionError::BadPath(_))
    ));
}

#[tokio::test]
async fn renders_are_deterministic_and_cached() {
    let f = Fixture::new().await;
    let request = Request {
        path: "001565000001.cfg",
        user_agent: None,
    };
    let a = f.provisioner.provision(&request).unwrap();
    let b = f.provisioner.provision(&request).unwrap();
    assert!(
        Arc::ptr_eq(&a.body, &b.body),
        "second fetch should be a cache hit"
    );
    // A fresh provisioner (another process, in effect) renders the same bytes.
    let other = Provisioner::new(
        f.mirror.clone(),
        test_key(),
        Shipped::load(f._dir.path(), 7).unwrap(),
        ProvisionOptions {
            base_url: "http://prov.example.net".into(),
            ..Default::default()
        },
    );
    let c = other.provision(&request).unwrap();
    assert_eq!(a.body, c.body);
    assert_eq!(a.etag, c.etag);
}

#[tokio::test]
async fn override_chain_phone_tenant_model_family_shipped() {
    let f = Fixture::new().await;
    let tenant_id = f
        .mirror
        .load()
        .tenant_by_slug("acme")
        .unwrap()
        .id
        .to_string();
    let name = "{mac}.cfg";
    f.write(&[template(
        TemplateScope::Family,
        Family::Yealink,
        "",
        name,
        "from = family\n",
    )])
    .await;
    assert_eq!(f.get("001565000001.cfg").unwrap(), "from = family\n");
    f.write(&[template(
        TemplateScope::Model,
        Family::Yealink,
        "T46S",
        name,
        "from = model\n",
    )])
    .await;
    assert_eq!(f.get("001565000001.cfg").unwrap(), "from = model\n");
    // The other model still gets the family default.
    assert_eq!(f.get("001565000002.cfg").unwrap(), "from = family\n");
    f.write(&[template(
        TemplateScope::Tenant,
        Family::Yealink,
        &tenant_id,
        name,
        "from = tenant\n",
    )])
    .await;
    assert_eq!(f.get("001565000001.cfg").unwrap(), "from = tenant\n");
    assert_eq!(f.get("001565000002.cfg").unwrap(), "from = tenant\n");
    f.write(&[template(
        TemplateScope::Phone,
        Family::Yealink,
        "001565000001",
        name,
        "from = phone\n",
    )])
    .await;
    assert_eq!(f.get("001565000001.cfg").unwrap(), "from = phone\n");
    assert_eq!(f.get("001565000002.cfg").unwrap(), "from = tenant\n");
}

#[tokio::test]
async fn a_broken_template_fails_only_its_phones() {
    let f = Fixture::new().await;
    let broken = "line one\n{% for line in lines %}{{ line.nope }}{% endfor %}\n";
    f.write(&[template(
        TemplateScope::Phone,
        Family::Yealink,
        "001565000001",
        "{mac}.cfg",
        broken,
    )])
    .await;
    match f.get("001565000001.cfg") {
        Err(ProvisionError::Render {
            template,
            line,
            message,
            ..
        }) => {
            assert!(template.contains("yealink/{mac}.cfg (stored"), "{template}");
            assert_eq!(line, Some(2), "{message}");
        }
        other => panic!("expected a render error, got {other:?}"),
    }
    // Everyone else is served as before.
    assert!(f
        .get("001565000002.cfg")
        .unwrap()
        .contains("account.1.user_name = u101"));
    // A syntax error names its line too.
    let syntax = "a = 1\nb = {{ \n";
    f.write(&[template(
        TemplateScope::Phone,
        Family::Yealink,
        "001565000002",
        "{mac}.cfg",
        syntax,
    )])
    .await;
    assert!(matches!(
        f.get("001565000002.cfg"),
        Err(ProvisionError::Render { line: Some(2), .. })
    ));
}

#[tokio::test]
async fn edits_invalidate_exactly_what_they_touch() {
    let f = Fixture::new().await;
    let before_1 = f.get("001565000001.cfg").unwrap();
    let before_2 = f
        .provisioner
        .provision(&Request {
            path: "001565000002.cfg",
            user_agent: None,
        })
        .unwrap();
    f.write(&[phone(
        "00:15:65:00:00:01",
        Family::Yealink,
        "T46S",
        &["Front desk", "Back office", "Lobby"],
    )])
    .await;
    let after_1 = f.get("001565000001.cfg").unwrap();
    assert_ne!(before_1, after_1);
    assert!(
        after_1.contains("account.3.display_name = Lobby"),
        "{after_1}"
    );
    // The other phone's cached file survived the edit.
    let after_2 = f
        .provisioner
        .provision(&Request {
            path: "001565000002.cfg",
            user_agent: None,
        })
        .unwrap();
    assert!(
        Arc::ptr_eq(&before_2.body, &after_2.body),
        "unrelated file was re-rendered"
    );
    // A tenant change reaches every phone of the tenant.
    f.write(&[Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme & Sons".into(),
        default_region: "US".into(),
        settings: r#"{"ntp_server":"ntp2.acme.example"}"#.into(),
    })])
    .await;
    let text = f.get("001565000002.cfg").unwrap();
    assert!(text.contains("ntp2.acme.example"), "{text}");
    let _ = Duration::ZERO;
}

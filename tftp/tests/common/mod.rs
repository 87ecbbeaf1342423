//! A store, a mirror and a provisioner over test templates, shared by the
//! provisioning and TFTP tests.
#![allow(dead_code)]

use std::sync::Arc;

use dialtone_sync::store::{LineInput, PhoneInput, TemplateInput, TenantInput};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;
use dialtone_tftp::{ProvisionError, ProvisionOptions, Provisioner, Request, Shipped};

pub const YEALINK_CFG: &str = "#!version:1.0.0.1\n\
{% for line in lines %}account.{{ line.position }}.user_name = {{ line.auth_user }}\n\
account.{{ line.position }}.password = {{ line.password }}\n\
account.{{ line.position }}.display_name = {{ line.display_name }}\n\
{% endfor %}local_time.ntp_server1 = {{ settings.ntp_server }}\n\
remote_phonebook.data.1.url = {{ server.directory_url }}\n";

pub const SNOM_HTM: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<settings><phone-settings>\
{% for line in lines %}<user_realname idx=\"{{ line.position }}\" perm=\"\">{{ line.display_name }}</user_realname>{% endfor %}\
</phone-settings></settings>\n";

pub fn audit() -> Audit {
    Audit {
        tenant: None,
        actor: "test".into(),
        action: "test".into(),
        entity: "test".into(),
        entity_key: String::new(),
        detail: serde_json::json!({}),
    }
}

pub fn phone(mac: &str, family: Family, model: &str, names: &[&str]) -> Mutation {
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

pub fn template(
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
        keep_versions: None,
    })
}

pub struct Fixture {
    pub _db: TestDb,
    pub _dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub mirror: Arc<Mirror>,
    pub provisioner: Arc<Provisioner>,
}

impl Fixture {
    pub async fn new() -> Fixture {
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

    pub fn get(&self, path: &str) -> Result<String, ProvisionError> {
        self.provisioner
            .provision(&Request {
                path,
                user_agent: None,
                ..Default::default()
            })
            .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
    }

    /// Applies a write and brings the mirror and the render cache along, as
    /// the watcher and the change-stream follower do in the server.
    pub async fn write(&self, mutations: &[Mutation]) {
        let mut events = self.mirror.subscribe();
        self.store.apply(mutations, &audit()).await.unwrap();
        watcher::catch_up(&self.mirror, &*self.store).await.unwrap();
        while let Ok(event) = events.try_recv() {
            self.provisioner.invalidate(&event);
        }
    }
}

/// A provisioner over the fixture's mirror that records provisioning
/// history, and the writer that stores it.
pub fn recording(f: &Fixture) -> (Provisioner, dialtone_sync::history::HistoryWriter) {
    let (sink, writer) = dialtone_sync::history::channel(f.store.clone(), 100);
    let provisioner = Provisioner::new(
        f.mirror.clone(),
        test_key(),
        Shipped::load(f._dir.path(), 1).unwrap(),
        ProvisionOptions::default(),
    )
    .with_history(sink);
    (provisioner, writer)
}

/// Stores what the writer has queued, then stops it.
pub async fn stored(writer: dialtone_sync::history::HistoryWriter) {
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    writer.run(cancel, std::time::Duration::from_secs(10)).await;
}

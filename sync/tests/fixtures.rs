//! Data builders shared by the sync tests. MACs use real vendor OUIs and
//! numbers the reserved fictional ranges (see docs/test-data.md).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use dialtone_sync::store::{DirectoryEntryInput, LineInput, PhoneInput, TenantInput};
use dialtone_sync::testing::eventually;
use dialtone_sync::*;
use tokio_util::sync::CancellationToken;

pub fn tenant(slug: &str) -> Mutation {
    Mutation::UpsertTenant(TenantInput {
        slug: slug.into(),
        name: format!("{slug} Ltd"),
        default_region: "US".into(),
        settings: "{}".into(),
    })
}

pub fn line(ext: &str, password: &str) -> LineInput {
    LineInput {
        extension: ext.into(),
        display_name: format!("Desk {ext}"),
        auth_user: ext.into(),
        password: Some(password.into()),
        registrar: "sip.example.net".into(),
        proxy: None,
        settings: "{}".into(),
    }
}

/// A Yealink phone (OUI 00:15:65) numbered `n`.
pub fn phone(tenant: &str, n: u32, lines: usize) -> Mutation {
    Mutation::UpsertPhone(PhoneInput {
        tenant: tenant.into(),
        mac: format!("001565{n:06x}").parse().unwrap(),
        family: Family::Yealink,
        model: Some("T46S".into()),
        label: None,
        variables: "{}".into(),
        http_user: None,
        http_password: None,
        lines: (0..lines)
            .map(|i| line(&format!("{}", 100 + i), &format!("pw-{n}-{i}")))
            .collect(),
    })
}

pub fn entry(tenant: &str, id: &str, name: &str, number: &str) -> Mutation {
    Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
        tenant: tenant.into(),
        external_id: id.into(),
        name: name.into(),
        company: None,
        numbers: vec![DirectoryNumber {
            number: number.into(),
            kind: "work".into(),
        }],
    })
}

pub fn audit(action: &str) -> Audit {
    Audit {
        tenant: None,
        actor: "test".into(),
        action: action.into(),
        entity: "test".into(),
        entity_key: String::new(),
        detail: serde_json::json!({}),
    }
}

/// The database's rows, sorted, as the mirror should hold them.
pub async fn db_rows(store: &dyn Store) -> Dataset {
    let (mut data, _, _) = store.load_all().await.unwrap();
    data.sort();
    data
}

pub struct RunningMirror {
    pub mirror: Arc<Mirror>,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl RunningMirror {
    pub async fn start(store: Arc<dyn Store>) -> RunningMirror {
        Self::start_with(store, watcher::WatchOptions::default()).await
    }

    pub async fn start_with(
        store: Arc<dyn Store>,
        options: watcher::WatchOptions,
    ) -> RunningMirror {
        let mirror = Arc::new(Mirror::new());
        watcher::full_load(&mirror, &*store).await.unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watcher::run(mirror.clone(), store, options, cancel.clone()));
        RunningMirror {
            mirror,
            cancel,
            task,
        }
    }

    /// Waits until the mirror equals the database; panics with a diff summary if it never does.
    pub async fn assert_converges(&self, store: &dyn Store, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let want = db_rows(store).await;
            let have = self.mirror.load().to_dataset();
            if want == have {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "mirror never matched the database: db has {} phones / {} lines / {} entries, mirror {} / {} / {}",
                    want.phones.len(),
                    want.lines.len(),
                    want.directory_entries.len(),
                    have.phones.len(),
                    have.lines.len(),
                    have.directory_entries.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&MirrorState) -> bool) -> bool {
        let m = self.mirror.clone();
        eventually(timeout, move || check(&m.load())).await
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

pub fn ldap_source(tenant: &str, name: &str, secret: Option<&str>) -> Mutation {
    Mutation::UpsertDirectorySource(dialtone_sync::store::DirectorySourceInput {
        tenant: tenant.into(),
        name: name.into(),
        kind: SourceKind::Ldap,
        priority: 10,
        enabled: true,
        settings: r#"{"url":"ldap://127.0.0.1:1/","base_dn":"dc=example,dc=com"}"#.into(),
        secret: secret.map(Into::into),
        timeout_ms: 200,
    })
}

//! The shipped Snom model file (`snom<model>.htm`) names the phone's own
//! file in `setting_server`, which the phone keeps for good (`perm="R"`).
//! Asked without a known MAC it must leave Snom's `{mac}` placeholder there,
//! never an empty MAC that names no phone.

use std::path::PathBuf;
use std::sync::Arc;

use dialtone_sync::store::{PhoneInput, TenantInput};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;
use dialtone_tftp::{ProvisionOptions, Provisioner, Request, Shipped};

const SNOM_UA: &str = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413922D24 SXM:0 UXM:0)";
const UNKNOWN_SNOM_UA: &str = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413000777 SXM:0 UXM:0)";
/// A Yealink User-Agent carrying the recorded Snom phone's MAC.
const FOREIGN_UA: &str = "Yealink SIP-T46G 28.72.0.1 00:04:13:92:2d:24";

async fn provisioner() -> (TestDb, Provisioner) {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let batch = [
        Mutation::UpsertTenant(TenantInput {
            slug: "acme".into(),
            name: "Acme".into(),
            default_region: "US".into(),
            settings: "{}".into(),
        }),
        Mutation::UpsertPhone(PhoneInput {
            tenant: "acme".into(),
            mac: "000413922d24".parse().unwrap(),
            family: Family::Snom,
            model: Some("D785".into()),
            label: None,
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            lines: Vec::new(),
        }),
    ];
    let audit = Audit {
        tenant: None,
        actor: "t".into(),
        action: "t".into(),
        entity: "t".into(),
        entity_key: String::new(),
        detail: serde_json::json!({}),
    };
    store.apply(&batch, &audit).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let templates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates");
    let provisioner = Provisioner::new(
        mirror,
        test_key(),
        Shipped::load(&templates, 1).unwrap(),
        ProvisionOptions {
            base_url: "http://prov.example.net".into(),
            ..Default::default()
        },
    );
    (db, provisioner)
}

fn setting_server(provisioner: &Provisioner, user_agent: Option<&str>) -> String {
    let rendered = provisioner
        .provision(&Request {
            path: "snomD785.htm",
            user_agent,
            ..Default::default()
        })
        .unwrap();
    let text = std::str::from_utf8(&rendered.body).unwrap().to_string();
    let document = roxmltree::Document::parse(&text).unwrap();
    let node = document
        .descendants()
        .find(|n| n.has_tag_name("setting_server"))
        .unwrap_or_else(|| panic!("no setting_server in\n{text}"));
    node.text().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_model_file_names_the_phones_file_or_snoms_mac_placeholder() {
    let (_db, provisioner) = provisioner().await;
    for (user_agent, want) in [
        // Over TFTP there is no User-Agent.
        (None, "http://prov.example.net/snomD785-{mac}.htm"),
        // A phone not recorded yet.
        (
            Some(UNKNOWN_SNOM_UA),
            "http://prov.example.net/snomD785-{mac}.htm",
        ),
        // Another family's User-Agent does not lend its MAC.
        (
            Some(FOREIGN_UA),
            "http://prov.example.net/snomD785-{mac}.htm",
        ),
        // The recorded phone's own User-Agent: its MAC, spelled as Snom does.
        (
            Some(SNOM_UA),
            "http://prov.example.net/snomD785-000413922D24.htm",
        ),
    ] {
        let got = setting_server(&provisioner, user_agent);
        assert!(!got.contains("-.htm"), "{user_agent:?}: {got}");
        assert_eq!(got, want, "{user_agent:?}");
    }
}

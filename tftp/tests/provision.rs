//! The provision() core against a real (SQLite) store and mirror: rendering,
//! the override chain, error isolation, determinism and cache invalidation.

mod common;

use std::sync::Arc;

use common::*;
use dialtone_sync::store::TenantInput;
use dialtone_sync::testing::test_key;
use dialtone_sync::*;
use dialtone_tftp::{ProvisionError, ProvisionOptions, Provisioner, Request, Shipped};

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
}

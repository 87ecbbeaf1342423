//! A template's own error text never carries a phone's secrets into the
//! provisioning history (tenants read it) or the log: a tenant could write
//! `throw('pw=' ~ lines[0].password)` for every phone but the one the check
//! samples, and read the passwords back from the history.

mod common;

use common::*;
use dialtone_sync::{Family, Mac, TemplateScope};
use dialtone_tftp::Request;

#[tokio::test]
async fn a_thrown_password_reaches_neither_history_nor_log() {
    let f = Fixture::new().await;
    let body = "ok\n{% if phone.mac != '001565000002' %}{{ throw('pw=' ~ lines[0].password) }}\
                {% endif %}";
    // The check renders its sample (another phone) with masked passwords,
    // and the template passes it.
    let state = f.mirror.load();
    let sample = state
        .phone_by_mac(&"001565000002".parse().unwrap())
        .unwrap();
    f.provisioner
        .check_template(Family::Yealink, "{mac}.cfg", body, Some(sample))
        .unwrap();
    let tenant = state.tenant_by_slug("acme").unwrap().id.to_string();
    f.write(&[template(
        TemplateScope::Tenant,
        Family::Yealink,
        &tenant,
        "{mac}.cfg",
        body,
    )])
    .await;

    let (provisioner, writer) = recording(&f);
    let failed = provisioner
        .provision(&Request {
            path: "001565000001.cfg",
            user_agent: Some("Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01"),
            remote: Some("192.0.2.10".parse().unwrap()),
            protocol: dialtone_tftp::Protocol::Http,
            query: None,
            auth: None,
        })
        .unwrap_err();
    // What the HTTP and TFTP front ends log.
    let logged = failed.to_string();
    assert!(
        !logged.contains("secret-0") && !logged.contains("pw="),
        "{logged}"
    );
    assert!(logged.contains("line 2 column"), "{logged}");

    stored(writer).await;
    let mac: Mac = "001565000001".parse().unwrap();
    let boots = f.store.recent_boots(&mac, None, 10).await.unwrap();
    assert_eq!(boots.len(), 1, "{boots:?}");
    let outcome = &boots[0].outcome;
    assert!(
        !outcome.contains("secret-0") && !outcome.contains("pw="),
        "{outcome}"
    );
    assert!(
        outcome.contains("yealink/{mac}.cfg") && outcome.contains("invalid operation"),
        "{outcome}"
    );
}

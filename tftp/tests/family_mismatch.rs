//! A phone created under the wrong family: its own file, asked for by a
//! User-Agent of another family, is not rendered from its record's
//! templates and sent as if all were well. It is "not found", as for a
//! MAC nobody has, and the phone's history names the mismatch so the
//! support desk sees it at the first look.

mod common;

use common::*;
use dialtone_sync::store::{PhoneInput, TenantInput};
use dialtone_sync::{Family, Mac, Mutation};
use dialtone_tftp::{Protocol, ProvisionError, Request};

const POLY_UA: &str = "FileTransport PolycomVVX-VVX_400-UA/6.4.3.5018 Type/Application";
const YEALINK_UA: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01";
const MPP_UA: &str = "Cisco-CP-8841-3PCC/11.3.7 (00562b043615)";

fn request<'a>(path: &'a str, user_agent: Option<&'a str>) -> Request<'a> {
    Request {
        path,
        user_agent,
        remote: Some("192.0.2.10".parse().unwrap()),
        protocol: Protocol::Http,
        query: None,
        auth: None,
    }
}

#[tokio::test]
async fn another_familys_user_agent_gets_not_found_and_the_history_says_why() {
    let f = Fixture::new().await;
    let (provisioner, writer) = recording(&f);

    // The phone is recorded as a Yealink; a Poly and a Cisco MPP User-Agent
    // ask for its `{mac}.cfg`, a name their families use too.
    for ua in [POLY_UA, MPP_UA] {
        let refused = provisioner
            .provision(&request("001565000001.cfg", Some(ua)))
            .unwrap_err();
        assert!(
            matches!(refused, ProvisionError::NotFound),
            "{ua}: {refused}"
        );
    }
    // A Poly's MAC recorded as a Yealink: that is a mismatch to fix.
    f.write(&[phone(
        "00:04:f2:00:00:09",
        Family::Yealink,
        "T46S",
        &["Board"],
    )])
    .await;
    let refused = provisioner
        .provision(&request("0004f2000009.cfg", Some(POLY_UA)))
        .unwrap_err();
    assert!(matches!(refused, ProvisionError::NotFound), "{refused}");
    // The same answer a MAC nobody has gets.
    let unknown = provisioner
        .provision(&request("001565009999.cfg", Some(POLY_UA)))
        .unwrap_err();
    assert!(matches!(unknown, ProvisionError::NotFound), "{unknown}");

    // Its own family's User-Agent, or none (TFTP, a bare client), is served.
    let served = provisioner
        .provision(&request("001565000001.cfg", Some(YEALINK_UA)))
        .unwrap();
    assert!(!served.body.is_empty());
    provisioner
        .provision(&request("001565000001.cfg", None))
        .unwrap();

    stored(writer).await;
    let mac: Mac = "001565000001".parse().unwrap();
    let mut boots = f.store.recent_boots(&mac, None, 10).await.unwrap();
    boots.sort_by_key(|b| b.at);
    let outcomes: Vec<&str> = boots.iter().map(|b| b.outcome.as_str()).collect();
    // A Yealink's MAC: anyone may send another User-Agent with it, so it
    // is said as that, not as a record to correct.
    for said in [
        "not-found: asked with a poly User-Agent, not a yealink one",
        "not-found: asked with a cisco-mpp User-Agent, not a yealink one",
    ] {
        assert!(outcomes.contains(&said), "{outcomes:?}");
    }
    let poly_mac: Mac = "0004f2000009".parse().unwrap();
    let poly = f.store.recent_boots(&poly_mac, None, 10).await.unwrap();
    assert_eq!(
        poly[0].outcome,
        "not-found: family mismatch: recorded as yealink, the User-Agent and the MAC's vendor are poly"
    );
    // The two served fetches were the same bytes: the history keeps one.
    assert!(outcomes.contains(&"ok"), "{outcomes:?}");
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
}

/// The other refusals of a known phone's own file are said in its history
/// too, the answer staying "not found": a name of another family's (a
/// Cisco SPA created as a Yealink asks `spa<mac>.cfg`), a phone with an
/// HTTP login asked over TFTP, and a fetch from outside its tenant's
/// networks (a line its tenant does not see).
#[tokio::test]
async fn each_refusal_of_a_known_phone_is_said_in_its_history() {
    let f = Fixture::new().await;
    let Mutation::UpsertPhone(mut locked) =
        phone("00:15:65:00:00:07", Family::Yealink, "T46S", &["Lab"])
    else {
        unreachable!()
    };
    locked.http_user = Some("desk".into());
    locked.http_password = Some("hunter2".into());
    f.write(&[
        Mutation::UpsertPhone(locked),
        Mutation::UpsertTenant(TenantInput {
            slug: "fenced".into(),
            name: "Fenced".into(),
            default_region: "US".into(),
            settings: r#"{"provisioning_networks":["10.9.0.0/16"]}"#.into(),
        }),
        Mutation::UpsertPhone(PhoneInput {
            tenant: "fenced".into(),
            ..match phone("00:15:65:00:00:08", Family::Yealink, "T46S", &["Gate"]) {
                Mutation::UpsertPhone(input) => input,
                _ => unreachable!(),
            }
        }),
    ])
    .await;
    let (provisioner, writer) = recording(&f);
    let tftp = |path: &'static str, from: &str| Request {
        path,
        remote: Some(from.parse().unwrap()),
        protocol: Protocol::Tftp,
        ..Default::default()
    };
    for asked in [
        tftp("spa001565000001.cfg", "192.0.2.10"),
        tftp("001565000007.cfg", "192.0.2.10"),
        tftp("001565000008.cfg", "192.0.2.10"),
    ] {
        let refused = provisioner.provision(&asked).unwrap_err();
        assert!(
            matches!(refused, ProvisionError::NotFound),
            "{}: {refused}",
            asked.path
        );
    }
    // From inside its networks the fenced phone is served.
    provisioner
        .provision(&tftp("001565000008.cfg", "10.9.1.2"))
        .unwrap();
    stored(writer).await;

    let lines = |mac: &'static str| {
        let store = f.store.clone();
        async move {
            let mut boots = store
                .recent_boots(&mac.parse().unwrap(), None, 10)
                .await
                .unwrap();
            boots.sort_by_key(|b| b.at);
            boots
        }
    };
    let spa = lines("001565000001").await;
    assert_eq!(spa.len(), 1, "{spa:?}");
    assert_eq!(
        spa[0].outcome,
        "not-found: not a yealink file name (it is cisco-spa's)"
    );
    let locked = lines("001565000007").await;
    assert_eq!(
        locked[0].outcome,
        "not-found: the phone has an HTTP login, which TFTP cannot carry"
    );
    let fenced = lines("001565000008").await;
    let outside = fenced.iter().find(|b| b.remote_ip == "192.0.2.10").unwrap();
    assert_eq!(
        outside.outcome,
        "not-found: from outside its tenant's provisioning networks"
    );
    assert_eq!(outside.tenant_id, None, "only global admins read it");
    assert!(fenced
        .iter()
        .any(|b| b.outcome == "ok" && b.tenant_id.is_some()));
}

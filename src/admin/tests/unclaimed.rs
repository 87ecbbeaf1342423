//! Unclaimed devices through the API: listing per tenant, the unassigned
//! list, and claiming (one step to a phone, 409 for a phone, 404 across
//! tenants, 422 when the family is unknown).

use axum::http::Method;
use dialtone_sync::store::{UnclaimedDevice, UNASSIGNED};
use dialtone_sync::{Backend, Id, Store};

use super::{Harness, ACME_MAC, GLOBEX_MAC};

fn device(tenant_id: Id, mac: &str, family: Option<&str>) -> UnclaimedDevice {
    UnclaimedDevice {
        tenant_id,
        mac: mac.into(),
        family: family.map(str::to_string),
        model: Some("T46U".into()),
        firmware: Some("108.86.0.20".into()),
        source: "192.0.2.10".into(),
        first_seen: 1_000,
        last_seen: 2_000,
        count: 3,
    }
}

/// What every harness starts with: 077 seen in acme's network, 078 from
/// nowhere, 079 in acme's network without a family, and acme's own phone
/// (claimed since it was seen).
pub async fn seed(store: &dyn Store, acme: Id) {
    let devices = [
        device(UNASSIGNED, "001565000078", Some("yealink")),
        device(acme, "001565000001", Some("yealink")),
        device(acme, "001565000077", Some("yealink")),
        device(acme, "001565000079", None),
    ];
    store.record_unclaimed(&devices, 1_000).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_claims() {
    let h = Harness::new(Backend::Sqlite).await;
    let list = h.get("acme-read", "/v1/tenants/acme/unclaimed").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let macs: Vec<String> = list.json()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mac"].as_str().unwrap().to_string())
        .collect();
    // A MAC that is a phone already is not offered.
    assert_eq!(macs, ["001565000077", "001565000079"]);
    assert_eq!(list.json()["devices"][0]["model"], "T46U");
    assert_eq!(list.json()["devices"][0]["count"], 3);
    assert_eq!(
        h.get("globex-admin", "/v1/tenants/acme/unclaimed")
            .await
            .status,
        404
    );
    let unassigned = h.get("global", "/v1/unclaimed").await;
    assert!(
        unassigned.text.contains("001565000078"),
        "{}",
        unassigned.text
    );

    // One request says which tenants have unclaimed phones: a tenant's
    // token its own alone, and only a global admin the unassigned list.
    let counts = h.get("global", "/v1/unclaimed/counts").await;
    assert_eq!(counts.status, 200, "{}", counts.text);
    assert_eq!(
        counts.json(),
        serde_json::json!({"tenants": [{"slug": "acme", "name": "acme Inc", "count": 2}], "unassigned": 1})
    );
    let own = h.get("acme-read", "/v1/unclaimed/counts").await;
    assert_eq!(
        own.json(),
        serde_json::json!({"tenants": [{"slug": "acme", "name": "acme Inc", "count": 2}]})
    );
    let other = h.get("globex-admin", "/v1/unclaimed/counts").await;
    assert_eq!(other.json(), serde_json::json!({"tenants": []}));

    let claim = |role, path: &'static str, body: &'static str| {
        h.call(Some(role), Method::POST, path, Some(body), &[])
    };
    let path = "/v1/tenants/acme/unclaimed/001565000077/claim";
    let created = claim("acme-admin", path, r#"{"name": "Lobby", "model": "T48U"}"#).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json()["family"], "yealink");
    assert_eq!(created.json()["model"], "T48U");
    assert_eq!(created.json()["label"], "Lobby");
    assert!(h
        .mirror
        .load()
        .phone_by_mac(&"001565000077".parse().unwrap())
        .is_some());
    let again = claim("acme-admin", path, "{}").await;
    assert_eq!(again.status, 409, "{}", again.text);
    let list = h.get("acme-admin", "/v1/tenants/acme/unclaimed").await;
    assert!(!list.text.contains("001565000077"), "{}", list.text);

    let no_family = "/v1/tenants/acme/unclaimed/001565000079/claim";
    assert_eq!(claim("acme-admin", no_family, "{}").await.status, 422);
    let told = claim("acme-admin", no_family, r#"{"family": "poly"}"#).await;
    assert_eq!(told.status, 201, "{}", told.text);

    // The unassigned list is the operator's to hand out.
    let stray = "/v1/tenants/acme/unclaimed/001565000078/claim";
    assert_eq!(claim("acme-admin", stray, "{}").await.status, 404);
    assert_eq!(claim("global", stray, "{}").await.status, 201);
    let unassigned = h.get("global", "/v1/unclaimed").await;
    assert!(
        !unassigned.text.contains("001565000078"),
        "{}",
        unassigned.text
    );

    for (body, status) in [
        (r#"{"lines": 3}"#, 400),
        (r#"{"surprise": 1}"#, 400),
        (r#"{"family": "nokia"}"#, 422),
    ] {
        let reply = claim(
            "global",
            "/v1/tenants/acme/unclaimed/001565000099/claim",
            body,
        )
        .await;
        assert!(
            reply.status == status || reply.status == 404 || reply.status == 422,
            "{body}: {} {}",
            reply.status,
            reply.text
        );
    }
    let bad_mac = claim("global", "/v1/tenants/acme/unclaimed/nope/claim", "{}").await;
    assert_eq!(bad_mac.status, 400, "{}", bad_mac.text);
}

/// A claim says nothing of other tenants' phones: globex's MAC, never
/// seen in acme's networks, is as unknown to acme as a MAC nobody has.
/// A MAC acme may see (on its list, or its own phone) is still a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_does_not_tell_whose_phone_a_mac_is() {
    let h = Harness::new(Backend::Sqlite).await;
    {
        let mirror = h.mirror.load();
        let globex = mirror.tenant_by_slug("globex").unwrap().id;
        let phone = mirror.phone_by_mac(&GLOBEX_MAC.parse().unwrap()).unwrap();
        assert_eq!(phone.tenant_id, globex);
    }
    let claim = |mac: &str| {
        let path = format!("/v1/tenants/acme/unclaimed/{mac}/claim");
        let h = &h;
        async move {
            h.call(Some("acme-admin"), Method::POST, &path, Some("{}"), &[])
                .await
        }
    };
    let unknown = claim("001565000099").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let others = claim(GLOBEX_MAC).await;
    assert_eq!(others.status, unknown.status, "{}", others.text);
    // The MAC it was asked about is all that differs.
    assert_eq!(
        others.text,
        unknown.text.replace("001565000099", GLOBEX_MAC)
    );
    let own = claim(ACME_MAC).await;
    assert_eq!(own.status, 409, "{}", own.text);
}

//! `GET /v1/tenants/{slug}/fleet`: figures from the mirror and history,
//! only the tenant's own, and bad parameters refused with a reason.

use dialtone_sync::store::BootRecord;
use dialtone_sync::{now_millis, Backend};

use super::{Harness, ACME_MAC, GLOBEX_MAC};

fn boot(mac: &str, tenant: i64, at: i64, outcome: &str) -> BootRecord {
    BootRecord {
        mac: mac.into(),
        at,
        remote_ip: "192.0.2.9".into(),
        user_agent: Some("Yealink SIP-T46S 66.86.0.15".into()),
        protocol: "http".into(),
        file: format!("{mac}.cfg"),
        outcome: outcome.into(),
        bytes: 0,
        model: Some("T46S".into()),
        firmware: Some("66.86.0.15".into()),
        tenant_id: Some(tenant),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_counts_only_the_tenants_own_phones() {
    let h = Harness::new(Backend::Sqlite).await;
    let state = h.mirror.load();
    let id = |slug: &str| state.tenant_by_slug(slug).unwrap().id;
    let (acme, globex) = (id("acme"), id("globex"));
    let now = now_millis();
    h.store
        .record_boots(&[
            boot(ACME_MAC, acme, now - 2 * 3_600_000, "ok"),
            boot(
                ACME_MAC,
                acme,
                now - 1000,
                "error: template {mac}.cfg at 1:1: boom",
            ),
            boot(GLOBEX_MAC, globex, now - 500, "ok"),
        ])
        .await
        .unwrap();

    let reply = h
        .get("acme-read", "/v1/tenants/acme/fleet?days=7&hours=5")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let fleet = reply.json();
    assert!(!reply.text.contains(GLOBEX_MAC), "{}", reply.text);
    assert_eq!(fleet["phones"], 1);
    assert_eq!(fleet["models"][0]["firmware"], "66.86.0.15");
    assert_eq!(fleet["models"][0]["phones"], 1);
    assert_eq!(fleet["not_seen"].as_array().unwrap().len(), 0);
    let hours = fleet["boots_per_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 5);
    let total: i64 = hours.iter().map(|h| h["boots"].as_i64().unwrap()).sum();
    assert_eq!(total, 2);
    assert_eq!(fleet["failing"][0]["mac"], ACME_MAC);
    assert_eq!(fleet["failing"][0]["outcome"], "render_error");
    assert_eq!(fleet["failing"][0]["source"], "192.0.2.9");
    assert!(fleet["failing"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("boom"));

    // Globex's phone never fetched anything as far as a fresh window goes.
    let reply = h
        .get("globex-admin", "/v1/tenants/globex/fleet?days=1")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(!reply.text.contains(ACME_MAC));
    assert_eq!(reply.json()["failing"].as_array().unwrap().len(), 0);

    for bad in ["days=0", "days=366", "hours=169", "hours=-1", "days=seven"] {
        let reply = h
            .get("global", &format!("/v1/tenants/acme/fleet?{bad}"))
            .await;
        assert!(
            reply.status.is_client_error() && reply.json()["error"]["message"].is_string(),
            "{bad}: {} {}",
            reply.status,
            reply.text
        );
    }
    let reply = h.get("globex-admin", "/v1/tenants/acme/fleet").await;
    assert_eq!(reply.status, 404);
    let reply = h.get("global", "/v1/tenants/nosuch/fleet").await;
    assert_eq!(reply.status, 404);
}

/// A request a ban refuses writes no history, so a phone whose source is
/// banned looked as its last fetch did. It is failing as `banned` while
/// its last source is banned on this node, and only to its own tenant;
/// a refused TFTP fetch's source (anyone may write one in) tells nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_whose_last_source_is_banned_here_is_failing() {
    let h = Harness::new(Backend::Sqlite).await;
    let state = h.mirror.load();
    let id = |slug: &str| state.tenant_by_slug(slug).unwrap().id;
    let (acme, globex) = (id("acme"), id("globex"));
    let now = now_millis();
    let from = |mac: &str, tenant: i64, ip: &str, protocol: &str, outcome: &str| BootRecord {
        remote_ip: ip.into(),
        protocol: protocol.into(),
        ..boot(mac, tenant, now - 1000, outcome)
    };
    h.store
        .record_boots(&[
            from(ACME_MAC, acme, "192.0.2.9", "http", "ok"),
            from(GLOBEX_MAC, globex, "192.0.2.10", "tftp", "not-found"),
        ])
        .await
        .unwrap();
    let h = &h;
    let failing = |slug: &'static str| async move {
        let reply = h.get("global", &format!("/v1/tenants/{slug}/fleet")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()["failing"].clone()
    };
    assert_eq!(failing("acme").await, serde_json::json!([]));

    let guard = h.provisioner.guard();
    for source in ["192.0.2.9", "192.0.2.10"] {
        let source = source.parse().unwrap();
        for _ in 0..1000 {
            if guard.miss(source) {
                break;
            }
        }
        assert!(guard.is_banned(source), "{source} was never banned");
    }
    let acme_failing = failing("acme").await;
    assert_eq!(acme_failing[0]["mac"], ACME_MAC, "{acme_failing}");
    assert_eq!(acme_failing[0]["outcome"], "banned", "{acme_failing}");
    let reason = acme_failing[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("192.0.2.9") && reason.contains("banned on this node"),
        "{reason}"
    );
    let globex_failing = failing("globex").await;
    assert_eq!(
        globex_failing[0]["outcome"], "not_found",
        "{globex_failing}"
    );
    assert!(!globex_failing.to_string().contains("192.0.2.9"));
    let reply = h.get("acme-read", "/v1/tenants/acme/fleet").await;
    assert_eq!(reply.json()["failing"][0]["outcome"], "banned");

    // A banned source inside the tenant's own networks (its office)
    // still gets its phones' files: they are not failing there.
    let site = h
        .put_acme(
            "global",
            serde_json::json!({"name": "Acme", "settings": {
                "sip_domains": ["sip.example.net"],
                "provisioning_networks": ["192.0.2.0/24"],
            }}),
        )
        .await;
    assert_eq!(site.status, 200, "{}", site.text);
    assert_eq!(failing("acme").await, serde_json::json!([]));
    let elsewhere = h
        .put_acme(
            "global",
            serde_json::json!({"name": "Acme", "settings": {
                "sip_domains": ["sip.example.net"],
                "provisioning_networks": ["198.51.100.0/24"],
            }}),
        )
        .await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text);
    assert_eq!(failing("acme").await[0]["outcome"], "banned");

    assert!(guard.lift_ban("192.0.2.9".parse().unwrap()));
    assert_eq!(failing("acme").await, serde_json::json!([]));
}

/// A node whose clock ran a year ahead, put right since, left a fetch of
/// the old firmware stamped a year on: it is neither the phone's firmware
/// nor a sign it was seen lately. A phone whose only fetch is stamped so
/// is not known to have fetched within the window either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_stamped_a_year_ahead_is_not_the_latest() {
    let h = Harness::new(Backend::Sqlite).await;
    let state = h.mirror.load();
    let id = |slug: &str| state.tenant_by_slug(slug).unwrap().id;
    let (acme, globex) = (id("acme"), id("globex"));
    let now = now_millis();
    let year = 365 * 24 * 3_600_000;
    let firmware = |b: BootRecord, firmware: &str| BootRecord {
        user_agent: Some(format!("Yealink SIP-T46S {firmware}")),
        firmware: Some(firmware.into()),
        ..b
    };
    h.store
        .record_boots(&[
            firmware(boot(ACME_MAC, acme, now + year, "ok"), "66.85.0.1"),
            boot(ACME_MAC, acme, now - 30 * 24 * 3_600_000, "ok"),
            boot(GLOBEX_MAC, globex, now + year, "ok"),
        ])
        .await
        .unwrap();
    let reply = h.get("global", "/v1/tenants/acme/fleet?days=7").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let fleet = reply.json();
    assert_eq!(fleet["models"][0]["firmware"], "66.86.0.15", "{fleet}");
    assert_eq!(fleet["not_seen"][0]["mac"], ACME_MAC, "{fleet}");
    assert_eq!(fleet["not_seen"][0]["last_seen"], now - 30 * 24 * 3_600_000);
    let reply = h.get("global", "/v1/tenants/globex/fleet?days=7").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let fleet = reply.json();
    assert_eq!(fleet["not_seen"][0]["mac"], GLOBEX_MAC, "{fleet}");
    assert_eq!(fleet["not_seen"][0]["last_seen"], now + year);
}

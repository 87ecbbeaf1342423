//! Reads against a real slapd: full and incremental, page by page, a
//! merge that waits past the sync's limit or through a cancel, and a cap.

use super::*;

/// A smoke test of the reads against the slapd `scripts/test` starts (the
/// end-to-end tests live in `tests/`).
#[tokio::test]
async fn slapd_reads_page_by_page_and_incrementally() {
    let need = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run the tests through scripts/test"))
    };
    let (url, password) = (
        need("DIALTONE_TEST_LDAP_URL"),
        need("DIALTONE_TEST_LDAP_BIND_PASSWORD"),
    );
    let settings = crate::settings::LdapSettings::parse(
        "t",
        &serde_json::json!({
            "url": url,
            "bind_dn": "cn=admin,dc=example,dc=com",
            "base_dn": "ou=people,dc=example,dc=com",
            "filter": "(objectClass=inetOrgPerson)",
            "mode": "mirror",
            "page_size": 1,
        })
        .to_string(),
    )
    .unwrap();
    let networks = crate::SourceNetworks::parse(&["127.0.0.0/8"])
        .unwrap()
        .shared();
    let ldap = crate::ldap::LdapSource::new(
        crate::source_label::SourceLabel::new(1, 1, "t"),
        settings,
        Some(password),
        networks,
    )
    .unwrap();
    let mut d = MirrorData {
        region: "US".into(),
        ..Default::default()
    };
    let full = one_sync::sync_once(
        &ldap,
        &super::work::MirrorWork::new(1),
        &mut d,
        true,
        1000,
        std::time::Duration::from_secs(60),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(full.changed && !full.capped);
    assert!(d.entries.len() >= 3, "{:?}", d.entries.keys());
    assert!(
        matches!(d.watermark, Some(Watermark::ModifyTimestamp(_))),
        "{:?}",
        d.watermark
    );
    assert_eq!(d.index(7).find("+15550101234"), Some("Alice Example"));
    let incremental = one_sync::sync_once(
        &ldap,
        &super::work::MirrorWork::new(1),
        &mut d,
        false,
        1000,
        std::time::Duration::from_secs(60),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!incremental.changed);
    assert!(d.last_incremental_sync.is_some());
    // A merge still waiting for a place when the sync's limit passes keeps
    // the mirror: the limit is the read's (it covered the merge, which
    // holds the data taken out of `d`, and a late merge emptied the mirror).
    let work = super::work::MirrorWork::new(1);
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, is_held) = tokio::sync::oneshot::channel::<()>();
    let limit = std::time::Duration::from_secs(3);
    let entries = d.entries.len();
    let hold = work.run(move || {
        let _ = held.send(());
        let _ = released.recv_timeout(std::time::Duration::from_secs(60));
    });
    let late = async {
        is_held.await.unwrap();
        let never = tokio_util::sync::CancellationToken::new();
        let sync = one_sync::sync_once(&ldap, &work, &mut d, false, 1000, limit, &never);
        let watch = async {
            // Past the read, waiting for the place; then past the limit.
            while work.waiting() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tokio::time::sleep(limit + std::time::Duration::from_millis(500)).await;
            release.send(()).unwrap();
        };
        tokio::join!(sync, watch).0
    };
    let (held, late) = tokio::join!(hold, late);
    held.unwrap();
    late.unwrap();
    assert_eq!(d.entries.len(), entries);
    assert!(d.watermark.is_some() && d.last_full_sync.is_some());

    // A cancel (the source edited) while the merge waits for its place
    // does not cut the sync short: the merge runs anyway, so the sync ends
    // with it and is charged for it. Cancelled before, the read stops.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, is_held) = tokio::sync::oneshot::channel::<()>();
    let hold = work.run(move || {
        let _ = held.send(());
        let _ = released.recv_timeout(std::time::Duration::from_secs(60));
    });
    let cancelled = async {
        is_held.await.unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        let sync = one_sync::sync_once(&ldap, &work, &mut d, false, 1000, limit, &cancel);
        let watch = async {
            while work.waiting() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            cancel.cancel();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            release.send(()).unwrap();
        };
        tokio::join!(sync, watch).0
    };
    let (held, merged) = tokio::join!(hold, cancelled);
    held.unwrap();
    assert!(merged.is_ok(), "{:?}", merged.err());
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let before = one_sync::sync_once(&ldap, &work, &mut d, false, 1000, limit, &cancel).await;
    assert!(before.is_err(), "a cancelled sync read its source");
    assert_eq!(d.entries.len(), entries);

    let capped = one_sync::sync_once(
        &ldap,
        &super::work::MirrorWork::new(1),
        &mut d,
        true,
        2,
        std::time::Duration::from_secs(60),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(capped.capped);
    assert_eq!(d.entries.len(), 2);
}

//! Lines about a tenant's source say whose it is: two tenants may name
//! their sources alike, and a name is the tenant's to choose.

use std::time::Duration;

use dialtone_sync::testing::build::mirror_of;
use dialtone_sync::{Dataset, DirectorySource, SourceKind};

use crate::clock::Clock;
use crate::error::DirectoryError;
use crate::networks::SourceNetworks;
use crate::sources::{build_source, BreakerOptions};
use crate::test_fixture::tenant;
use crate::{LookupOptions, LookupService};
use dialtone_sync::testing::logs::capture;

/// A name that would read as a field of its own if written unquoted.
const FORGING: &str = "crm tenant=2";

fn failing_row(tenant_id: i64, id: i64) -> DirectorySource {
    DirectorySource {
        id,
        tenant_id,
        name: FORGING.into(),
        kind: SourceKind::Http,
        priority: 10,
        enabled: true,
        // Refused at once: no source may reach the node's loopback.
        settings: r#"{"url": "http://127.0.0.1:9/?n={e164}"}"#.into(),
        secret: None,
        timeout_ms: 500,
        updated_at: 0,
    }
}

fn assert_names(line: &str, tenant: i64, source_id: i64) {
    assert!(line.contains(&format!(" tenant={tenant}")), "{line}");
    assert!(line.contains(&format!(" source_id={source_id}")), "{line}");
    assert!(line.contains(r#" source="crm tenant=2""#), "{line}");
    assert!(!line.contains(" tenant=2 "), "{line}");
}

#[tokio::test]
async fn a_failing_sources_lines_carry_its_tenant_and_id() {
    let logs = capture();
    let mirror = mirror_of(Dataset {
        tenants: vec![tenant(1), tenant(2)],
        directory_sources: vec![failing_row(1, 41)],
        ..Dataset::default()
    });
    let options = LookupOptions {
        breaker_threshold: 1,
        ..LookupOptions::default()
    };
    let service = LookupService::new(mirror, None, options);
    let answer = service.lookup(1, "+15550100001").await.unwrap();
    assert_eq!(answer.name(), None);
    let failed = logs.starting("directory source failed");
    assert_eq!(failed.len(), 1, "{:?}", logs.lines());
    assert_names(&failed[0], 1, 41);
    let opened = logs.starting("directory source failing; circuit opened");
    assert_eq!(opened.len(), 1, "{:?}", logs.lines());
    assert_names(&opened[0], 1, 41);
}

#[tokio::test]
async fn a_breakers_lines_carry_its_sources_tenant_and_id() {
    let logs = capture();
    let breaker = BreakerOptions {
        threshold: 1,
        cooldown: Duration::from_secs(600),
        deadline: Duration::from_secs(1),
    };
    let networks = SourceNetworks::default().shared();
    let row = failing_row(7, 42);
    let source = build_source(&row, None, breaker, Clock::system(), &networks, &[]).unwrap();
    source.failed(&DirectoryError::Upstream("503".into()), Duration::ZERO);
    // Open already: no second line.
    source.failed(&DirectoryError::Upstream("503".into()), Duration::ZERO);
    source.succeeded();
    source.succeeded();
    let opened = logs.starting("directory source failing; circuit opened");
    assert_eq!(opened.len(), 1, "{:?}", logs.lines());
    assert_names(&opened[0], 7, 42);
    let closed = logs.starting("directory source answered again; circuit closed");
    assert_eq!(closed.len(), 1, "{:?}", logs.lines());
    assert_names(&closed[0], 7, 42);
}

//! A tenant's LDAP server chooses the text of its errors, and the node logs
//! them: written unquoted, that text could add fields to the line that
//! read as another tenant's source failing.

mod common;

use std::time::Duration;

use common::ber::{request_id, tagged};
use dialtone_directory::{LookupOptions, LookupService, SourceNetworks};
use dialtone_sync::testing::build::mirror_of;
use dialtone_sync::testing::logs::capture;
use dialtone_sync::{Dataset, DirectorySource, SourceKind, Tenant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server says: the rest of a line for tenant 2's source.
const FORGED: &str = r#"x" tenant=2 source_id=99 source="payroll" kind=timeout error="forged"#;

/// Answers each search on one connection with a searchResultDone of rc 80
/// (other) whose diagnosticMessage is [`FORGED`].
async fn failing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let Ok(Ok((mut stream, _))) =
            tokio::time::timeout(Duration::from_secs(20), listener.accept()).await
        else {
            return;
        };
        let mut request = vec![0u8; 4096];
        while let Ok(Ok(n @ 1..)) =
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut request)).await
        {
            let done = [
                &[0x0a, 0x01, 80][..],
                &tagged(0x04, b""),
                &tagged(0x04, FORGED.as_bytes()),
            ]
            .concat();
            let reply = tagged(
                0x30,
                &[request_id(&request[..n]), tagged(0x65, &done)].concat(),
            );
            if stream.write_all(&reply).await.is_err() {
                return;
            }
        }
    });
    url
}

fn tenant(id: i64) -> Tenant {
    Tenant {
        id,
        slug: format!("t{id}").into(),
        name: format!("T{id}").into(),
        default_region: "US".into(),
        settings: "{}".into(),
        updated_at: 0,
    }
}

#[tokio::test]
async fn a_servers_error_text_stays_inside_the_quoted_error() {
    let logs = capture();
    let url = failing_server().await;
    let settings = serde_json::json!({
        "url": url,
        "base_dn": "dc=example,dc=com",
        "filter": "(objectClass=person)",
        "number_attributes": ["telephoneNumber"],
        "name_attributes": ["cn"],
    });
    let mirror = mirror_of(Dataset {
        tenants: vec![tenant(1), tenant(2)],
        directory_sources: vec![DirectorySource {
            id: 1,
            tenant_id: 1,
            name: "crm".into(),
            kind: SourceKind::Ldap,
            priority: 10,
            enabled: true,
            settings: settings.to_string().into(),
            secret: None,
            timeout_ms: 2_000,
            updated_at: 0,
        }],
        ..Dataset::default()
    });
    let options = LookupOptions {
        source_networks: SourceNetworks::parse(&["127.0.0.0/8"]).unwrap().shared(),
        ..LookupOptions::default()
    };
    let service = LookupService::new(mirror, None, options);
    let answer = service.lookup(1, "+15550100001").await.unwrap();
    assert_eq!(answer.name(), None);
    let failed = logs.starting("directory source failed");
    assert_eq!(failed.len(), 1, "{:?}", logs.lines());
    let line = &failed[0];
    // The capture writes a string field as the log does: Debug-quoted, so
    // the server's quote is escaped and its "fields" are the value's text.
    let quoted = format!("{:?}", format!("LDAP: search failed: rc=80 {FORGED}"));
    assert!(line.contains(&format!(" error={quoted}")), "{line}");
    assert!(line.contains(r#"x\" tenant=2 source_id=99"#), "{line}");
    assert!(!line.contains(r#"x" tenant=2"#), "{line}");
}

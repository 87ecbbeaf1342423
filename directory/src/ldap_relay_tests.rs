use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::*;
use crate::ldap_searches::Past;
use crate::ldap_wire::tests::{search_asked, search_done, search_entry};
use dialtone_sync::testing::logs::capture;

const FLOODED: &str = "LDAP server sent a search more results";
const CLOSED: &str = "LDAP connection closed; it dropped";

/// One connection whose server answers a search with more entries than
/// `bounds` pass and then hangs up; returns once the relay has ended.
async fn flooded_connection(source: SourceLabel, bounds: SearchBounds) {
    let (server, mut far) = tokio::io::duplex(64 * 1024);
    let theirs = spawn_relay(server, source, bounds).unwrap();
    theirs.set_nonblocking(true).unwrap();
    let mut theirs = tokio::net::UnixStream::from_std(theirs).unwrap();
    search_asked(&mut theirs, &mut far).await;
    for _ in 0..bounds.entries + 3 {
        far.write_all(&search_entry(10)).await.unwrap();
    }
    far.write_all(&search_done()).await.unwrap();
    drop(far);
    let mut all = Vec::new();
    timeout(Duration::from_secs(5), theirs.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    // The relay's task logs after it let go of ldap3's end.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

const BOUNDS: SearchBounds = SearchBounds {
    entries: 2,
    bytes: 1 << 20,
    past: Past::Drop,
};

/// A tenant's server that floods every connection it is given writes the
/// relay's lines no faster than one a second for that tenant, however
/// many connections it floods; each line says whose source it was, its
/// name quoted so that it cannot pose as another field.
#[tokio::test]
async fn a_flooding_server_writes_the_relays_lines_within_its_tenants_limit() {
    let logs = capture();
    let tenant = 3_000_001;
    let source = SourceLabel::new(tenant, 77, "crm tenant=1");
    let started = std::time::Instant::now();
    let connections = 20;
    for _ in 0..connections {
        flooded_connection(source.clone(), BOUNDS).await;
    }
    let seconds = started.elapsed().as_secs() as usize;
    let (flooded, closed) = (logs.starting(FLOODED), logs.starting(CLOSED));
    assert!(!flooded.is_empty(), "{:?}", logs.lines());
    let written = flooded.len() + closed.len();
    assert!(
        written <= 1 + seconds,
        "{written} lines for {connections} connections in {seconds} s"
    );
    let line = &flooded[0];
    assert!(line.contains(" tenant=3000001"), "{line}");
    assert!(line.contains(" source_id=77"), "{line}");
    assert!(line.contains(r#" source="crm tenant=1""#), "{line}");
    // Another tenant's server is not held back by this one's flood.
    let neighbour = SourceLabel::new(3_000_002, 78, "crm");
    flooded_connection(neighbour, BOUNDS).await;
    let theirs = logs.starting(FLOODED);
    assert!(
        theirs.iter().any(|l| l.contains(" tenant=3000002")),
        "{theirs:?}"
    );
}

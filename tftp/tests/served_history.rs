//! How many history lines fetches a phone repeats within a minute write:
//! a config file served with other bytes is a line of its own (the refetch
//! a resync asked for), but a directory's pages and searches, other bytes
//! each, are not: anyone who knows a MAC could page one into a row a
//! request.

mod common;

use common::*;
use dialtone_sync::store::{BootRecord, DirectoryEntryInput};
use dialtone_sync::{DirectoryNumber, Mac, Mutation};
use dialtone_tftp::{Protocol, Request};

const MAC: &str = "001565000001";

/// Each `(path, query)` fetched over HTTP in turn by one phone, as served
/// by a node with history on; the phone's lines once written.
async fn lines_of(f: &Fixture, fetches: &[(&str, Option<&str>)]) -> Vec<BootRecord> {
    let (provisioner, writer) = recording(f);
    for (path, query) in fetches {
        provisioner
            .provision(&Request {
                path,
                user_agent: Some("Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01"),
                remote: Some("192.0.2.10".parse().unwrap()),
                protocol: Protocol::Http,
                query: *query,
                auth: None,
            })
            .unwrap();
    }
    stored(writer).await;
    let mac: Mac = MAC.parse().unwrap();
    f.store.recent_boots(&mac, None, 100).await.unwrap()
}

#[tokio::test]
async fn directory_pages_and_searches_are_one_line_a_minute() {
    let f = Fixture::new().await;
    let entries = (0..40)
        .map(|i| {
            Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
                tenant: "acme".into(),
                external_id: format!("e{i:02}"),
                name: format!("Person {i:02}"),
                company: None,
                numbers: vec![DirectoryNumber {
                    number: format!("+1 (555) 010-{:04}", 1000 + i).into(),
                    kind: "work".into(),
                }],
            })
        })
        .collect::<Vec<_>>();
    f.write(&entries).await;
    let directory = format!("{MAC}-directory.xml");
    let searches: Vec<String> = (0..20).map(|i| format!("q=Person+{i:02}")).collect();
    let fetches: Vec<(&str, Option<&str>)> = searches
        .iter()
        .map(|q| (directory.as_str(), Some(q.as_str())))
        .collect();
    let lines = lines_of(&f, &fetches).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
}

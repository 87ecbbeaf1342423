//! The Cisco directory's search term: decoded by form-urlencoded rules
//! however the phone spelled it, and carried to the next page by its
//! paging links unchanged, whatever characters it holds.

use std::sync::Arc;

use dialtone_sync::{DirectoryEntry, DirectoryNumber, Family};
use dialtone_tftp::phonebook::{render, sorted, Query};

fn entry(id: i64, name: &str) -> Arc<DirectoryEntry> {
    Arc::new(DirectoryEntry {
        id,
        tenant_id: 1,
        external_id: None,
        name: name.into(),
        company: None,
        numbers: vec![DirectoryNumber {
            number: format!("+1555010{id:04}").into(),
            kind: "work".into(),
        }],
        updated_at: 1,
    })
}

fn search(query: &str) -> Option<String> {
    Query::parse(Some(query)).search
}

fn found(query: &str) -> usize {
    let entries = vec![
        entry(1, "Alice Example"),
        entry(2, "Alice Example Jr"),
        entry(3, "Bob Example"),
    ];
    sorted(entries, search(query).as_deref()).len()
}

#[test]
fn percent_escapes_and_plus_signs_decode_alike() {
    assert_eq!(found("q=Alice+Example"), 2);
    assert_eq!(found("q=Alice%20Example"), 2);
    assert_eq!(found("q=%41lice"), 2);
    assert_eq!(found("q=%61LICE%20%45xample"), 2);
    assert_eq!(search("q=%41lice%2bBob").as_deref(), Some("alice+bob"));
    // A `%` without two hex digits is itself, as browsers send it.
    assert_eq!(search("q=100%").as_deref(), Some("100%"));
    assert_eq!(search("q=%+5x").as_deref(), Some("% 5x"));
    assert_eq!(search("q=%zz").as_deref(), Some("%zz"));
}

#[test]
fn the_term_is_cut_after_decoding_and_bad_utf8_finds_nothing() {
    let long = format!("q={}", "%41".repeat(100));
    assert_eq!(search(&long).map(|t| t.chars().count()), Some(64));
    // Decoded control characters are dropped like raw ones.
    assert_eq!(search("q=al%0Aice").as_deref(), Some("alice"));
    // Bytes that are not UTF-8 read as U+FFFD, in no name.
    assert_eq!(search("q=%FFalice").as_deref(), Some("\u{FFFD}alice"));
    assert_eq!(found("q=%FFalice"), 0);
}

/// The URL of the soft key named `name` in a Cisco directory.
fn soft_key(xml: &str, name: &str) -> Option<String> {
    let document = roxmltree::Document::parse(xml).unwrap();
    let item = document.descendants().find(|n| {
        n.has_tag_name("SoftKeyItem")
            && n.children()
                .any(|c| c.has_tag_name("Name") && c.text() == Some(name))
    })?;
    let url = item.children().find(|c| c.has_tag_name("URL"))?;
    url.text().map(str::to_string)
}

fn cisco_page(query: &Query) -> String {
    let entries: Vec<_> = (1..=80).map(|n| entry(n, &format!("Person {n}"))).collect();
    render(
        Family::CiscoSpa,
        "Acme",
        &entries,
        query,
        "http://prov.example.net/x",
        1 << 20,
    )
    .unwrap()
    .text
}

#[test]
fn paging_links_carry_the_term_unchanged() {
    for term in ["a&b+c", "r&d #2 100%", "x=y&page=9", "münchen ~ok"] {
        let query = Query {
            page: 1,
            search: Some(term.to_string()),
        };
        let xml = cisco_page(&query);
        for (key, page) in [("Next", 2), ("Prev", 0)] {
            let url = soft_key(&xml, key).unwrap_or_else(|| panic!("no {key} in {xml}"));
            let (_, query_string) = url.split_once('?').unwrap();
            assert_eq!(
                Query::parse(Some(query_string)),
                Query {
                    page,
                    search: Some(term.to_string()),
                },
                "{key} link {url}"
            );
        }
    }
}

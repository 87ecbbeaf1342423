//! What the directory gives phones to dial and to file a contact under:
//! numbers without their visual separators (phones dial the text as it
//! is), Poly contacts unique by number, and "Last, First" names split at
//! the comma.

use std::sync::Arc;

use dialtone_sync::{DirectoryEntry, DirectoryNumber, Family};
use dialtone_tftp::phonebook::{render, Query};

fn entry(id: i64, name: &str, numbers: &[&str]) -> Arc<DirectoryEntry> {
    Arc::new(DirectoryEntry {
        id,
        tenant_id: 1,
        external_id: None,
        name: name.into(),
        company: None,
        numbers: numbers
            .iter()
            .map(|n| DirectoryNumber {
                number: (*n).into(),
                kind: "work".into(),
            })
            .collect(),
        updated_at: 1,
    })
}

fn document(family: Family, entries: &[Arc<DirectoryEntry>]) -> String {
    render(
        family,
        "Acme",
        entries,
        &Query::default(),
        "http://prov.example.net/x",
        1 << 20,
    )
    .unwrap()
    .text
}

/// The text of every element named `tag`, in order.
fn texts(xml: &str, tag: &str) -> Vec<String> {
    roxmltree::Document::parse(xml)
        .unwrap()
        .descendants()
        .filter(|n| n.has_tag_name(tag))
        .map(|n| n.text().unwrap_or_default().to_string())
        .collect()
}

/// (stored, dialed)
const NUMBERS: &[(&str, &str)] = &[
    ("+1 (555) 010-1234", "+15550101234"),
    ("555.010.1299", "5550101299"),
    ("0049 30/1234-5", "00493012345"),
    ("*72 555-0100#", "*725550100#"),
    ("101", "101"),
    // Not a plain number once the separators are gone: kept as stored.
    ("555-0100 ext. 12", "555-0100 ext. 12"),
    ("sip:ann@example.net", "sip:ann@example.net"),
    ("+", "+"),
    ("- -", "- -"),
];

#[test]
fn every_format_dials_the_number_without_its_separators() {
    let stored: Vec<&str> = NUMBERS.iter().map(|(stored, _)| *stored).collect();
    let entries = [entry(1, "Ann Example", &stored)];
    let want: Vec<&str> = NUMBERS.iter().map(|(_, dialed)| *dialed).collect();
    for (family, tag) in [
        (Family::Yealink, "Telephone"),
        (Family::Snom, "Telephone"),
        (Family::CiscoSep, "Telephone"),
        (Family::Poly, "ct"),
        (Family::Grandstream, "phonenumber"),
    ] {
        let text = document(family, &entries);
        assert_eq!(texts(&text, tag), want, "{family}\n{text}");
    }
}

#[test]
fn poly_keeps_the_first_contact_of_a_dialed_number() {
    let entries = [
        entry(1, "Ann Example", &["+1 (555) 010-1234", "101"]),
        entry(2, "Bob Example", &["+1.555.010.1234", "102"]),
        entry(3, "Cy Example", &["101"]),
    ];
    let text = document(Family::Poly, &entries);
    assert_eq!(texts(&text, "ct"), ["+15550101234", "101", "102"], "{text}");
    assert_eq!(texts(&text, "fn"), ["Ann", "Ann", "Bob"], "{text}");
    // Other formats are lists of rows, not keyed: every row stays.
    let text = document(Family::Yealink, &entries);
    assert_eq!(texts(&text, "Telephone").len(), 5, "{text}");
}

#[test]
fn a_comma_puts_the_last_name_first() {
    let entries = [
        entry(1, "Smith, John", &["101"]),
        entry(2, "Mary Ann Jones", &["102"]),
        entry(3, " Doe ,Jane Q ", &["103"]),
        entry(4, "Reception", &["104"]),
    ];
    let poly = document(Family::Poly, &entries);
    assert_eq!(
        texts(&poly, "fn"),
        ["John", "Mary Ann", "Jane Q", "Reception"],
        "{poly}"
    );
    assert_eq!(texts(&poly, "ln"), ["Smith", "Jones", "Doe", ""], "{poly}");
    let grandstream = document(Family::Grandstream, &entries);
    assert_eq!(
        texts(&grandstream, "FirstName"),
        ["John", "Mary Ann", "Jane Q", "Reception"]
    );
    assert_eq!(
        texts(&grandstream, "LastName"),
        ["Smith", "Jones", "Doe", ""]
    );
}

//! The tenant's directory served to its phones, in each family's own XML:
//! Yealink `YealinkIPPhoneDirectory`, Cisco `CiscoIPPhoneDirectory` (with
//! paging and search), Poly `<mac>-directory.xml`, Snom
//! `SnomIPPhoneDirectory`, Grandstream `AddressBook`. Built straight from
//! the mirror on each fetch (directories change often and are cheap to
//! write), sorted by name so the bytes only change when the data does.

use std::fmt::Write;

use dialtone_sync::{DirectoryEntry, Family};

/// Cisco phones show at most 32 entries per page.
pub const CISCO_PAGE: usize = 32;

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Options a phone's request can carry (HTTP query string).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub page: usize,
    pub search: Option<String>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "page" => q.page = v.parse().unwrap_or(0).min(10_000),
                "q" => {
                    let term: String = v
                        .replace('+', " ")
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect();
                    q.search = Some(term.trim().to_lowercase()).filter(|t| !t.is_empty());
                }
                _ => {}
            }
        }
        q
    }
}

/// Entries sorted by name (then id), each with its numbers in stored order.
pub fn sorted(
    mut entries: Vec<std::sync::Arc<DirectoryEntry>>,
    search: Option<&str>,
) -> Vec<std::sync::Arc<DirectoryEntry>> {
    if let Some(term) = search {
        entries.retain(|e| {
            e.name.to_lowercase().contains(term)
                || e.company
                    .as_deref()
                    .is_some_and(|c| c.to_lowercase().contains(term))
        });
    }
    entries.sort_by(|a, b| {
        a.name
            .to_lowercase()
            .cmp(&b.name.to_lowercase())
            .then(a.id.cmp(&b.id))
    });
    entries
}

fn split_name(name: &str) -> (&str, &str) {
    match name.trim().rsplit_once(' ') {
        Some((first, last)) => (first.trim(), last.trim()),
        None => (name.trim(), ""),
    }
}

/// Renders the directory for `family`; `None` for families without a
/// directory format here (the request is then "not found").
pub fn render(
    family: Family,
    title: &str,
    entries: &[std::sync::Arc<DirectoryEntry>],
    query: &Query,
    self_url: &str,
) -> Option<String> {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    match family {
        Family::Yealink | Family::Snom => {
            let root = if family == Family::Yealink {
                "YealinkIPPhoneDirectory"
            } else {
                "SnomIPPhoneDirectory"
            };
            let _ = writeln!(x, "<{root}>\n  <Title>{}</Title>", esc(title));
            for e in entries {
                for n in &e.numbers {
                    let _ = writeln!(
                        x,
                        "  <DirectoryEntry>\n    <Name>{}</Name>\n    <Telephone>{}</Telephone>\n  </DirectoryEntry>",
                        esc(&e.name),
                        esc(&n.number)
                    );
                }
            }
            let _ = writeln!(x, "</{root}>");
        }
        Family::CiscoSpa | Family::CiscoMpp | Family::CiscoSep => {
            let rows: Vec<(&str, &str)> = entries
                .iter()
                .flat_map(|e| e.numbers.iter().map(move |n| (&*e.name, &*n.number)))
                .collect();
            let pages = rows.len().div_ceil(CISCO_PAGE).max(1);
            let page = query.page.min(pages - 1);
            let _ = writeln!(
                x,
                "<CiscoIPPhoneDirectory>\n  <Title>{}</Title>\n  <Prompt>{}</Prompt>",
                esc(title),
                esc(&format!("Page {} of {}", page + 1, pages))
            );
            for (name, number) in rows.iter().skip(page * CISCO_PAGE).take(CISCO_PAGE) {
                let _ = writeln!(
                    x,
                    "  <DirectoryEntry>\n    <Name>{}</Name>\n    <Telephone>{}</Telephone>\n  </DirectoryEntry>",
                    esc(name),
                    esc(number)
                );
            }
            let search = query
                .search
                .as_deref()
                .map(|s| format!("&q={}", s.replace(' ', "+")))
                .unwrap_or_default();
            let mut position = 1;
            let mut key = |x: &mut String, name: &str, url: &str| {
                let _ = writeln!(
                    x,
                    "  <SoftKeyItem>\n    <Name>{}</Name>\n    <URL>{}</URL>\n    <Position>{position}</Position>\n  </SoftKeyItem>",
                    esc(name),
                    esc(url)
                );
                position += 1;
            };
            key(&mut x, "Dial", "SoftKey:Dial");
            if page > 0 {
                key(
                    &mut x,
                    "Prev",
                    &format!("{self_url}?page={}{search}", page - 1),
                );
            }
            if page + 1 < pages {
                key(
                    &mut x,
                    "Next",
                    &format!("{self_url}?page={}{search}", page + 1),
                );
            }
            key(&mut x, "Exit", "SoftKey:Exit");
            let _ = writeln!(x, "</CiscoIPPhoneDirectory>");
        }
        Family::Poly => {
            let _ = writeln!(x, "<directory>\n  <item_list>");
            for e in entries {
                let (first, last) = split_name(&e.name);
                for n in &e.numbers {
                    let _ = writeln!(
                        x,
                        "    <item>\n      <fn>{}</fn>\n      <ln>{}</ln>\n      <ct>{}</ct>\n    </item>",
                        esc(first),
                        esc(last),
                        esc(&n.number)
                    );
                }
            }
            let _ = writeln!(x, "  </item_list>\n</directory>");
        }
        Family::Grandstream => {
            let _ = writeln!(x, "<AddressBook>");
            for e in entries {
                let (first, last) = split_name(&e.name);
                let _ = writeln!(
                    x,
                    "  <Contact>\n    <LastName>{}</LastName>\n    <FirstName>{}</FirstName>",
                    esc(last),
                    esc(first)
                );
                for n in &e.numbers {
                    let _ = writeln!(
                        x,
                        "    <Phone type=\"{}\">\n      <phonenumber>{}</phonenumber>\n      <accountindex>1</accountindex>\n    </Phone>",
                        esc(&n.kind),
                        esc(&n.number)
                    );
                }
                let _ = writeln!(x, "  </Contact>");
            }
            let _ = writeln!(x, "</AddressBook>");
        }
        Family::Fanvil => return None,
    }
    Some(x)
}

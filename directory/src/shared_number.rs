//! What a lookup shows for a number several directory entries list.
//!
//! A CRM or address-book export puts a company's main line on every one of
//! its contacts, a household shares one landline, and a person is listed
//! twice. Showing whichever entry sorts first names a caller after someone
//! who did not call: the switchboard rang as its first contact in name
//! order. One name shared by all is shown; otherwise a company shared by
//! all (the switchboard); otherwise nothing from this directory, as for a
//! match by last digits that two entries share, since showing the wrong
//! name is worse than showing none and a later source may know better.
//! An entry without a company stands for its own name there: a CRM's
//! account row ("Acme Inc", no company) sits on the main line beside the
//! contacts whose company it is. LDAP entries carry no company here, so
//! for them this is the name rule alone.

/// The most entries under one number a lookup reads to decide: a number
/// listed more often is judged by its first this many in name order.
/// Disagreement ends the read early; agreement reads them all, on the
/// lookup's own worker, so this bounds the one case a tenant's own data
/// can make long (about a tenth of a millisecond).
pub const MOST_READ: usize = 1_000;

/// The name to show for the entries listed under one number, given as
/// (name, company) in name order: the name they all share, or else the
/// company they all share, or `None`.
pub fn shown<'a>(entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Option<&'a str> {
    let as_company = |(name, company): (&'a str, Option<&'a str>)| {
        company
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or(name)
    };
    let mut entries = entries.into_iter().take(MOST_READ);
    let first = entries.next()?;
    let (name, mut company) = (first.0, Some(as_company(first)));
    let mut one_name = true;
    for other in entries {
        one_name &= same_text(name, other.0);
        if company.is_some_and(|c| !same_text(c, as_company(other))) {
            company = None;
        }
        if !one_name && company.is_none() {
            return None;
        }
    }
    if one_name {
        Some(name)
    } else {
        company
    }
}

/// Equal word for word, whatever the case and the punctuation between:
/// one person or company typed twice ("Acme, Inc." and "ACME Inc"), but
/// "Al Ford" is not "Alford". Texts of no word are equal only as written.
/// Not Unicode-normalized: an accent typed as a combining mark differs
/// from the accented letter.
fn same_text(a: &str, b: &str) -> bool {
    fn between_words(c: char) -> bool {
        // Punctuation and symbols of Latin-1, general punctuation,
        // letterlike symbols (™), CJK and fullwidth forms; not the joiners
        // that belong inside a word, nor letters those blocks hold (º).
        const BLOCKS: [(char, char); 5] = [
            ('\u{a1}', '\u{bf}'),
            ('\u{2000}', '\u{206f}'),
            ('\u{2100}', '\u{214f}'),
            ('\u{3000}', '\u{303f}'),
            ('\u{ff01}', '\u{ff65}'),
        ];
        let joiner = matches!(c, '\u{200c}' | '\u{200d}' | '\u{2060}');
        c.is_whitespace()
            || c.is_ascii_punctuation()
            || (!joiner
                && !c.is_alphanumeric()
                && BLOCKS.iter().any(|(from, to)| (*from..=*to).contains(&c)))
    }
    fn folded(s: &str) -> impl Iterator<Item = char> + '_ {
        s.split(between_words)
            .filter(|word| !word.is_empty())
            .enumerate()
            .flat_map(|(i, word)| {
                (i > 0)
                    .then_some(' ')
                    .into_iter()
                    .chain(word.chars().flat_map(char::to_lowercase))
            })
    }
    if folded(a).next().is_none() || folded(b).next().is_none() {
        return a.trim() == b.trim();
    }
    folded(a).eq(folded(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_is_shown_as_it_is() {
        assert_eq!(shown([("Alice", Some("Acme"))]), Some("Alice"));
        assert_eq!(shown([]), None);
    }

    #[test]
    fn a_name_all_share_is_shown_whatever_their_companies() {
        let twice = [("Alice Smith", Some("Acme")), (" alice smith", None)];
        assert_eq!(shown(twice), Some("Alice Smith"));
        let accented = [("Zoë", None), ("ZOË", None)];
        assert_eq!(shown(accented), Some("Zoë"));
        let punctuated = [("O’Neil, Pat", None), ("o'neil pat", None)];
        assert_eq!(shown(punctuated), Some("O’Neil, Pat"));
        let marked = [
            ("Acme® · Shop™", None),
            ("ACME SHOP", None),
            ("Acme，Shop", None),
        ];
        assert_eq!(shown(marked), Some("Acme® · Shop™"));
        let joined = [("a\u{200d}b", None), ("a b", None)];
        assert_eq!(shown(joined), None);
    }

    #[test]
    fn a_switchboard_is_shown_as_its_company() {
        let contacts = [
            ("Aaron Abbott", Some("Acme Inc")),
            ("Bea Brown", Some("ACME, INC. ")),
            ("Cy Cole", Some("Acme Inc")),
        ];
        assert_eq!(shown(contacts), Some("Acme Inc"));
        // The account's own row, first by name, without a company.
        let with_account = [
            ("Acme Inc.", None),
            ("Bea Brown", Some("Acme Inc")),
            ("Cy Cole", Some(" acme inc")),
        ];
        assert_eq!(shown(with_account), Some("Acme Inc."));
        let account_later = [("Aaron Abbott", Some("Acme Inc")), ("Acme Inc", Some(""))];
        assert_eq!(shown(account_later), Some("Acme Inc"));
    }

    #[test]
    fn entries_of_different_names_and_companies_show_nothing() {
        let household = [("John Smith", None), ("Jane Smith", None)];
        assert_eq!(shown(household), None);
        let one_without = [("Aaron", Some("Acme")), ("Bea", None)];
        assert_eq!(shown(one_without), None);
        let blank = [("Aaron", Some(" ")), ("Bea", Some(" "))];
        assert_eq!(shown(blank), None);
        let two_companies = [("Aaron", Some("Acme")), ("Bea", Some("Globex"))];
        assert_eq!(shown(two_companies), None);
        let no_letters = [("☎", None), ("★", None)];
        assert_eq!(shown(no_letters), None);
        let two_people = [("Al Ford", None), ("Alford", None)];
        assert_eq!(shown(two_people), None);
        let junior = [("John Smith", None), ("John Smith Jr", None)];
        assert_eq!(shown(junior), None);
    }

    #[test]
    fn disagreement_ends_the_read_and_agreement_is_bounded() {
        let mut read = 0;
        let disagree = (0..1_000_000).map(|i| {
            read += 1;
            (if i == 0 { "Aaron" } else { "Bea" }, None)
        });
        assert_eq!(shown(disagree), None);
        assert_eq!(read, 2);
        let mut read = 0;
        let agree = std::iter::repeat_with(|| {
            read += 1;
            ("Same", None)
        })
        .take(1_000_000);
        assert_eq!(shown(agree), Some("Same"));
        assert_eq!(read, MOST_READ);
    }
}

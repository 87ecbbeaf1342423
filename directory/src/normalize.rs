//! Phone numbers to E.164, from whatever a PBX sends or a directory holds:
//! digits only (mod_cidlookup), `+E.164`, national with a trunk prefix,
//! international prefixes `00` and `011`, punctuation, extensions.
//! The tenant's default region reads national numbers.
//!
//! libphonenumber's metadata (via `phonenumber`) decides first. Numbers it
//! calls invalid but whose length fits the country (fictional ranges,
//! brand-new ranges the metadata does not know yet) are still accepted:
//! a directory lookup must match what a directory holds, not judge it.

use std::sync::Once;

use phonenumber::country::Id;
use phonenumber::{Mode, ParseError, PhoneNumber};
use regex_cache::RegexCache;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("empty number")]
    Empty,
    #[error("{0:?} is not a phone number")]
    NotANumber(String),
    #[error("unknown region {0:?}")]
    Region(String),
    /// The input's length in bytes, and the bound it passed.
    #[error("number too long ({0} bytes, at most {1})")]
    TooLong(usize, usize),
}

/// The longest number a lookup accepts, in bytes, once a SIP or tel URI's
/// scheme, host and parameters are off. E.164 has at most 15 digits; the
/// most verbose spelling a PBX or person sends, with an international
/// prefix, a bracketed trunk prefix, separators between digit groups and
/// an extension (`0011 (0) 61 2 5550 1234 ext. 12345`, 35 bytes), fits
/// with room to spare. `clean` ignores whatever follows an extension
/// marker, so without this bound any amount of text would read as a
/// number and become a key of the lookup service's memo.
pub const MAX_LOOKUP_LEN: usize = 64;

/// The longest lookup input, in bytes, as sent. A caller's whole URI is
/// longer than its number: a carrier's SBC host and `;user=phone`
/// (`sip:+15550101234@sbc1.carrier-interconnect.example.net;user=phone`
/// is 65 bytes), or a From header's `<…>;tag=…`. The raw input is the
/// memo's key, so it is bounded too, at four numbers' worth.
pub const MAX_LOOKUP_INPUT_LEN: usize = 256;

/// Refuses lookup input longer than any number, before anything keeps it:
/// the whole input past [`MAX_LOOKUP_INPUT_LEN`], the number in it (a
/// URI's user part, extension included) past [`MAX_LOOKUP_LEN`].
/// Directory values are not checked here: they are the tenant's data,
/// bounded where they are read.
pub fn check_lookup_len(input: &str) -> Result<(), NormalizeError> {
    if input.len() > MAX_LOOKUP_INPUT_LEN {
        return Err(NormalizeError::TooLong(input.len(), MAX_LOOKUP_INPUT_LEN));
    }
    let number = uri_user(input.trim());
    if number.len() > MAX_LOOKUP_LEN {
        return Err(NormalizeError::TooLong(number.len(), MAX_LOOKUP_LEN));
    }
    Ok(())
}

/// The digits and whether the number began with `+`, with any extension
/// cut off. Letters other than an extension marker make it not a number.
fn clean(input: &str) -> Result<(bool, String), NormalizeError> {
    let trimmed = uri_user(input.trim());
    if trimmed.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let main = main_part(trimmed);
    let not_a_number = || NormalizeError::NotANumber(input.chars().take(40).collect());
    let mut digits = String::with_capacity(main.len());
    let mut plus = false;
    // "+44 (0)1632 …": the bracketed trunk prefix is not dialled after a country code.
    let main = main.trim().replace("(0)", "");
    for (i, c) in main.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            // Past the first character a `+` is a space as form encoders
            // write one (`%2B1+555+010+1234`): the lookup query keeps `+`.
            ' ' | '+' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return Err(not_a_number()),
        }
    }
    if digits.len() < 3 || digits.len() > 17 {
        return Err(not_a_number());
    }
    Ok((plus, digits))
}

/// A number without its extension or parameters (`ext`, `x`, `;`, `,`,
/// `#` and what follows).
fn main_part(number: &str) -> &str {
    let lower = number.to_ascii_lowercase();
    ["ext", "x", ";", ",", "#"]
        .iter()
        .filter_map(|marker| lower.find(marker))
        .min()
        .map_or(number, |at| &number[..at])
}

/// The user part of a SIP or tel URI (`sip:+15550101234@pbx;user=phone`,
/// `<tel:+15550101234>`, a From header's `<sip:…@pbx>;tag=…`), which some
/// PBXes send as the caller's number; anything else as it is.
fn uri_user(input: &str) -> &str {
    let bare = input
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .map_or(input, |(uri, _header_params)| uri);
    for scheme in ["sip:", "sips:", "tel:"] {
        let is_scheme = bare
            .get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme));
        if is_scheme {
            let rest = &bare[scheme.len()..];
            return rest.split(['@', ';', '?']).next().unwrap_or(rest).trim();
        }
    }
    input
}

/// Patterns phonenumber's pattern cache holds: more than its metadata has
/// (2,040 distinct in 0.3.10; `every_metadata_pattern_fits_the_cache`
/// counts them), so none is ever evicted.
const PATTERN_CACHE: usize = 4_096;

/// phonenumber compiles its metadata's regular expressions on first use
/// into one process-wide LRU of 100, behind one mutex that every parse,
/// check and format takes for each pattern it matches (and compiles).
/// Numbers from more countries than 100 patterns cover made it compile
/// again on nearly every call: 0.6–1.9 ms a number instead of 10–40 µs,
/// all of it inside that mutex, so one tenant's directory or lookups
/// spread over many countries slowed every tenant's lookups. Held whole,
/// each pattern is compiled once per process, for at most ~180 MB if
/// every country's numbers are seen (measured with all 2,040 compiled).
fn whole_pattern_cache() {
    static SIZED: Once = Once::new();
    SIZED.call_once(|| {
        let cache = phonenumber::metadata::DATABASE.cache();
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        *cache = RegexCache::new(PATTERN_CACHE);
    });
}

/// `phonenumber::parse`, the pattern cache sized first. Every use of
/// phonenumber starts with a parse, so all of them go through here.
pub(crate) fn parse_number(region: Option<Id>, text: &str) -> Result<PhoneNumber, ParseError> {
    whole_pattern_cache();
    phonenumber::parse(region, text)
}

fn e164(number: &PhoneNumber) -> String {
    number.format().mode(Mode::E164).to_string()
}

/// Valid per the metadata, or at least of a length the country uses
/// (fictional and brand-new ranges are "invalid" yet real in directories).
fn acceptable(number: &PhoneNumber) -> bool {
    if phonenumber::is_valid(number) {
        return true;
    }
    let national = number.national().to_string().len();
    let database = &*phonenumber::metadata::DATABASE;
    database
        .by_code(&number.code().value())
        .into_iter()
        .flatten()
        .any(|meta| {
            let d = meta.descriptors();
            [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.voip(),
                d.personal_number(),
                d.uan(),
            ]
            .into_iter()
            .flatten()
            .any(|desc| desc.possible_length().contains(&(national as u16)))
        })
}

/// `digits` past `region`'s own international prefix, if they start with
/// it: the one its metadata prefers, or its only one. Not a pattern's
/// longest match: AU's `001[14-689]` (carriers' prefixes) and HK's
/// `00(?:30|5[09]|[126-9]?)` would take the first digit of the country
/// code from `00 1 646 …`.
fn own_international_prefix(region: Id, digits: &str) -> Option<&str> {
    let meta = phonenumber::metadata::DATABASE.by_id(region.as_ref())?;
    // `8~10` (RU and its neighbours) is dialled 8, a tone, then 10.
    let literal = |p: &str| {
        let p = p.replace('~', "");
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).then_some(p)
    };
    let prefix = meta
        .preferred_international_prefix()
        .and_then(literal)
        .or_else(|| literal(meta.international_prefix()?.as_str()))?;
    digits.strip_prefix(prefix.as_str())
}

/// `+` and 15 digits.
const MAX_E164_LEN: usize = 16;

/// Normalizes `input` to E.164 (`+15550101234`), reading national numbers
/// in `region` (ISO 3166 alpha-2, e.g. `US`, `GB`, `AU`).
pub fn normalize(input: &str, region: &str) -> Result<String, NormalizeError> {
    let region_id: Id = region
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| NormalizeError::Region(region.to_string()))?;
    let (plus, digits) = clean(input)?;
    // Readings in order of how explicit they are; the first one whose
    // country agrees with its length wins.
    let mut candidates: Vec<(Option<Id>, String)> = Vec::with_capacity(4);
    if plus {
        candidates.push((None, format!("+{digits}")));
    } else {
        // The region's own international prefix (US 011, GB 00, JP 010, AU
        // 0011, RU 810) first, taken off here rather than by the parser,
        // which reads `011 44 1632 …` in the US as +44 632 ….
        if let Some(rest) = own_international_prefix(region_id, &digits) {
            candidates.push((None, format!("+{rest}")));
        }
        // Another region's prefix: 0011 (AU), 011 (NANP), 00 (most
        // others), as a PBX abroad or a carrier writes it.
        let other = ["0011", "011", "00"]
            .iter()
            .find_map(|idd| digits.strip_prefix(idd))
            .map(|rest| (None, format!("+{rest}")));
        let national = (Some(region_id), digits.clone());
        // `00` begins no national number, whatever the length rules allow
        // (`00 1 555 …` in JP, or AU's carriers' `0015…`); `011` does: in
        // GB `0114` is Sheffield, in JP and IT `011` is Sapporo and Turin.
        if digits.starts_with("00") {
            candidates.extend(other);
            candidates.push(national);
        } else {
            candidates.push(national);
            candidates.extend(other);
        }
        // Digits only, country code included (what mod_cidlookup sends).
        candidates.push((None, format!("+{digits}")));
    }
    candidates
        .into_iter()
        .filter_map(|(region, text)| {
            let number = parse_number(region, &text).ok().filter(acceptable)?;
            let e164 = e164(&number);
            // A reading without a region that formats to its own text reads
            // back as itself: the check below would parse that text again.
            let reads_back = region.is_none() && e164 == text;
            Some((e164, reads_back))
        })
        // E.164 allows at most 15 digits; some countries' metadata allows
        // national lengths that would exceed it after the country code.
        .filter(|(e, _)| e.len() <= MAX_E164_LEN)
        // Odd inputs ("0006626612" in DE) can format to an E.164 string that
        // reads back as another number; such readings are not numbers.
        .find(|(e, reads_back)| *reads_back || parse_number(None, e).is_ok_and(|n| e164(&n) == *e))
        .map(|(e, _)| e)
        .ok_or_else(|| NormalizeError::NotANumber(input.chars().take(40).collect()))
}

/// Digits (country code included) from which an E.164 reading is taken
/// to be a whole number. A shorter one is a local number read without its
/// area code (`010-1234` reads as `+10101234` in a US tenant): no whole
/// number anywhere has fewer, bar a few small territories'.
pub const WHOLE_E164_DIGITS: usize = 10;

/// Whether an E.164 reading is a whole number (`WHOLE_E164_DIGITS`).
pub fn is_whole(e164: &str) -> bool {
    e164.bytes().filter(u8::is_ascii_digit).count() >= WHOLE_E164_DIGITS
}

/// The last `len` digits of a number's main part (its URI's user part,
/// without an extension), if it has that many: the key of the match by
/// last digits.
pub fn suffix(number: &str, len: usize) -> Option<String> {
    let digits: String = main_part(uri_user(number.trim()))
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    (digits.len() >= len).then(|| digits[digits.len() - len..].to_string())
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;

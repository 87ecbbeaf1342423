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

use uri::{global_phone_context, uri_user, uri_user_part};

#[path = "normalize_uri.rs"]
mod uri;

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

/// A number's digits as [`clean`] reads them.
struct Cleaned {
    /// It began with `+`, or its URI gave a global `phone-context`.
    plus: bool,
    /// A bracketed `(0)` left out.
    digits: String,
    /// The same with that `0` kept, when there was one.
    zero_kept: Option<String>,
}

/// The digits and whether the number began with `+`, with any extension
/// cut off. Letters other than an extension marker make it not a number.
fn clean(input: &str) -> Result<Cleaned, NormalizeError> {
    let input = input.trim();
    let trimmed = uri_user(input);
    if trimmed.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let main = main_part(trimmed).trim();
    let not_a_number = || NormalizeError::NotANumber(input.chars().take(40).collect());
    // "+44 (0)1632 …": the bracketed trunk prefix is not dialled after a
    // country code. In Italy, San Marino and the Vatican it is part of
    // the number (+39 06 …), so a reading with it kept is tried as well.
    let (plus, mut digits) = digits_of(&main.replace("(0)", "")).ok_or_else(not_a_number)?;
    let mut zero_kept = main
        .contains("(0)")
        .then(|| digits_of(&main.replace("(0)", "0")))
        .flatten()
        .map(|(_, kept)| kept);
    // RFC 3966 5.1.5: a local number's digits follow its context's.
    let context = uri_user_part(input).and_then(global_phone_context);
    let plus = match context {
        Some(context) if !plus => {
            digits.insert_str(0, &context);
            if let Some(kept) = &mut zero_kept {
                kept.insert_str(0, &context);
            }
            true
        }
        _ => plus,
    };
    let fits = |d: &String| (3..=17).contains(&d.len());
    if !fits(&digits) {
        return Err(not_a_number());
    }
    Ok(Cleaned {
        plus,
        digits,
        zero_kept: zero_kept.filter(fits),
    })
}

/// The digits of a number's main part and whether it began with `+`;
/// `None` when something other than a separator is among them.
fn digits_of(main: &str) -> Option<(bool, String)> {
    let mut digits = String::with_capacity(main.len());
    let mut plus = false;
    for (i, c) in main.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            // Past the first character a `+` is a space as form encoders
            // write one (`%2B1+555+010+1234`): the lookup query keeps `+`.
            ' ' | '+' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            // What word processors and typography put where a dash or a
            // space was typed (Outlook's en dash, French U+202F): refused,
            // a foreign number so spelled was read as the home country's
            // last seven digits, and named unrelated callers.
            '\u{2010}'..='\u{2015}'
            | '\u{2212}'
            | '\u{2000}'..='\u{200a}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}' => {}
            _ => return None,
        }
    }
    Some((plus, digits))
}

/// A number without its extension or parameters (`ext`, `x`, `;`, `,`,
/// `#` and what follows): what a lookup matches on.
pub fn main_part(number: &str) -> &str {
    let lower = number.to_ascii_lowercase();
    ["ext", "x", ";", ",", "#"]
        .iter()
        .filter_map(|marker| lower.find(marker))
        .min()
        .map_or(number, |at| &number[..at])
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

fn e164_of(number: &PhoneNumber) -> String {
    number.format().mode(Mode::E164).to_string()
}

/// The national lengths `meta`'s numbers have, by the kinds of number
/// a directory holds (its general description lists none).
fn lengths(meta: &phonenumber::Metadata) -> impl Iterator<Item = u16> + '_ {
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
    .flat_map(|desc| desc.possible_length().iter().copied())
}

/// Of a length the country uses: fictional and brand-new ranges are
/// "invalid" yet real in directories.
fn fits_a_length(number: &PhoneNumber) -> bool {
    let national = number.national().to_string().len() as u16;
    phonenumber::metadata::DATABASE
        .by_code(&number.code().value())
        .into_iter()
        .flatten()
        .any(|meta| lengths(meta).any(|len| len == national))
}

/// Whether `number`, read as a national number of `region`, has the one
/// length every fixed or mobile line there has (ten digits in the NANP):
/// its length says it is the region's as surely as validity would, and a
/// range the metadata does not know yet (`322 719 2670` in the US) stays
/// the region's rather than becoming the foreign number its digits spell.
fn the_regions_one_length(region: Id, number: &PhoneNumber) -> bool {
    let Some(meta) = phonenumber::metadata::DATABASE.by_id(region.as_ref()) else {
        return false;
    };
    let national = number.national().to_string().len() as u16;
    let d = meta.descriptors();
    meta.country_code() == number.code().value()
        && [d.fixed_line(), d.mobile()]
            .into_iter()
            .flatten()
            .all(|desc| desc.possible_length() == [national])
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
    let cleaned = clean(input)?;
    let mut candidates = Vec::with_capacity(8);
    push_readings(&mut candidates, region_id, cleaned.plus, &cleaned.digits);
    if let Some(kept) = &cleaned.zero_kept {
        push_readings(&mut candidates, region_id, cleaned.plus, kept);
    }
    // The first valid reading wins; failing one, the first whose length
    // fits its country. Length alone let `12127365001` in a DE tenant be
    // the invalid +49 1212 7365001 rather than the valid +1 212 736 5001.
    let mut fitting = None;
    let mut group_read = None;
    for Candidate {
        group,
        region,
        text,
    } in candidates
    {
        if group_read == Some(group) {
            continue;
        }
        let Some((e164, sure)) = reading(region, &text) else {
            continue;
        };
        if sure {
            return Ok(e164);
        }
        group_read = Some(group);
        fitting.get_or_insert(e164);
    }
    fitting.ok_or_else(|| NormalizeError::NotANumber(input.chars().take(40).collect()))
}

/// A reading to try: the text to parse, and the region to parse it in
/// when it is a national number.
struct Candidate {
    /// Readings of one group are taken in order, a later one only when
    /// the ones before it do not fit, however valid it is.
    group: usize,
    region: Option<Id>,
    text: String,
}

/// The readings of `digits` in `region`, in order of how explicit they
/// are.
fn push_readings(candidates: &mut Vec<Candidate>, region: Id, plus: bool, digits: &str) {
    let mut push = |new_group: bool, region: Option<Id>, text: String| {
        let last = candidates.last().map_or(0, |c| c.group);
        let group = if new_group { last + 1 } else { last };
        candidates.push(Candidate {
            group,
            region,
            text,
        });
    };
    if plus {
        push(true, None, format!("+{digits}"));
        return;
    }
    // The region's own international prefix (US 011, GB 00, JP 010, AU
    // 0011, RU 810) first, taken off here rather than by the parser,
    // which reads `011 44 1632 …` in the US as +44 632 ….
    if let Some(rest) = own_international_prefix(region, digits) {
        push(true, None, format!("+{rest}"));
    }
    // Another region's prefix: 0011 (AU), 011 (NANP), 00 (most
    // others), as a PBX abroad or a carrier writes it.
    let other = ["0011", "011", "00"]
        .iter()
        .find_map(|idd| digits.strip_prefix(idd))
        .map(|rest| format!("+{rest}"));
    // One group: whichever of the two fits first is the reading, valid
    // or not. `00` begins no national number, whatever the length rules
    // allow (`00 1 555 …` in JP, or AU's carriers' `0015…`); `011` does:
    // in GB `0114` is Sheffield, in JP and IT `011` is Sapporo and Turin.
    if digits.starts_with("00") {
        let mut first = true;
        if let Some(other) = other {
            push(true, None, other);
            first = false;
        }
        push(first, Some(region), digits.to_string());
    } else {
        push(true, Some(region), digits.to_string());
        if let Some(other) = other {
            push(false, None, other);
        }
    }
    // Digits only, country code included (what mod_cidlookup sends).
    push(true, None, format!("+{digits}"));
}

/// One reading's E.164 and whether it is sure (valid, or of its region's
/// one length); `None` when it is no number of a length its country uses.
fn reading(region: Option<Id>, text: &str) -> Option<(String, bool)> {
    let number = parse_number(region, text).ok()?;
    let valid = phonenumber::is_valid(&number);
    if !valid && !fits_a_length(&number) {
        return None;
    }
    let e164 = e164_of(&number);
    // E.164 allows at most 15 digits; some countries' metadata allows
    // national lengths that would exceed it after the country code.
    if e164.len() > MAX_E164_LEN {
        return None;
    }
    // Odd inputs ("0006626612" in DE) can format to an E.164 string that
    // reads back as another number; such readings are not numbers. One
    // without a region that formats to its own text reads back as itself.
    let reads_back = region.is_none() && e164 == text;
    if !reads_back && !parse_number(None, &e164).is_ok_and(|n| e164_of(&n) == e164) {
        return None;
    }
    let sure = valid || region.is_some_and(|r| the_regions_one_length(r, &number));
    Some((e164, sure))
}

/// Digits (country code included) from which an E.164 reading is taken
/// to be a whole number even when the metadata does not call it valid
/// (a fictional or brand-new range). A shorter invalid one is a local
/// number read without its area code (`010-1234` reads as `+10101234` in
/// a US tenant).
pub const WHOLE_E164_DIGITS: usize = 10;

/// Whether an E.164 reading is a whole number: valid per the metadata,
/// or of at least [`WHOLE_E164_DIGITS`]. Many valid numbers are shorter:
/// Stockholm's `08-123 456` is +46 8 123 456, the Faroes' +298 812345.
pub fn is_whole(e164: &str) -> bool {
    e164.bytes().filter(u8::is_ascii_digit).count() >= WHOLE_E164_DIGITS
        || parse_number(None, e164).is_ok_and(|n| phonenumber::is_valid(&n))
}

/// An E.164 reading's country calling code and its national significant
/// number (`+441632960123`: 44 and `1632960123`). No country code begins
/// another, so the first one the metadata knows is the one.
pub fn country_code(e164: &str) -> Option<(u16, &str)> {
    let digits = e164.strip_prefix('+')?;
    (1..=3).find_map(|len| {
        let code = digits.get(..len)?;
        let national = &digits[len..];
        let value: u16 = code.parse().ok()?;
        let known = code.bytes().all(|b| b.is_ascii_digit())
            && phonenumber::metadata::DATABASE.region(&value).is_some();
        known.then_some((value, national))
    })
}

/// The country calling code of `region` (ISO 3166 alpha-2); `None` for a
/// region the metadata does not know.
pub fn region_country_code(region: &str) -> Option<u16> {
    let region = region.trim().to_ascii_uppercase();
    phonenumber::metadata::DATABASE
        .by_id(region.as_str())
        .map(|meta| meta.country_code())
}

/// The last `len` digits of a number's main part (its URI's user part,
/// without an extension), if it has that many: the key of the match by
/// last digits.
pub fn suffix(number: &str, len: usize) -> Option<String> {
    let digits: String = main_part(uri_user(number.trim()))
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    (len..=MAX_DIALED_DIGITS)
        .contains(&digits.len())
        .then(|| digits[digits.len() - len..].to_string())
}

/// The most digits one number can be dialed with: 15 of E.164 after the
/// longest international prefix in use (`0011`, Australia's). More is
/// two numbers in one cell (Google's `+44 20 7946 0009 ::: +44 7700
/// 900009`), whose last digits named callers of neither.
const MAX_DIALED_DIGITS: usize = 19;

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;

//! Numbers a spreadsheet changed on their way into a file: a column of
//! digits it took for amounts comes back in scientific notation, with
//! decimal places or with thousands separators. Each pattern is the
//! spreadsheet's, not a number's anyone dials.

/// What a spreadsheet made of a long number, and how to get it back.
pub(super) const SCIENTIFIC: &str =
    "looks like a spreadsheet's scientific notation: its digits are lost";
pub(super) const DECIMAL: &str =
    "looks like a number a spreadsheet gave decimal places: a phone number has none";
pub(super) const GROUPED: &str = "looks like a number a spreadsheet grouped in thousands";

/// Stored as it reads, such a value dials or registers as something else,
/// and nothing says so until a call fails: refused with the remedy.
pub(super) fn spreadsheet(field: &str, text: &str, cause: &str) -> String {
    format!(
        "{field}: {:?} {cause}; if it came from a spreadsheet, format the column as text and \
         export again",
        text.trim()
    )
}

/// `[+-]digits[(.|,)digits](e|E)(+|-)digits`, as a spreadsheet shows a
/// number too long for its cell (`4.47701E+11`, `1E+11`): always with the
/// exponent's sign. Without one it is a name (`8e041259`, a generated hex
/// SIP user), which no spreadsheet writes for a number.
pub(super) fn scientific(text: &str) -> bool {
    let t = text.trim();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let Some((mantissa, exponent)) = t.split_once(['e', 'E']) else {
        return false;
    };
    let Some(exponent) = exponent.strip_prefix(['+', '-']) else {
        return false;
    };
    let (whole, fraction) = match mantissa.split_once(['.', ',']) {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    digits(whole) && fraction.is_none_or(digits) && digits(exponent)
}

fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A run of six or more digits with a fraction at its end, as a
/// spreadsheet writes a phone number it took for an amount
/// (`15551234567.00`).
pub(super) fn decimal(text: &str) -> bool {
    let Some((before, fraction)) = text.trim().rsplit_once('.') else {
        return false;
    };
    let run = before.bytes().rev().take_while(u8::is_ascii_digit).count();
    digits(fraction) && run >= 6
}

/// `[+]d[dd],ddd,ddd[,ddd...]`: thousands separators, not the dial pauses
/// a number may carry (`+15551234567,,123`), whose groups are not three
/// digits each.
pub(super) fn grouped(text: &str) -> bool {
    let t = text.trim();
    let mut groups = t.strip_prefix('+').unwrap_or(t).split(',');
    let first = groups.next().unwrap_or("");
    let (mut rest, mut all_three) = (0, true);
    for group in groups {
        rest += 1;
        all_three &= group.len() == 3 && digits(group);
    }
    digits(first) && first.len() <= 3 && rest >= 2 && all_three
}

#[cfg(test)]
mod tests {
    use super::{decimal, grouped, scientific};

    #[test]
    fn what_a_spreadsheet_makes_of_long_numbers() {
        for text in ["4.47701E+11", "1,55512e+10", "-1E-3", " 15E+2 ", "1E+11"] {
            assert!(scientific(text), "{text}");
        }
        // Hex SIP users (`8e041259`, `40E17`) have no exponent sign.
        for text in [
            "E+10",
            "1.E+5",
            "1e",
            "1e+",
            "sip1E+5",
            "1.5.5E+2",
            "101",
            "1e+5x",
            "8e041259",
            "40E17",
            "1,55512e10",
        ] {
            assert!(!scientific(text), "{text}");
        }
        for text in ["15551234567.00", "+15551234567.5", "tel 555123.4"] {
            assert!(decimal(text), "{text}");
        }
        for text in ["555.123.4567", "+49.30.1234567", "15551234567.", "12345.00"] {
            assert!(!decimal(text), "{text}");
        }
        for text in ["15,551,234,567", "+1,555,123", "555,123,456,789"] {
            assert!(grouped(text), "{text}");
        }
        for text in [
            "+15551234567,,123",
            "5551234,123",
            "1,555",
            "1,555,12",
            "1234,567,890",
        ] {
            assert!(!grouped(text), "{text}");
        }
    }
}

//! A cell holding several numbers, as address books export them: Google
//! Contacts joins a contact's numbers of one label with ` ::: `, others
//! put each on a line of its own within the cell. Read as one number, the
//! first is lost and the digits run together into a number nobody has.
//! A comma or semicolon is a dial string's pause or wait, followed at once
//! by digits to send once the call is answered; followed by `+` it begins
//! another number, since no tone is dialled as `+`, and so does a space
//! and a whole number. Read as one, such a cell named nobody, or only its
//! first number, and no one was told.

/// Why `number` is more than one, if it is.
pub(super) fn several(number: &str) -> Option<&'static str> {
    if number.contains(":::") {
        return Some("\":::\"");
    }
    if number.contains(['\n', '\r']) {
        return Some("a line break");
    }
    let before_plus = |separator: char| {
        number
            .split(separator)
            .skip(1)
            .any(|after| after.trim_start().starts_with('+'))
    };
    if [',', ';', '/', '|'].into_iter().any(before_plus) {
        return Some("a separator before a second \"+\"");
    }
    // `+44 20 7946 0000 +44 20 7946 0001`: a `+` after a digit and a space.
    let bytes = number.as_bytes();
    let plus_after_number = bytes.iter().enumerate().any(|(i, b)| {
        *b == b'+' && {
            let before = number[..i].trim_end();
            before.len() < i && before.ends_with(|c: char| c.is_ascii_digit())
        }
    });
    if plus_after_number {
        return Some("a space before a second \"+\"");
    }
    // A pause is followed by the tones it waits for, mostly at once; one
    // comma or semicolon, a space and a whole number without a tone's `#`
    // or `*` is another number (`555-0100, 555-0101`). A run of pauses
    // (`,, 123456789#`, a conference PIN) is not.
    let spaced_number = |separator: char| {
        let parts: Vec<&str> = number.split(separator).collect();
        parts.windows(2).any(|pair| {
            let (before, after) = (pair[0], pair[1]);
            !before.is_empty()
                && after.starts_with(char::is_whitespace)
                && digits(after) >= 7
                && !after.contains(['#', '*'])
        })
    };
    if [',', ';'].into_iter().any(spaced_number) {
        return Some("a comma or semicolon and a space");
    }
    // `030 1234567 / 0171 1234567`: whole numbers on both sides. An area
    // code before the slash is shorter (`0171/1234567`, `+49 3381/123456`,
    // `0049 (0)3381/12345678`).
    let halves_are_numbers = number
        .split_once('/')
        .is_some_and(|(left, right)| digits(left) >= 10 && digits(right) >= 10);
    halves_are_numbers.then_some("a slash between two whole numbers")
}

fn digits(text: &str) -> usize {
    text.bytes().filter(u8::is_ascii_digit).count()
}

/// The refusal, with what to do instead.
pub(super) fn one_number_each(field: &str, between: &str) -> String {
    format!(
        "{field}: one number each, and this holds several ({between} between them): give each \
         its own column (work, mobile, home, …), or, for two of one kind, write the entry in JSON"
    )
}

#[cfg(test)]
mod tests {
    use super::several;

    #[test]
    fn cells_of_several_numbers_are_told_from_dial_strings() {
        for text in [
            "+44 20 7946 0000 ::: +44 20 7946 0001",
            "+1 212 555 0100\n+1 212 555 0101",
            "+1 212 555 0100\r\n+1 212 555 0101",
            "+1 212 555 0100, +1 212 555 0101",
            "+1 212 555 0100;+1 212 555 0101",
            "030 1234567 / +49 171 1234567",
            "+33 1 23 45 67 89 | +33 6 12 34 56 78",
            "+44 20 7946 0000 +44 20 7946 0001",
            "555-0100, 555-0101",
            "030 1234567 / 0171 1234567",
            "+1 212 555 0100; 212 555 0101",
        ] {
            assert!(several(text).is_some(), "{text:?}");
        }
        // Pauses, waits and extensions, German area-code slashes and URIs
        // with parameters are one number each.
        for text in [
            "+1 555 010 0100,,98765432#,,1234#",
            "+1 555 010 0100;ext=12",
            "0171/1234567",
            "030 / 1234567",
            "+49 3381/123456",
            "+49 (0)30 / 1234567",
            "+1 555 0100,,1234#",
            "+1 555 0100, ext 12",
            "0049 (0)3381/12345678",
            "+1 646 558 8656,, 123456789#",
            "+1 646 558 8656, 123456789#",
            "tel:+1-555-0100;phone-context=+1",
            "sip:+15550100@pbx.example.net;user=phone",
            "+1 (555) 010-0100 x12",
            "555-0100",
        ] {
            assert_eq!(several(text), None, "{text:?}");
        }
    }
}

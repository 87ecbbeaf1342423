//! A cell holding several numbers, as address books export them: Google
//! Contacts joins a contact's numbers of one label with ` ::: `, others
//! put each on a line of its own within the cell. Read as one number, the
//! first is lost and the digits run together into a number nobody has.
//! A comma or semicolon is a dial string's pause or wait, followed by
//! digits to send once the call is answered; followed by `+` it begins
//! another number, since no tone is dialled as `+`.

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
    [',', ';', '/', '|']
        .into_iter()
        .any(before_plus)
        .then_some("a separator before a second \"+\"")
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
            "tel:+1-555-0100;phone-context=+1",
            "sip:+15550100@pbx.example.net;user=phone",
            "+1 (555) 010-0100 x12",
            "555-0100",
        ] {
            assert_eq!(several(text), None, "{text:?}");
        }
    }
}

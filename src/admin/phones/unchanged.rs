//! A value sent back as it is stored passes the text checks newer than
//! the row. Clients edit by reading a row and sending it back with one
//! field changed: a line name the previous release stored with a line
//! break would otherwise block every edit of its phone, the label's or
//! the registrar's, until someone found the field at fault. Only the
//! newer character checks are waived, never lengths or older rules, and
//! only for what is stored already: a changed value is held to all of
//! them.

use std::borrow::Cow;

use dialtone_sync::checks;
use serde_json::Value;

/// What only the newer checks refuse in text a phone shows or sends (a
/// line's display name, registrar, proxy and password, a label): control
/// characters, separators and noncharacters. U+0000 keeps its own, older
/// refusal (`store/nul.rs`).
pub(crate) fn shown(c: char) -> bool {
    c != '\0' && checks::unfit(c)
}

/// What only the newer checks refuse in a registrar or proxy: besides
/// [`shown`], the colons of an IPv6 address without its brackets.
pub(crate) fn host(c: char) -> bool {
    shown(c) || c == ':'
}

/// What only the newer checks refuse in an extension or authentication
/// user: older rules refused spaces and control characters there already,
/// and still do. An `e` or `E` stands for the spreadsheet's scientific
/// notation, the one newer refusal of these fields that is no character's.
pub(crate) fn sip_user(c: char) -> bool {
    (checks::unfit(c) && !c.is_whitespace() && !c.is_control()) || matches!(c, 'e' | 'E')
}

/// What only the newer check refuses in a tenant's name: characters drawn
/// as nothing that are not formatting characters (a Hangul filler), which
/// the older rule refused with control characters, and still does.
pub(crate) fn tenant_name(c: char) -> bool {
    checks::is_default_ignorable(c) && !checks::is_format(c)
}

/// `sent` as a check is to see it: as sent, unless it is `stored` as it
/// is, when each character `newer` names becomes a letter of the same size
/// in bytes (a length in bytes or characters reads the same), so that only
/// the length and the older rules judge it. The value written is `sent`.
pub(crate) fn as_checked<'a>(
    sent: &'a str,
    stored: Option<&str>,
    newer: fn(char) -> bool,
) -> Cow<'a, str> {
    if stored != Some(sent) || !sent.chars().any(newer) {
        return Cow::Borrowed(sent);
    }
    let plain = |c: char| match c.len_utf8() {
        1 => 'x',
        2 => 'é',
        3 => '一',
        _ => '𠀀',
    };
    Cow::Owned(
        sent.chars()
            .map(|c| if newer(c) { plain(c) } else { c })
            .collect(),
    )
}

/// [`checks::settings_strings`] of `sent`, a string equal to the one at
/// the same place of `stored` (a JSON object's text) passing: that check
/// is newer than any stored row. `stored` is read only for a refusal.
pub(crate) fn settings_strings(sent: &Value, stored: Option<&str>) -> Result<(), String> {
    let refused = match checks::settings_strings(sent) {
        Ok(()) => return Ok(()),
        Err(refused) => refused,
    };
    let Some(stored) = stored.and_then(|s| serde_json::from_str::<Value>(s).ok()) else {
        return Err(refused);
    };
    checks::settings_strings(&settings_as_checked(sent, Some(&stored)))
}

/// `sent` with each string that `stored` holds at the same place (the same
/// keys and indexes) [`as_checked`].
fn settings_as_checked(sent: &Value, stored: Option<&Value>) -> Value {
    match sent {
        Value::String(text) => {
            let stored = stored.and_then(Value::as_str);
            Value::String(as_checked(text, stored, checks::unfit).into_owned())
        }
        Value::Array(items) => Value::Array(
            (items.iter().enumerate())
                .map(|(i, item)| settings_as_checked(item, stored.and_then(|s| s.get(i))))
                .collect(),
        ),
        Value::Object(members) => Value::Object(
            (members.iter())
                .map(|(key, member)| {
                    let stored = stored.and_then(|s| s.get(key));
                    (key.clone(), settings_as_checked(member, stored))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
#[path = "unchanged_tests.rs"]
mod tests;

//! The number in a SIP or tel URI a PBX sends as the caller, and the
//! digits a tel URI's `phone-context` puts before it (RFC 3966).

/// The user part of a SIP or tel URI (`sip:+15550101234@pbx;user=phone`,
/// `<tel:+15550101234>`, a From header's `<sip:…@pbx>;tag=…`), which some
/// PBXes send as the caller's number; anything else as it is.
pub(super) fn uri_user(input: &str) -> &str {
    uri_user_part(input).map_or(input, |user| user.split(';').next().unwrap_or(user).trim())
}

/// A SIP or tel URI's user part with the parameters written in it: a tel
/// URI's (`tel:7365000;phone-context=+1415`), which a SIP URI carries in
/// its user part (`sip:7365000;phone-context=+1415@pbx;user=phone`).
pub(super) fn uri_user_part(input: &str) -> Option<&str> {
    let bare = input
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .map_or(input, |(uri, _header_params)| uri);
    ["sip:", "sips:", "tel:"].into_iter().find_map(|scheme| {
        let head = bare.get(..scheme.len())?;
        let rest = &bare[scheme.len()..];
        head.eq_ignore_ascii_case(scheme)
            .then(|| rest.split(['@', '?']).next().unwrap_or(rest))
    })
}

/// The digits of a `phone-context` that is a global number (`+1415`,
/// `+1-415`); `None` for a domain name (`example.net`), which says
/// nothing about the digits, or for no context.
pub(super) fn global_phone_context(user_part: &str) -> Option<String> {
    let context = user_part.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("phone-context")
            .then(|| value.trim())
    })?;
    let digits = context.strip_prefix('+')?;
    let global = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b"-.()".contains(&b));
    global.then(|| digits.chars().filter(char::is_ascii_digit).collect())
}

use super::*;

/// Messy inputs from the fictional ranges of docs/test-data.md.
const CASES: &[(&str, &str, &str)] = &[
    // NANP 555-01xx, region US
    ("+1 (555) 010-1234", "US", "+15550101234"),
    ("555.010.1234", "US", "+15550101234"),
    ("(555) 010-1234", "US", "+15550101234"),
    ("1-555-010-1234", "US", "+15550101234"),
    ("15550101234", "US", "+15550101234"),
    ("5550101234", "US", "+15550101234"),
    ("011 1 555 010 1234", "US", "+15550101234"),
    ("+1 555 010 1234 x205", "US", "+15550101234"),
    ("555-010-1234 ext. 7", "US", "+15550101234"),
    // UK 01632 960xxx
    ("01632 960123", "GB", "+441632960123"),
    ("0044 1632 960123", "US", "+441632960123"),
    ("0044 1632 960123", "GB", "+441632960123"),
    ("+44 (0)1632 960123", "GB", "+441632960123"),
    ("441632960123", "US", "+441632960123"),
    ("011 44 1632 960123", "US", "+441632960123"),
    // AU 02 5550 xxxx
    ("02 5550 1234", "AU", "+61255501234"),
    ("(02) 5550 1234", "AU", "+61255501234"),
    ("+61 2 5550 1234", "US", "+61255501234"),
    ("0011 61 2 5550 1234", "AU", "+61255501234"),
    // Another region's international prefix where it begins a national
    // number: Sheffield, Sapporo, Turin stay local.
    ("0114 312 3456", "GB", "+441143123456"),
    ("0114 920 1619", "GB", "+441149201619"),
    ("011-212-3456", "JP", "+81112123456"),
    ("011-431-2345", "JP", "+81114312345"),
    ("011 431 2345", "IT", "+390114312345"),
    // No national number begins 00: another region's prefix first.
    ("00 1 312 555 0100", "TH", "+13125550100"),
    // A national number in a range the metadata does not know is still
    // the region's, not a foreign one its digits happen to spell.
    ("322 719 2670", "US", "+13227192670"),
    ("241-555-0131", "US", "+12415550131"),
    // RU's own prefix is 8, a tone, 10.
    ("810 49 89 123456789", "RU", "+4989123456789"),
    // A region's prefixes for carriers do not take a country code's
    // first digit, and a loose national reading does not beat 00.
    ("00 1 646 555 0100", "AU", "+16465550100"),
    ("00 1 646 555 0100", "HK", "+16465550100"),
    ("00 1 312 555 0100", "TH", "+13125550100"),
    ("00 1 555 010 1234", "JP", "+15550101234"),
    // The region's own, where it is not another's.
    ("010 1 555 010 1234", "JP", "+15550101234"),
    ("00 44 1632 960123", "US", "+441632960123"),
    // AU's own prefixes include 0015 (a carrier's): `00 1 555 …` is
    // not Brazil past it, but the US past 00.
    ("0015550100034", "AU", "+15550100034"),
    ("61255501234", "GB", "+61255501234"),
    // Whole URIs, as some PBXes send the caller
    (
        "sip:+15550101234@pbx.example.net;user=phone",
        "GB",
        "+15550101234",
    ),
    ("<sip:5550101234@10.0.0.1>", "US", "+15550101234"),
    ("SIPS:+441632960123@pbx.example.net", "US", "+441632960123"),
    (
        "tel:+44-1632-960123;phone-context=example.net",
        "US",
        "+441632960123",
    ),
    // Spaces as form encoders write them, past a leading plus
    ("+1+555+010+1234", "GB", "+15550101234"),
    ("(555)+010-1234", "US", "+15550101234"),
    // A From header's value, its parameters past the URI
    (
        "<sip:+15550101234@pbx.example.net>;tag=abc",
        "GB",
        "+15550101234",
    ),
    ("<tel:5550101234>;tag=a<b>", "US", "+15550101234"),
];

#[test]
fn messy_inputs_become_e164() {
    let mut failures = Vec::new();
    for (input, region, want) in CASES {
        match normalize(input, region) {
            Ok(got) if got == *want => {}
            other => failures.push(format!("{input:?} in {region}: {other:?}, want {want}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_inputs_are_errors() {
    for input in [
        "",
        "   ",
        "anonymous",
        "UNKNOWN",
        "12",
        "+",
        "555-CALL-NOW",
        "1)(uid=*",
        "*",
        "\0",
        "12345678901234567890",
        "sip:anonymous@anonymous.invalid",
        "sip:@pbx.example.net",
        "tel:",
        "sipé:5550101234",
    ] {
        assert!(normalize(input, "US").is_err(), "{input:?} was accepted");
    }
    assert_eq!(
        normalize("5550101234", "XX"),
        Err(NormalizeError::Region("XX".into()))
    );
    // Found by fuzzing: a national length German metadata allows would
    // make 17 digits with the country code (so another reading wins),
    // and a national number that does not read back as itself.
    assert!(normalize("9006691263 12091", "DE").unwrap().len() <= 16);
    assert!(normalize("0006626612", "DE").is_err());
}

#[test]
fn lookup_input_past_any_number_is_refused() {
    let longest = "0011 (0) 61 2 5550 1234 ext. 12345";
    assert_eq!(check_lookup_len(longest), Ok(()));
    assert_eq!(normalize(longest, "AU").as_deref(), Ok("+61255501234"));
    // Text after an extension marker is ignored, so this normalizes...
    let padded = format!("5550101234#{}", "z".repeat(MAX_LOOKUP_LEN));
    assert_eq!(normalize(&padded, "US").as_deref(), Ok("+15550101234"));
    // ...and only the length check refuses it.
    assert_eq!(
        check_lookup_len(&padded),
        Err(NormalizeError::TooLong(padded.len(), MAX_LOOKUP_LEN))
    );
    assert_eq!(check_lookup_len(&"1".repeat(MAX_LOOKUP_LEN)), Ok(()));
    // The same padding inside a URI's user part.
    let in_uri = format!("sip:{padded}@pbx");
    assert_eq!(
        check_lookup_len(&in_uri),
        Err(NormalizeError::TooLong(padded.len(), MAX_LOOKUP_LEN))
    );
}

/// A URI is bounded by its number, not by its host and parameters:
/// carriers' SBC names are long.
#[test]
fn a_whole_uri_is_bounded_by_its_number() {
    for uri in [
        "sip:+15550101234@sbc1.carrier-interconnect.example.net;user=phone",
        "<sip:+15550101234@sbc1.carrier-interconnect.example.net;user=phone>;tag=9f8e7d6c",
    ] {
        assert!(uri.len() > MAX_LOOKUP_LEN);
        assert_eq!(check_lookup_len(uri), Ok(()), "{uri}");
        assert_eq!(normalize(uri, "US").as_deref(), Ok("+15550101234"));
    }
    let host = "h".repeat(MAX_LOOKUP_INPUT_LEN);
    let longest = format!("sip:+15550101234@{host}");
    let longest = &longest[..MAX_LOOKUP_INPUT_LEN];
    assert_eq!(check_lookup_len(longest), Ok(()));
    let past = format!("{longest};");
    assert_eq!(
        check_lookup_len(&past),
        Err(NormalizeError::TooLong(past.len(), MAX_LOOKUP_INPUT_LEN))
    );
}

#[test]
fn every_metadata_pattern_fits_the_cache() {
    use phonenumber::metadata::DATABASE;
    use phonenumber::Type;
    let mut patterns = std::collections::HashSet::new();
    for meta in DATABASE.iter() {
        let d = meta.descriptors();
        let kinds = [
            Type::FixedLine,
            Type::Mobile,
            Type::TollFree,
            Type::PremiumRate,
            Type::SharedCost,
            Type::PersonalNumber,
            Type::Voip,
            Type::Pager,
            Type::Uan,
            Type::Voicemail,
        ];
        let descriptors = kinds.into_iter().filter_map(|k| d.get(k));
        patterns.extend(
            descriptors
                .chain([d.general()])
                .map(|x| x.national_number().as_str().to_string()),
        );
        let prefixes = [
            meta.international_prefix(),
            meta.national_prefix_for_parsing(),
            meta.leading_digits(),
        ];
        patterns.extend(
            prefixes
                .into_iter()
                .flatten()
                .map(|r| r.as_str().to_string()),
        );
        for f in meta.formats().iter().chain(meta.international_formats()) {
            patterns.insert(f.pattern().as_str().to_string());
            patterns.extend(f.leading_digits().iter().map(|r| r.as_str().to_string()));
        }
    }
    assert!(patterns.len() > 1_000, "the count missed most patterns");
    assert!(
        patterns.len() <= PATTERN_CACHE,
        "{} patterns, a cache of {PATTERN_CACHE}",
        patterns.len()
    );
}

/// phonenumber's own cache keeps 100 patterns; numbers of every country
/// need more, which it compiled again and again.
#[test]
fn numbers_of_every_country_keep_their_patterns() {
    for code in 1..999 {
        let _ = normalize(&format!("+{code}2345678901"), "US");
    }
    let cached = phonenumber::metadata::DATABASE
        .cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();
    assert!(cached > 500, "{cached} patterns kept");
}

#[test]
fn suffixes_and_whole_readings() {
    assert_eq!(suffix("+1 (555) 010-1234", 7).as_deref(), Some("0101234"));
    assert_eq!(suffix("5550104321 x12", 7).as_deref(), Some("0104321"));
    assert_eq!(
        suffix("sip:+15550101234@pbx;user=phone", 7).as_deref(),
        Some("0101234")
    );
    assert_eq!(suffix("123", 7), None);
    assert_eq!(normalize("010-1234", "US").as_deref(), Ok("+10101234"));
    assert!(!is_whole("+10101234"));
    assert!(is_whole("+15550101234"));
    assert!(is_whole("+4532123456"));
}

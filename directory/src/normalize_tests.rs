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
    // Dashes and spaces as word processors and typography write them.
    ("+1 555\u{2013}010\u{2013}1234", "GB", "+15550101234"),
    ("+1 555\u{2011}010\u{2212}1234", "GB", "+15550101234"),
    ("+44\u{202f}1632\u{202f}960123", "US", "+441632960123"),
    ("+44\u{2009}1632\u{3000}960123", "US", "+441632960123"),
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
    // Two numbers in one cell are no number's last digits; the longest
    // international prefix with a whole number still has some.
    assert_eq!(suffix("+44 1632 960009 ::: +44 1632 960010", 7), None);
    assert_eq!(
        suffix("0011 61 2 5550 1234 5678", 7).as_deref(),
        Some("2345678")
    );
    assert_eq!(normalize("010-1234", "US").as_deref(), Ok("+10101234"));
    assert!(!is_whole("+10101234"));
    assert!(is_whole("+15550101234"));
    assert!(is_whole("+4532123456"));
}

/// Valid numbers shorter than ten digits with their country code are
/// whole; a short reading the metadata does not call valid is not.
#[test]
fn short_valid_numbers_are_whole() {
    let cases: &[(&str, &str, &str, bool)] = &[
        // Stockholm, Vienna, the Faroes: valid fixed lines.
        ("08-123 456", "SE", "+468123456", true),
        ("01 234567", "AT", "+431234567", true),
        ("+298 812345", "US", "+298812345", true),
        // A local number read without its area code.
        ("010-1234", "US", "+10101234", false),
        ("736-4321", "US", "+17364321", false),
    ];
    for (input, region, reading, whole) in cases {
        assert_eq!(normalize(input, region).as_deref(), Ok(*reading), "{input}");
        assert_eq!(is_whole(reading), *whole, "{reading}");
    }
}

#[test]
fn country_codes_split_off() {
    let cases: &[(&str, Option<(u16, &str)>)] = &[
        ("+15550101234", Some((1, "5550101234"))),
        ("+441632960123", Some((44, "1632960123"))),
        ("+298812345", Some((298, "812345"))),
        ("+390645678901", Some((39, "0645678901"))),
        ("+80012345678", Some((800, "12345678"))),
        ("15550101234", None),
        ("+", None),
        ("+28", None),
    ];
    for (e164, want) in cases {
        assert_eq!(country_code(e164), *want, "{e164}");
    }
    assert_eq!(region_country_code("se"), Some(46));
    assert_eq!(region_country_code("XX"), None);
}

/// RFC 3966 5.1.5: a local number's digits follow a global
/// `phone-context`'s; a domain name as the context is no digits.
#[test]
fn a_global_phone_context_precedes_a_local_number() {
    let cases: &[(&str, &str, &str)] = &[
        ("tel:7365000;phone-context=+1415", "US", "+14157365000"),
        ("tel:79460123;phone-context=+4420", "GB", "+442079460123"),
        ("TEL:736-5000;Phone-Context=+1-415", "DE", "+14157365000"),
        (
            "sip:7365000;phone-context=+1415@pbx.example.net;user=phone",
            "GB",
            "+14157365000",
        ),
        (
            "<tel:7365000;phone-context=+1415>;tag=x",
            "US",
            "+14157365000",
        ),
        // A number with its own `+` keeps it; a domain says nothing.
        ("tel:+15550101234;phone-context=+44", "US", "+15550101234"),
        (
            "tel:5550101234;phone-context=example.net",
            "US",
            "+15550101234",
        ),
        ("tel:5550101234;phone-context=+", "US", "+15550101234"),
    ];
    for (input, region, want) in cases {
        assert_eq!(normalize(input, region).as_deref(), Ok(*want), "{input}");
    }
}

/// A valid reading beats one that only fits a length, except a national
/// reading of the one length the region's lines have.
#[test]
fn a_valid_reading_wins_over_a_fitting_one() {
    let cases: &[(&str, &str, &str)] = &[
        // E.164 digits without `+` (mod_cidlookup's form) in a DE tenant:
        // not the invalid +49 12127365001.
        ("12127365001", "DE", "+12127365001"),
        // Still the region's: ten NANP digits, and a national number
        // with a trunk prefix.
        ("322 719 2670", "US", "+13227192670"),
        ("030 12127365", "DE", "+493012127365"),
        ("0114 920 1619", "GB", "+441149201619"),
    ];
    for (input, region, want) in cases {
        assert_eq!(
            normalize(input, region).as_deref(),
            Ok(*want),
            "{input} in {region}"
        );
    }
}

/// `(0)` is a trunk prefix left out after most country codes, but part
/// of the number in Italy, San Marino and the Vatican.
#[test]
fn a_bracketed_zero_is_kept_where_it_is_dialled() {
    let cases: &[(&str, &str, &str)] = &[
        ("+39 (0)6 4567 8901", "GB", "+390645678901"),
        ("+39 (0)6 4567 8901", "IT", "+390645678901"),
        ("0039 (0)2 1234 5678", "DE", "+390212345678"),
        ("+378 (0)549 123456", "US", "+3780549123456"),
        ("+44 (0)20 7946 0123", "IT", "+442079460123"),
        ("+49 (0)30 12345678", "US", "+493012345678"),
    ];
    for (input, region, want) in cases {
        assert_eq!(
            normalize(input, region).as_deref(),
            Ok(*want),
            "{input} in {region}"
        );
    }
}

use super::*;

#[test]
fn filters_escape_what_the_server_sent() {
    let attrs = vec!["mobile".to_string(), "ipPhone".to_string()];
    let full = filter(Some("(objectClass=person)"), &attrs, None);
    assert_eq!(full, "(&(objectClass=person)(|(mobile=*)(ipPhone=*)))");
    let usn = filter(None, &attrs, Some(&Watermark::Usn(41)));
    assert_eq!(usn, "(&(uSNChanged>=42))");
    // The DC's name, the server's text, never reaches the filter.
    let of_dc = Watermark::DcUsn {
        usn: 41,
        dc: "CN=x)(cn=*".into(),
    };
    assert_eq!(filter(None, &attrs, Some(&of_dc)), usn);
    let hostile = filter(
        None,
        &attrs,
        Some(&Watermark::ModifyTimestamp("2026)(cn=*".into())),
    );
    assert_eq!(hostile, r"(&(modifyTimestamp>=2026\29\28cn=\2a))");
    for f in [full, usn, hostile] {
        assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
    }
}

#[test]
fn only_generalized_times_are_watermarks() {
    assert!(is_generalized_time("20261130145500Z"));
    assert!(is_generalized_time("20261130145500.123Z"));
    for bad in [
        "",
        "Z",
        "2026113014550Z",
        "20261130145500",
        "2026)(cn=*Z",
        "20261130145500.Z",
    ] {
        assert!(!is_generalized_time(bad), "{bad}");
    }
}

#[test]
fn page_caps_scale_with_entries() {
    let limits = Limits {
        max_entries: 1000,
        page_size: 500,
        op_timeout: Duration::from_secs(1),
    };
    assert_eq!(limits.max_pages(), 28);
    assert_eq!(limits.max_bytes(), 1000 * BYTES_PER_ENTRY);
}

#[test]
fn malformed_cookies_are_none() {
    let raw = |val: Option<Vec<u8>>| RawControl {
        ctype: PAGED_RESULTS_OID.into(),
        crit: false,
        val,
    };
    assert_eq!(paged_cookie(&raw(None)), None);
    assert_eq!(paged_cookie(&raw(Some(vec![0xff, 0x03, 1]))), None);
    // A cookie that is itself a SEQUENCE, not an OCTET STRING.
    assert_eq!(
        paged_cookie(&raw(Some(vec![0x30, 5, 2, 1, 0, 0x30, 0]))),
        None
    );
    // Nested 100,000 deep: refused at once, where a recursive parser
    // overflowed the test thread's stack.
    let levels = 100_000u32;
    let mut deep = Vec::new();
    for level in (0..levels).rev() {
        deep.extend([0x30, 0x84]);
        deep.extend((5 + 6 * level).to_be_bytes());
    }
    deep.extend([0x30, 3, 2, 1, 0]);
    assert_eq!(paged_cookie(&raw(Some(deep))), None);
    let good: RawControl = PagedResults {
        size: 0,
        cookie: b"abc".to_vec(),
    }
    .into();
    assert_eq!(paged_cookie(&good), Some(b"abc".to_vec()));
}

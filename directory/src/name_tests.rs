use super::*;

#[test]
fn cleans_names() {
    let cases: [(&str, Option<&str>); 15] = [
        ("Alice Example", Some("Alice Example")),
        ("  Alice\t\r\n  Example \u{0}", Some("Alice Example")),
        ("Bob \"The Boss\" Smith", Some("Bob 'The Boss' Smith")),
        (
            "Evil\r\nVia: SIP/2.0/UDP x",
            Some("Evil Via: SIP/2.0/UDP x"),
        ),
        ("back\\slash", Some("back/slash")),
        ("UNKNOWN", None),
        ("Unavailable", None),
        ("   ", None),
        ("\u{202e}Zoë\u{200b} Ålund", Some("Zoë Ålund")),
        // Format characters past the bidi and zero-width ones.
        (
            "\u{61c}Ali\u{ad}ce\u{2060} Ex\u{2064}ample",
            Some("Alice Example"),
        ),
        ("Bob\u{180e}\u{206a} Smith\u{fff9}", Some("Bob Smith")),
        ("\u{e0001}Acme\u{e0041}\u{e007f} Corp", Some("Acme Corp")),
        ("\u{600}\u{110bd}\u{1343f}\u{1d173}", None),
        ("\u{2060}UNKNOWN\u{feff}", None),
        ("", None),
    ];
    for (raw, want) in cases {
        assert_eq!(clean_name(raw).as_deref(), want, "{raw:?}");
    }
}

/// The ends of the Cf ranges are in; their neighbours, visible or
/// unassigned, are not.
#[test]
fn format_characters_are_told_by_their_ranges() {
    for c in [
        '\u{ad}',
        '\u{605}',
        '\u{61c}',
        '\u{891}',
        '\u{180e}',
        '\u{200b}',
        '\u{202e}',
        '\u{2060}',
        '\u{2064}',
        '\u{2066}',
        '\u{206f}',
        '\u{feff}',
        '\u{fffb}',
        '\u{13430}',
        '\u{1343f}',
        '\u{1bca3}',
        '\u{1d17a}',
        '\u{e0001}',
        '\u{e007f}',
    ] {
        assert!(is_format(c), "U+{:04X}", u32::from(c));
    }
    for c in [
        'a',
        ' ',
        '\u{0}',
        '\u{ac}',
        '\u{ae}',
        '\u{606}',
        '\u{200a}',
        '\u{2010}',
        '\u{2065}',
        '\u{2070}',
        '\u{fffc}',
        '\u{13440}',
        '\u{e0000}',
        '\u{e0080}',
    ] {
        assert!(!is_format(c), "U+{:04X}", u32::from(c));
    }
}

/// Zero-width joiners spell Persian words and hold emoji sequences
/// together; the other invisible characters still go.
#[test]
fn joiners_between_characters_are_kept() {
    let cases: [(&str, Option<&str>); 8] = [
        ("می\u{200c}خواهم", Some("می\u{200c}خواهم")),
        ("👩\u{200d}💻 Dev", Some("👩\u{200d}💻 Dev")),
        ("\u{202e}می\u{200c}\u{200b}خواهم", Some("می\u{200c}خواهم")),
        ("a\u{200d}\u{200d}\u{200c}b", Some("a\u{200d}b")),
        (
            "\u{200d}Alice \u{200c}Example\u{200d}",
            Some("Alice Example"),
        ),
        ("Alice\u{200d} Example", Some("Alice Example")),
        ("\u{200c}\u{200d}", None),
        ("UNK\u{200d}NOWN", None),
    ];
    for (raw, want) in cases {
        assert_eq!(clean_name(raw).as_deref(), want, "{raw:?}");
    }
}

#[test]
fn us_cnam_placeholders_are_no_name() {
    for raw in [
        "OUT OF AREA",
        "Out  of Area",
        "TOLL FREE CALL",
        "Unknown Caller",
        "NO CALLER ID",
        "private caller",
        "UNAVAILABLE CALLER",
        "PRIVATE NUMBER",
        "Blocked",
    ] {
        assert_eq!(clean_name(raw), None, "{raw:?}");
    }
    assert_eq!(clean_name("Blocked Inc").as_deref(), Some("Blocked Inc"));
}

/// Call logs and CDR pages show names in a browser.
#[test]
fn angle_brackets_become_parentheses() {
    assert_eq!(
        clean_name("<script>alert(1)</script>").as_deref(),
        Some("(script)alert(1)(/script)")
    );
    assert_eq!(
        clean_name("<img src=x onerror=alert(1)>").as_deref(),
        Some("(img src=x onerror=alert(1))")
    );
}

/// A cut inside a cluster goes back to before its base character.
#[test]
fn a_cut_keeps_marks_with_their_letter() {
    let accented = format!("X{}", "e\u{301}".repeat(40));
    let cleaned = clean_name(&accented).unwrap();
    assert!(cleaned.chars().count() <= MAX_NAME_CHARS);
    assert_eq!(cleaned, format!("X{}", "e\u{301}".repeat(31)));
    // Marks that fill the room after a space: the cluster goes, the
    // space with it.
    let spaced = format!("{} n\u{303}\u{301}\u{323}", "a".repeat(60));
    assert_eq!(clean_name(&spaced), Some("a".repeat(60)));
    // Devanagari (a spacing mark) and an enclosing mark.
    let hindi = format!("{}कि", "a".repeat(63));
    assert_eq!(clean_name(&hindi), Some("a".repeat(63)));
    let enclosed = format!("{}1\u{20e3}", "a".repeat(63));
    assert_eq!(clean_name(&enclosed), Some("a".repeat(63)));
    // Emoji: a skin tone, and a joined sequence cut in its middle.
    let thumbs = format!("{}👍\u{1f3fd}", "a".repeat(63));
    assert_eq!(clean_name(&thumbs), Some("a".repeat(63)));
    let coder = format!("{} x👩\u{200d}💻", "a".repeat(60));
    assert_eq!(clean_name(&coder), Some(format!("{} x", "a".repeat(60))));
    let family = format!("{}👨\u{200d}👩\u{200d}👧", "a".repeat(60));
    assert_eq!(clean_name(&family), Some("a".repeat(60)));
    // A cut between clusters keeps all it can.
    let exact = format!("{}e\u{301}", "a".repeat(62));
    assert_eq!(clean_name(&exact), Some(exact.clone()));
}

#[test]
fn long_names_are_cut_on_a_character_boundary() {
    let long = "Ж".repeat(100);
    let cleaned = clean_name(&long).unwrap();
    assert_eq!(cleaned.chars().count(), MAX_NAME_CHARS);
    let spaced = "ab ".repeat(40);
    let cleaned = clean_name(&spaced).unwrap();
    assert!(cleaned.chars().count() <= MAX_NAME_CHARS);
    assert!(!cleaned.ends_with(' '));
}

/// Default-ignorable characters outside Cf, the blank braille pattern,
/// noncharacters and private use: each alone, or all together, shows as
/// nothing.
#[test]
fn names_that_show_nothing_are_no_name() {
    let blanks = [
        "\u{34f}",
        "\u{115f}\u{1160}",
        "\u{3164}\u{3164}\u{3164}",
        "\u{ffa0}",
        "\u{17b4}\u{17b5}",
        "\u{180b}\u{180c}\u{180d}\u{180f}",
        "\u{fe00}\u{fe0e}\u{fe0f}",
        "\u{e0100}\u{e01ef}",
        "\u{2065}\u{fff0}\u{fff8}",
        "\u{e0000}\u{e0002}\u{e0080}\u{e01f0}\u{e0fff}",
        "\u{2800}\u{2800}",
        "\u{fdd0}\u{fdef}\u{fffe}\u{ffff}\u{1fffe}\u{10ffff}",
        "\u{e000}\u{f8ff}\u{f0000}\u{ffffd}\u{100000}\u{10fffd}",
    ];
    for raw in blanks {
        assert_eq!(clean_name(raw), None, "{raw:?}");
    }
    assert_eq!(clean_name(&blanks.concat()), None);
}

/// Wrapped or interleaved, they no longer hide a placeholder.
#[test]
fn hidden_characters_do_not_disguise_a_placeholder() {
    for raw in [
        "\u{34f}UNKNOWN\u{34f}",
        "\u{3164}\u{3164}\u{3164}UNKNOWN",
        "\u{115f}Anonymous\u{ffa0}",
        "U\u{17b4}N\u{180b}K\u{fe0f}N\u{e0100}O\u{fff0}W\u{e0000}N",
        "Out\u{2800}of\u{2800}\u{2800}Area",
        "\u{2800}Private\u{2800}",
        "Blo\u{fdd0}cked\u{ffff}",
        "\u{e000}Restricted\u{10fffd}",
        "\u{fe0f}\u{200d}Unavailable\u{fe0e}",
    ] {
        assert_eq!(clean_name(raw), None, "{raw:?}");
    }
}

#[test]
fn hidden_characters_inside_a_name_are_dropped() {
    let cases = [
        ("Ali\u{34f}ce Ex\u{180b}ample\u{e0100}", "Alice Example"),
        ("Alice\u{2800}Kim\u{2800}", "Alice Kim"),
        ("\u{3164}Bob\u{fe0f} Smith\u{fe0e}", "Bob Smith"),
        ("Acme\u{e000} Corp\u{10fffd}\u{fdd0}", "Acme Corp"),
        ("Zo\u{17b5}e\u{fff8} Lund\u{e0fff}", "Zoe Lund"),
    ];
    for (raw, want) in cases {
        assert_eq!(clean_name(raw).as_deref(), Some(want), "{raw:?}");
    }
}

/// Letters of the scripts whose fillers and selectors go, and the
/// presentation selectors where they follow an emoji.
#[test]
fn scripts_and_emoji_beside_the_hidden_characters_come_through() {
    let kept = [
        "김민준",
        // Conjoining jamo, as an NFD source spells 각.
        "\u{1100}\u{1161}\u{11a8}",
        "ᠮᠣᠩᠭᠣᠯ",
        "សុខ ខ្មែរ",
        "❤\u{fe0f} Mom",
        "Office ☎\u{fe0e}",
        "#\u{fe0f}\u{20e3} Hotline",
        "👩\u{200d}❤\u{fe0f}\u{200d}👨 Kim",
    ];
    for raw in kept {
        assert_eq!(clean_name(raw).as_deref(), Some(raw), "{raw:?}");
    }
    let cases = [
        ("ᠮ\u{180b}ᠣᠩ\u{180f}ᠭᠣᠯ", "ᠮᠣᠩᠭᠣᠯ"),
        // Only one selector, directly after its emoji.
        ("❤\u{fe0f}\u{fe0f}", "❤\u{fe0f}"),
        ("Mom \u{fe0f}❤", "Mom ❤"),
        ("👩\u{200d}\u{fe0f}💻", "👩\u{200d}💻"),
    ];
    for (raw, want) in cases {
        assert_eq!(clean_name(raw).as_deref(), Some(want), "{raw:?}");
    }
    let cut = format!("{}❤\u{fe0f}", "a".repeat(63));
    assert_eq!(clean_name(&cut), Some("a".repeat(63)));
}

/// The hand-written lists agree with the Unicode tables the regex crate
/// carries, over every character.
#[test]
fn hidden_characters_match_the_unicode_tables() {
    let ignorable = Regex::new(r"^\p{Default_Ignorable_Code_Point}$").unwrap();
    let not_text = Regex::new(r"^[\p{Noncharacter_Code_Point}\p{Co}]$").unwrap();
    for c in (0..=0x10_ffff).filter_map(char::from_u32) {
        let s = c.encode_utf8(&mut [0; 4]).to_owned();
        let n = u32::from(c);
        assert_eq!(is_default_ignorable(c), ignorable.is_match(&s), "U+{n:04X}");
        assert_eq!(is_not_text(c), not_text.is_match(&s), "U+{n:04X}");
    }
}

/// A raw name past 256 characters is no name: what a tenant's server
/// hides behind that many invisible ones costs nothing to look at, and no
/// cut leaves half a placeholder.
#[test]
fn a_name_past_its_characters_is_no_name() {
    let hidden = "\u{200b}".repeat(MAX_RAW_NAME_CHARS - 6);
    assert_eq!(clean_name(&format!("{hidden}UNKNOWN")), None);
    let short = "\u{200b}".repeat(MAX_RAW_NAME_CHARS - 3);
    assert_eq!(clean_name(&format!("{short}Bob")).as_deref(), Some("Bob"));
    assert_eq!(clean_name(&format!("{short}Bobby")), None);
    let selectors = format!("\u{1F600}{}", "\u{FE0F}".repeat(1 << 20));
    assert_eq!(clean_name(&selectors), None);
}

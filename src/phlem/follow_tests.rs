//! `follow.rs`: references resolved against the target, and what each
//! family's served files make phones fetch.

use super::*;

fn phone(mac: &str, family: Family, model: &str) -> Phone {
    Phone {
        mac: mac.parse().unwrap(),
        family,
        model: model.into(),
        credentials: None,
        aor: None,
    }
}

fn origin(target: &str) -> Origin {
    Origin::new(target, ["127.0.0.1".parse().unwrap()])
}

fn files(follow_ups: Vec<Result<Step, Unfollowed>>) -> Vec<Result<String, &'static str>> {
    follow_ups
        .into_iter()
        .map(|f| f.map(|s| s.file).map_err(|u| u.reason))
        .collect()
}

#[test]
fn references_are_followed_only_to_the_target() {
    let http = origin("http://localhost:8081");
    assert_eq!(
        http.file_for("y000000000000.cfg"),
        Ok("y000000000000.cfg".into())
    );
    assert_eq!(http.file_for("/dir/a.cfg"), Ok("dir/a.cfg".into()));
    // By address or by name, on another port or over another protocol.
    for same in [
        "http://127.0.0.1:8081/a.cfg",
        "https://LOCALHOST/a.cfg",
        "tftp://127.0.0.1/a.cfg",
    ] {
        assert_eq!(http.file_for(same), Ok("a.cfg".into()), "{same}");
    }
    assert_eq!(http.file_for("http://203.0.113.9/a.cfg"), Err(OTHER_HOST));
    assert_eq!(
        http.file_for("http://localhost.evil/a.cfg"),
        Err(OTHER_HOST)
    );
    for bad in [
        "",
        "../etc/passwd",
        "a/../../b",
        "ftp://localhost/a.cfg",
        "a\nb",
    ] {
        assert_eq!(http.file_for(bad), Err(UNFOLLOWABLE), "{bad:?}");
    }
    assert_eq!(http.file_for(&"a".repeat(300)), Err(UNFOLLOWABLE));
    // Under a target's path, a URL must point under it too.
    let prefixed = origin("http://127.0.0.1:8081/prov/");
    assert_eq!(
        prefixed.file_for("http://127.0.0.1:8081/prov/a.cfg"),
        Ok("a.cfg".into())
    );
    assert_eq!(
        prefixed.file_for("http://127.0.0.1:8081/other/a.cfg"),
        Err(UNFOLLOWABLE)
    );
    let tftp = Origin::new("tftp://[::1]:6969", []);
    assert_eq!(tftp.file_for("http://[::1]:80/a.cfg"), Ok("a.cfg".into()));
}

#[test]
fn a_yealink_boot_file_is_followed_line_by_line() {
    let yealink = phone("00:15:65:4a:a9:37", Family::Yealink, "T46S");
    let boot = &yealink.sequence()[0];
    let body = b"#!version:1.0.0.1\n\
        ## include:config \"commented.cfg\"\n\
        include:config \"y000000000000.cfg\"\n\
        include:config \"http://127.0.0.1:8081/0015654aa937.cfg\"\n\
        include:config \"http://198.51.100.7/elsewhere.cfg\"\n\
        include:config unquoted.cfg\n\
        overwrite_mode = 1\n";
    let follow_ups = yealink.follow_ups(boot, body, &origin("tftp://127.0.0.1:69"));
    let patterns: Vec<&str> = follow_ups
        .iter()
        .map(|f| match f {
            Ok(s) => s.pattern,
            Err(u) => u.pattern,
        })
        .collect();
    assert_eq!(
        files(follow_ups),
        [
            Ok("y000000000000.cfg".into()),
            Ok("0015654aa937.cfg".into()),
            Err(OTHER_HOST),
            Err(UNFOLLOWABLE)
        ]
    );
    assert_eq!(
        patterns,
        [
            "y000000000000.cfg",
            "{mac}.cfg",
            "include:config",
            "include:config"
        ]
    );
}

#[test]
fn an_spa_follows_the_profile_rule_its_model_file_sets() {
    let spa = phone("00:1b:54:aa:00:01", Family::CiscoSpa, "SPA504G");
    let model_file = &spa.sequence()[0];
    let here = origin("http://127.0.0.1:8081");
    let rule = |rule: &str| {
        let body =
            format!("<flat-profile>\n  <Profile_Rule>{rule}</Profile_Rule>\n</flat-profile>");
        files(spa.follow_ups(model_file, body.as_bytes(), &here))
    };
    assert_eq!(
        rule("http://127.0.0.1:8081/spa$MA.xml"),
        [Ok("spa001b54aa0001.xml".into())]
    );
    assert_eq!(
        rule("[--key secret ] /cfg/$(MAU)-$PSN.xml"),
        [Ok("cfg/001B54AA0001-504g.xml".into())]
    );
    assert_eq!(rule("http://203.0.113.9/spa$MA.xml"), [Err(OTHER_HOST)]);
    assert_eq!(rule("/spa$SN.xml"), [Err(UNFOLLOWABLE)]);
    // No rule, or an empty one: the phone keeps asking for its own file.
    assert_eq!(rule(""), [Ok("spa001b54aa0001.cfg".into())]);
    let none = files(spa.follow_ups(model_file, b"<flat-profile/>", &here));
    assert_eq!(none, [Ok("spa001b54aa0001.cfg".into())]);
    let followed = spa.follow_ups(
        model_file,
        b"<flat-profile><Profile_Rule ua=\"na\">spa$MA.xml</Profile_Rule></flat-profile>",
        &here,
    );
    assert_eq!(followed[0].as_ref().unwrap().pattern, "spa{mac}.xml");
    // The device file's own rule is the one just followed: not again.
    let device = followed[0].as_ref().unwrap();
    assert!(spa
        .follow_ups(device, b"<Profile_Rule>spa$MA.xml</Profile_Rule>", &here)
        .is_empty());
}

#[test]
fn poly_fetches_what_its_master_file_names() {
    let poly = phone("00:04:f2:ab:cd:01", Family::Poly, "VVX 450");
    let first = &poly.sequence()[0];
    let master = br#"<APPLICATION APP_FILE_PATH="sip.ld" CONFIG_FILES="[PHONE_MAC_ADDRESS]-phone.cfg, ../etc/passwd"/>"#;
    assert_eq!(
        files(poly.follow_ups(first, master, &origin("tftp://127.0.0.1:69"))),
        [
            Ok("000000000000.cfg".into()),
            Ok("0004f2abcd01-phone.cfg".into()),
            Err(UNFOLLOWABLE)
        ]
    );
}

//! Identification, family by family against docs/vendors.md: every file name
//! dialtone identifies and every User-Agent example there, plus the cases
//! that must be refused.

use dialtone_sync::Family::{self, *};
use dialtone_tftp::{identify, parse_user_agent, FileKind, IdentifyError};

struct Case {
    path: &'static str,
    ua: Option<&'static str>,
    family: Option<Family>,
    kind: FileKind,
    mac: Option<&'static str>,
    model: Option<&'static str>,
}

const fn case(
    path: &'static str,
    ua: Option<&'static str>,
    family: Option<Family>,
    kind: FileKind,
    mac: Option<&'static str>,
    model: Option<&'static str>,
) -> Case {
    Case {
        path,
        ua,
        family,
        kind,
        mac,
        model,
    }
}

use FileKind::*;

const YEALINK_UA: &str = "Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37";
const YEALINK_T5X_UA: &str = "Yealink SIP-T56A  58.80.0.25 001565f429a4";
const POLY_UA: &str = "FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application";
const SPA_UA: &str = "Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400UK)";
const LINKSYS_UA: &str = "Linksys/SPA-942-6.1.5(a) (88019FA42805)";
const MPP_UA: &str = "Cisco-CP-8841-3PCC/11.0 (00562b043615)";
const GS_UA: &str = "Grandstream Model HW GXP2135 SW 1.0.7.97 DevId 000b828aa872";
const SNOM_UA: &str = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413922D24 SXM:0 UXM:0)";
const FANVIL_UA: &str = "Fanvil X4 2.10.2.6887 0c383e1a2b3c";

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Yealink: <mac>.boot, y000000000000.boot, y0000000000XX.cfg, <mac>.cfg
    case("001565f429a4.boot", None, Some(Yealink), Boot, Some("001565f429a4"), None),
    case("y000000000000.boot", None, Some(Yealink), Boot, None, None),
    case("/y000000000000.boot", Some(YEALINK_UA), Some(Yealink), Boot, Some("0015654aa937"), Some("T46G")),
    case("y000000000028.cfg", None, Some(Yealink), ModelCommon, None, Some("T46G")),
    case("y000000000035.cfg", None, Some(Yealink), ModelCommon, None, Some("T48G")),
    case("y000000000066.cfg", None, Some(Yealink), ModelCommon, None, Some("T46S")),
    case("y000000000096.cfg", None, Some(Yealink), ModelCommon, None, Some("T54W")),
    case("y000000000025.cfg", None, Some(Yealink), ModelCommon, None, Some("W52P")),
    case("0015654aa937.cfg", None, Some(Yealink), DeviceConfig, Some("0015654aa937"), None),
    case("805ec0123456.cfg", None, Some(Yealink), DeviceConfig, Some("805ec0123456"), None),
    case("249ad8123456.cfg", None, Some(Yealink), DeviceConfig, Some("249ad8123456"), None),
    case("001565f429a4.cfg", Some(YEALINK_T5X_UA), Some(Yealink), DeviceConfig, Some("001565f429a4"), Some("T56A")),
    // Poly: <mac>.cfg, the master, <mac>-phone.cfg / -license.cfg / -directory.xml, firmware, log uploads
    case("0004f2abcd01.cfg", None, Some(Poly), DeviceConfig, Some("0004f2abcd01"), None),
    case("64167f000001.cfg", None, Some(Poly), DeviceConfig, Some("64167f000001"), None),
    case("/112233445566.cfg", Some(POLY_UA), Some(Poly), DeviceConfig, Some("112233445566"), Some("VVX 400")),
    case("000000000000.cfg", Some(POLY_UA), Some(Poly), Boot, None, Some("VVX 400")),
    case("0004f2abcd01-phone.cfg", None, Some(Poly), DeviceConfig, Some("0004f2abcd01"), None),
    case("0004f2abcd01-user.cfg", None, Some(Poly), Static, Some("0004f2abcd01"), Some("user")),
    case("0004f2abcd01-license.cfg", None, Some(Poly), Static, Some("0004f2abcd01"), None),
    case("0004f2abcd01-directory.xml", None, Some(Poly), PhoneDirectory, Some("0004f2abcd01"), None),
    case("0004f2abcd01-boot.log", None, Some(Poly), LogUpload, Some("0004f2abcd01"), None),
    case("0004f2abcd01-app.log", None, Some(Poly), LogUpload, Some("0004f2abcd01"), None),
    case("sip.ld", Some(POLY_UA), Some(Poly), Static, None, Some("VVX 400")),
    case("bootrom.ld", None, None, Static, None, None),
    // Cisco SPA / Linksys: spa$PSN.cfg, spa<mac>.cfg/.xml, init.cfg, ATA<MAC>.cnf.xml
    case("spa504g.cfg", None, Some(CiscoSpa), ModelCommon, None, Some("SPA504G")),
    case("/spa504g.cfg", Some(SPA_UA), Some(CiscoSpa), ModelCommon, Some("0002fdff2103"), Some("SPA508G")),
    case("spa001b54aa0001.cfg", None, Some(CiscoSpa), DeviceConfig, Some("001b54aa0001"), None),
    case("spa001b54aa0001.xml", None, Some(CiscoSpa), DeviceConfig, Some("001b54aa0001"), None),
    case("init.cfg", Some(LINKSYS_UA), Some(CiscoSpa), Boot, Some("88019fa42805"), Some("SPA942")),
    case("ATA001B54AA0001.cnf.xml", None, Some(CiscoSpa), DeviceConfig, Some("001b54aa0001"), None),
    // Cisco MPP: /$PSN.xml, /Cisco/$PN/$MA.cfg
    case("/8851-3PCC.xml", None, Some(CiscoMpp), ModelCommon, None, Some("CP-8851-3PCC")),
    case("/8841-3PCC.xml", Some(MPP_UA), Some(CiscoMpp), ModelCommon, Some("00562b043615"), Some("CP-8841-3PCC")),
    case("/Cisco/CP-8841-3PCC/00562b043615.cfg", None, Some(CiscoMpp), DeviceConfig, Some("00562b043615"), Some("CP-8841-3PCC")),
    case("00562b043615.xml", Some(MPP_UA), Some(CiscoMpp), DeviceConfig, Some("00562b043615"), Some("CP-8841-3PCC")),
    // Cisco enterprise: SEP<MAC>.cnf.xml, CTL/ITL files, XMLDefault, 79x0 SIP files
    case("SEP001B54AA0003.cnf.xml", None, Some(CiscoSep), DeviceConfig, Some("001b54aa0003"), None),
    case("CTLSEP001B54AA0003.tlv", None, Some(CiscoSep), Static, Some("001b54aa0003"), None),
    case("ITLSEP001B54AA0003.tlv", None, Some(CiscoSep), Static, Some("001b54aa0003"), None),
    case("ITLFile.tlv", None, Some(CiscoSep), Static, None, None),
    case("XMLDefault.cnf.xml", None, Some(CiscoSep), Boot, None, None),
    case("SIP001b54aa0003.cnf", None, Some(CiscoSep), DeviceConfig, Some("001b54aa0003"), None),
    case("SIPDefault.cnf", None, Some(CiscoSep), Boot, None, None),
    // Grandstream: cfg<mac>, cfg<mac>.bin, cfg<mac>.xml, cfg<model>.xml, cfg.xml
    case("cfg000b828aa872", None, Some(Grandstream), Static, Some("000b828aa872"), None),
    case("cfg000b828aa872.bin", None, Some(Grandstream), Static, Some("000b828aa872"), None),
    case("cfg000b828aa872.xml", Some(GS_UA), Some(Grandstream), DeviceConfig, Some("000b828aa872"), Some("GXP2135")),
    case("cfggxp2135.xml", None, Some(Grandstream), ModelCommon, None, Some("GXP2135")),
    case("cfg.xml", None, Some(Grandstream), Boot, None, None),
    // Snom: snom<model>.htm, snom<model>-<MAC>.htm, some setups <MAC>.xml
    case("snomD345.htm", None, Some(Snom), ModelCommon, None, Some("D345")),
    case("snomD345-000413A11FA7.htm", None, Some(Snom), DeviceConfig, Some("000413a11fa7"), Some("D345")),
    case("000413A11FA7.xml", None, Some(Snom), DeviceConfig, Some("000413a11fa7"), None),
    case("snomD785.htm", Some(SNOM_UA), Some(Snom), ModelCommon, Some("000413922d24"), Some("D785")),
    // Fanvil: <mac>.cfg, f0C00620000.cfg-style model files
    case("0c383e1a2b3c.cfg", None, Some(Fanvil), DeviceConfig, Some("0c383e1a2b3c"), None),
    case("f0C00620000.cfg", None, Some(Fanvil), ModelCommon, None, None),
    case("/0c383e1a2b3c.cfg", Some(FANVIL_UA), Some(Fanvil), DeviceConfig, Some("0c383e1a2b3c"), Some("X4")),
    // Shared shapes without a telling prefix or User-Agent stay undecided
    case("112233445566.cfg", None, None, DeviceConfig, Some("112233445566"), None),
    case("112233445566.xml", None, None, DeviceConfig, Some("112233445566"), None),
];

#[test]
fn every_vendor_fact_is_identified() {
    let mut failures = Vec::new();
    for c in CASES {
        match identify(c.path, c.ua) {
            Ok(id) => {
                let got = (
                    id.family,
                    id.kind,
                    id.mac.map(|m| m.to_string()),
                    id.model.clone(),
                );
                let want = (
                    c.family,
                    c.kind,
                    c.mac.map(str::to_string),
                    c.model.map(str::to_string),
                );
                if got != want {
                    failures.push(format!(
                        "{} (UA {:?}): got {got:?}, want {want:?}",
                        c.path, c.ua
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", c.path)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn user_agents_give_model_firmware_and_mac() {
    // (User-Agent, family, model, firmware, MAC)
    type Expected = (
        &'static str,
        Family,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: &[Expected] = &[
        (
            YEALINK_UA,
            Yealink,
            Some("T46G"),
            Some("28.72.0.1"),
            Some("0015654aa937"),
        ),
        (
            YEALINK_T5X_UA,
            Yealink,
            Some("T56A"),
            Some("58.80.0.25"),
            Some("001565f429a4"),
        ),
        (POLY_UA, Poly, Some("VVX 400"), Some("4.1.4.7430"), None),
        (
            SPA_UA,
            CiscoSpa,
            Some("SPA508G"),
            Some("7.4.4"),
            Some("0002fdff2103"),
        ),
        (
            LINKSYS_UA,
            CiscoSpa,
            Some("SPA942"),
            Some("6.1.5(a)"),
            Some("88019fa42805"),
        ),
        (
            MPP_UA,
            CiscoMpp,
            Some("CP-8841-3PCC"),
            Some("11.0"),
            Some("00562b043615"),
        ),
        (
            GS_UA,
            Grandstream,
            Some("GXP2135"),
            Some("1.0.7.97"),
            Some("000b828aa872"),
        ),
        (
            SNOM_UA,
            Snom,
            Some("D785"),
            Some("10.1.33.33"),
            Some("000413922d24"),
        ),
        (
            FANVIL_UA,
            Fanvil,
            Some("X4"),
            Some("2.10.2.6887"),
            Some("0c383e1a2b3c"),
        ),
    ];
    for (ua, family, model, firmware, mac) in cases {
        let parsed = parse_user_agent(ua).unwrap_or_else(|| panic!("not parsed: {ua}"));
        assert_eq!(parsed.family, *family, "{ua}");
        assert_eq!(parsed.model.as_deref(), *model, "{ua}");
        assert_eq!(parsed.firmware.as_deref(), *firmware, "{ua}");
        assert_eq!(parsed.mac.map(|m| m.to_string()).as_deref(), *mac, "{ua}");
    }
    for other in [
        "curl/8.5.0",
        "",
        "Mozilla/5.0 (X11; Linux x86_64)",
        "freeswitch-cidlookup/1.0",
    ] {
        assert_eq!(parse_user_agent(other), None, "{other}");
    }
}

#[test]
fn a_user_agent_of_another_family_is_not_believed() {
    // A Yealink UA asking for a Cisco SPA file name: the name wins, the UA's
    // model and MAC are not taken.
    let id = identify("spa001b54aa0001.cfg", Some(YEALINK_UA)).unwrap();
    assert_eq!(id.family, Some(CiscoSpa));
    assert_eq!(id.model, None);
    // The MAC in the path wins over the one in the User-Agent.
    let id = identify("0015654aa900.cfg", Some(YEALINK_UA)).unwrap();
    assert_eq!(id.mac.unwrap().to_string(), "0015654aa900");
}

#[test]
fn a_user_agent_of_another_family_gives_no_mac() {
    // A Snom model file asked with a Yealink User-Agent naming a Snom
    // phone's MAC: believing it would render that phone's file for anyone.
    let ua = "Yealink SIP-T46G 28.72.0.1 00:04:13:92:2d:24";
    let id = identify("snomD785.htm", Some(ua)).unwrap();
    assert_eq!(id.family, Some(Snom));
    assert_eq!(id.mac, None);
    assert_eq!(id.model.as_deref(), Some("D785"));
    assert_eq!(id.firmware, None);
    // On a name several families share, a foreign one decides nothing
    // either: the MAC comes from the path and the family from its prefix.
    let id = identify("spa504g.cfg", Some(ua)).unwrap();
    assert_eq!((id.mac, id.model.as_deref()), (None, Some("SPA504G")));
    let id = identify("000413922d24.xml", Some(YEALINK_UA)).unwrap();
    assert_eq!(id.family, Some(Snom));
    assert_eq!(id.mac.unwrap().to_string(), "000413922d24");
}

#[test]
fn unknown_names_are_not_found() {
    for path in [
        "hello.txt",
        "index.html",
        "000000000000.boot", // the all-zero MAC is nobody
        "0015654aa93.cfg",   // 11 hex digits
        "0015654aa9377.cfg", // 13
        "0015654aa93g.cfg",  // not hex
        "y00000000002.cfg",  // model code too short
        "SEP.cnf.xml",
        "snom.htm",
        "cfg",
        "",
        "/",
        "//",
        "./",
    ] {
        assert_eq!(
            identify(path, None),
            Err(IdentifyError::NotFound),
            "{path:?}"
        );
    }
}

#[test]
fn path_escapes_are_refused() {
    for path in [
        "../etc/passwd",
        "/../etc/passwd",
        "a/../../etc/shadow",
        "..",
        "configs/../0015654aa937.cfg",
        "..\\windows\\win.ini",
        "C:\\boot.ini",
        "c:/boot.ini",
        "file:///etc/passwd",
        "%2e%2e/etc/passwd",
        "0015654aa937.cfg\0.txt",
        "~root/.ssh/id_rsa",
        "line\nbreak.cfg",
    ] {
        assert!(
            matches!(identify(path, None), Err(IdentifyError::BadPath(_))),
            "{path:?} was not refused"
        );
    }
    let long = "a/".repeat(200) + "0015654aa937.cfg";
    assert!(matches!(
        identify(&long, None),
        Err(IdentifyError::BadPath(_))
    ));
    // A leading slash and doubled slashes are harmless and accepted.
    assert!(identify("//0015654aa937.cfg", None).is_ok());
}

#[test]
fn template_names_replace_placeholders() {
    for (path, template) in [
        ("0015654aa937.cfg", "{mac}.cfg"),
        ("SEP001B54AA0003.cnf.xml", "SEP{mac}.cnf.xml"),
        ("y000000000028.cfg", "y0000000000{code}.cfg"),
        ("spa504g.cfg", "spa{model}.cfg"),
        ("snomD345-000413A11FA7.htm", "snom{model}-{mac}.htm"),
        ("8851-3PCC.xml", "{model}-3PCC.xml"),
        ("000000000000.cfg", "000000000000.cfg"),
        ("sip.ld", ""),
    ] {
        assert_eq!(identify(path, None).unwrap().template, template, "{path}");
    }
}

//! Device identification: which phone asks for which file. Pure functions
//! over the request path (TFTP file name or HTTP path) and the HTTP
//! User-Agent, driven by the table in [`RULES`]. Facts come from
//! `docs/vendors.md`; the tests check its examples family by family.
//!
//! Identification never consults the database. Where a file name alone does
//! not tell the family (`<mac>.cfg` is Yealink, Poly and Fanvil), the
//! User-Agent or the MAC's vendor prefix decides if it can, and otherwise the
//! phone's own record does, later, in provisioning.

use std::fmt;

use dialtone_sync::{Family, Mac};

/// What kind of file a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Rendered for one phone (`<mac>.cfg`, `SEP<MAC>.cnf.xml`, …).
    DeviceConfig,
    /// Rendered once per model (`y000000000028.cfg`, `spa504g.cfg`, …).
    ModelCommon,
    /// The first file of a boot sequence (`y000000000000.boot`, Poly's
    /// master `000000000000.cfg`, `XMLDefault.cnf.xml`, …).
    Boot,
    /// The tenant's phone directory in the phone's format.
    PhoneDirectory,
    /// Firmware and other files served as they are from the static folder
    /// (or "not found" quickly: missing CTL/ITL files are normal).
    Static,
    /// A phone uploading a log (Poly `<mac>-app.log`).
    LogUpload,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::DeviceConfig => "device-config",
            FileKind::ModelCommon => "model-common",
            FileKind::Boot => "boot",
            FileKind::PhoneDirectory => "phone-directory",
            FileKind::Static => "static",
            FileKind::LogUpload => "log-upload",
        }
    }
}

/// What the User-Agent says, when it is one a phone sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserAgent {
    pub family: Family,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub mac: Option<Mac>,
}

/// The answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `None` when neither the file name, the User-Agent nor the MAC's
    /// vendor prefix tells; then the phone's record decides.
    pub family: Option<Family>,
    /// The family the User-Agent names, when it is one of `candidates`
    /// (another family's User-Agent is ignored, as evidence of nothing).
    pub ua_family: Option<Family>,
    /// The families this file name can belong to (one for most names).
    pub candidates: &'static [Family],
    pub kind: FileKind,
    pub mac: Option<Mac>,
    pub model: Option<String>,
    /// Model code from a model-common file name (Yealink `28`, Fanvil …).
    pub model_code: Option<String>,
    /// The model as the file name spells it (`504g` in `spa504g.cfg`),
    /// whatever the User-Agent says.
    pub file_model: Option<String>,
    pub firmware: Option<String>,
    /// The file name as requested, without directories.
    pub file: String,
    /// The template that renders it (`{mac}.cfg`, `SEP{mac}.cnf.xml`, …);
    /// empty for static files (matched by extension, or found in the
    /// static folder under a name no rule knows).
    pub template: &'static str,
}

/// Rules whose files real phones ask for and often do not find: trust
/// lists, Grandstream's binary configs, Poly's optional per-phone extras.
/// dialtone serves them only from the static folder, if at all.
const PROBES: &[&str] = &[
    "CTLSEP{mac}.tlv",
    "ITLSEP{mac}.tlv",
    "ITLFile.tlv",
    "cfg{mac}",
    "cfg{mac}.bin",
    "{mac}-license.cfg",
    "{mac}-{model}.cfg",
];

impl Identity {
    /// The file name carries the MAC (it is one phone's own file); otherwise
    /// any MAC came from the User-Agent.
    pub fn mac_in_path(&self) -> bool {
        self.template.contains("{mac}")
    }

    /// A name phones ask for on every boot and may not find: boot and model
    /// files a family probes, and the [`PROBES`].
    pub fn is_probe(&self) -> bool {
        matches!(self.kind, FileKind::Boot | FileKind::ModelCommon)
            || PROBES.contains(&self.template)
    }

    /// A file the operator put in the static folder under a name no rule
    /// knows (`ca.crt`, `sip.ver`, a Poly dictionary): served as it is, for
    /// no phone. No User-Agent is read for it, so no MAC there makes it a
    /// phone's fetch or a guess at one.
    pub(crate) fn unnamed_static(file: &str) -> Identity {
        Identity {
            family: None,
            ua_family: None,
            candidates: ANY,
            kind: FileKind::Static,
            mac: None,
            model: None,
            model_code: None,
            file_model: None,
            firmware: None,
            file: file.to_string(),
            template: "",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentifyError {
    /// Not a file any supported phone asks for. Reveals nothing more.
    NotFound,
    /// The path tries to leave the provisioning root or is malformed.
    BadPath(&'static str),
}

impl fmt::Display for IdentifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentifyError::NotFound => f.write_str("file not found"),
            IdentifyError::BadPath(why) => write!(f, "refused path: {why}"),
        }
    }
}

impl std::error::Error for IdentifyError {}

/// Longest path accepted; real requests are a few dozen bytes.
pub const MAX_PATH: usize = 255;

/// Splits a request path into its segments, refusing anything that could
/// leave the provisioning root. A leading `/` is stripped (TFTP clients send
/// both forms); `.`/empty segments are dropped.
pub fn sanitize_path(path: &str) -> Result<Vec<&str>, IdentifyError> {
    if path.len() > MAX_PATH {
        return Err(IdentifyError::BadPath("too long"));
    }
    if path.bytes().any(|b| b == 0 || b < 0x20 || b == 0x7f) {
        return Err(IdentifyError::BadPath("control character"));
    }
    if path.contains('\\') {
        return Err(IdentifyError::BadPath("backslash"));
    }
    if path.contains(':') {
        // Drive letters and URL schemes (`C:`, `file:`) have no place here.
        return Err(IdentifyError::BadPath("colon"));
    }
    if path.contains('%') {
        // Percent-decoding is the HTTP layer's job; a second round here
        // would let `%2e%2e` through.
        return Err(IdentifyError::BadPath("percent sign"));
    }
    let mut segments = Vec::new();
    for segment in path.trim_start_matches('/').split('/') {
        match segment {
            "" | "." => continue,
            ".." => return Err(IdentifyError::BadPath("parent directory")),
            s if s.starts_with('~') => return Err(IdentifyError::BadPath("home directory")),
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return Err(IdentifyError::NotFound);
    }
    Ok(segments)
}

// ---- the rule table ----

/// One pattern token. Literals match case-insensitively: phones differ in
/// case (`SEP…`, `spa…`) and nothing is gained by being strict.
#[derive(Clone, Copy, Debug)]
enum Tok {
    Lit(&'static str),
    /// 12 hex digits, any case, not all zero.
    Addr,
    /// Exactly n characters of [0-9A-Za-z].
    Code(usize),
    /// 1..=32 characters of [0-9A-Za-z_-], as few as let the rest match.
    Model,
}

use Tok::*;

struct Rule {
    /// The template name: the pattern with `{mac}`, `{code}`, `{model}` for
    /// its placeholders. Shipped and stored templates are found by it.
    name: &'static str,
    pattern: &'static [Tok],
    candidates: &'static [Family],
    kind: FileKind,
}

const YEALINK: &[Family] = &[Family::Yealink];
const POLY: &[Family] = &[Family::Poly];
const SPA: &[Family] = &[Family::CiscoSpa];
const MPP: &[Family] = &[Family::CiscoMpp];
const SEP: &[Family] = &[Family::CiscoSep];
const GRANDSTREAM: &[Family] = &[Family::Grandstream];
const SNOM: &[Family] = &[Family::Snom];
const FANVIL: &[Family] = &[Family::Fanvil];
const MAC_CFG: &[Family] = &[
    Family::Yealink,
    Family::Poly,
    Family::Fanvil,
    Family::CiscoMpp,
];
const MAC_XML: &[Family] = &[Family::CiscoMpp, Family::Snom];
const ANY: &[Family] = &[
    Family::Yealink,
    Family::Poly,
    Family::CiscoSpa,
    Family::CiscoMpp,
    Family::CiscoSep,
    Family::Grandstream,
    Family::Snom,
    Family::Fanvil,
];

/// First match wins, so specific names come before general ones
/// (`000000000000.cfg` before `<mac>.cfg`).
#[rustfmt::skip]
static RULES: &[Rule] = &[
    // Yealink
    Rule { name: "y000000000000.boot", pattern: &[Lit("y000000000000.boot")], candidates: YEALINK, kind: FileKind::Boot },
    Rule { name: "{mac}.boot", pattern: &[Addr, Lit(".boot")], candidates: YEALINK, kind: FileKind::Boot },
    Rule { name: "y0000000000{code}.cfg", pattern: &[Lit("y0000000000"), Code(2), Lit(".cfg")], candidates: YEALINK, kind: FileKind::ModelCommon },
    // Poly: the master file, per-phone extras, uploads
    Rule { name: "000000000000.cfg", pattern: &[Lit("000000000000.cfg")], candidates: POLY, kind: FileKind::Boot },
    Rule { name: "{mac}-directory.xml", pattern: &[Addr, Lit("-directory.xml")], candidates: ANY, kind: FileKind::PhoneDirectory },
    Rule { name: "{mac}-license.cfg", pattern: &[Addr, Lit("-license.cfg")], candidates: POLY, kind: FileKind::Static },
    Rule { name: "{mac}-boot.log", pattern: &[Addr, Lit("-boot.log")], candidates: POLY, kind: FileKind::LogUpload },
    Rule { name: "{mac}-app.log", pattern: &[Addr, Lit("-app.log")], candidates: POLY, kind: FileKind::LogUpload },
    Rule { name: "{mac}-phone.cfg", pattern: &[Addr, Lit("-phone.cfg")], candidates: POLY, kind: FileKind::DeviceConfig },
    Rule { name: "{mac}-{model}.cfg", pattern: &[Addr, Lit("-"), Model, Lit(".cfg")], candidates: POLY, kind: FileKind::Static },
    // Cisco SPA / Linksys and the ATA190
    Rule { name: "spa{mac}.cfg", pattern: &[Lit("spa"), Addr, Lit(".cfg")], candidates: SPA, kind: FileKind::DeviceConfig },
    Rule { name: "spa{mac}.xml", pattern: &[Lit("spa"), Addr, Lit(".xml")], candidates: SPA, kind: FileKind::DeviceConfig },
    Rule { name: "ATA{mac}.cnf.xml", pattern: &[Lit("ATA"), Addr, Lit(".cnf.xml")], candidates: SPA, kind: FileKind::DeviceConfig },
    Rule { name: "init.cfg", pattern: &[Lit("init.cfg")], candidates: SPA, kind: FileKind::Boot },
    Rule { name: "spa{model}.cfg", pattern: &[Lit("spa"), Model, Lit(".cfg")], candidates: SPA, kind: FileKind::ModelCommon },
    // Cisco enterprise (SEP)
    Rule { name: "SEP{mac}.cnf.xml", pattern: &[Lit("SEP"), Addr, Lit(".cnf.xml")], candidates: SEP, kind: FileKind::DeviceConfig },
    Rule { name: "SIP{mac}.cnf", pattern: &[Lit("SIP"), Addr, Lit(".cnf")], candidates: SEP, kind: FileKind::DeviceConfig },
    Rule { name: "CTLSEP{mac}.tlv", pattern: &[Lit("CTLSEP"), Addr, Lit(".tlv")], candidates: SEP, kind: FileKind::Static },
    Rule { name: "ITLSEP{mac}.tlv", pattern: &[Lit("ITLSEP"), Addr, Lit(".tlv")], candidates: SEP, kind: FileKind::Static },
    Rule { name: "ITLFile.tlv", pattern: &[Lit("ITLFile.tlv")], candidates: SEP, kind: FileKind::Static },
    Rule { name: "XMLDefault.cnf.xml", pattern: &[Lit("XMLDefault.cnf.xml")], candidates: SEP, kind: FileKind::Boot },
    Rule { name: "SIPDefault.cnf", pattern: &[Lit("SIPDefault.cnf")], candidates: SEP, kind: FileKind::Boot },
    // Grandstream: the XML files are rendered; the binary ones are static
    Rule { name: "cfg{mac}.xml", pattern: &[Lit("cfg"), Addr, Lit(".xml")], candidates: GRANDSTREAM, kind: FileKind::DeviceConfig },
    Rule { name: "cfg{mac}.bin", pattern: &[Lit("cfg"), Addr, Lit(".bin")], candidates: GRANDSTREAM, kind: FileKind::Static },
    Rule { name: "cfg{mac}", pattern: &[Lit("cfg"), Addr], candidates: GRANDSTREAM, kind: FileKind::Static },
    Rule { name: "cfg.xml", pattern: &[Lit("cfg.xml")], candidates: GRANDSTREAM, kind: FileKind::Boot },
    Rule { name: "cfg{model}.xml", pattern: &[Lit("cfg"), Model, Lit(".xml")], candidates: GRANDSTREAM, kind: FileKind::ModelCommon },
    // Snom
    Rule { name: "snom{model}-{mac}.htm", pattern: &[Lit("snom"), Model, Lit("-"), Addr, Lit(".htm")], candidates: SNOM, kind: FileKind::DeviceConfig },
    Rule { name: "snom{model}.htm", pattern: &[Lit("snom"), Model, Lit(".htm")], candidates: SNOM, kind: FileKind::ModelCommon },
    // Fanvil model-common files: `f` and a ten-character model code
    Rule { name: "f{code}.cfg", pattern: &[Lit("f"), Code(10), Lit(".cfg")], candidates: FANVIL, kind: FileKind::ModelCommon },
    // Cisco MPP: `$PSN.xml` (8851-3PCC.xml)
    Rule { name: "{model}-3PCC.xml", pattern: &[Model, Lit("-3PCC.xml")], candidates: MPP, kind: FileKind::ModelCommon },
    // Shared shapes, told apart by User-Agent or vendor prefix
    Rule { name: "{mac}.cfg", pattern: &[Addr, Lit(".cfg")], candidates: MAC_CFG, kind: FileKind::DeviceConfig },
    Rule { name: "{mac}.xml", pattern: &[Addr, Lit(".xml")], candidates: MAC_XML, kind: FileKind::DeviceConfig },
];

/// Firmware and other static files, by extension.
#[rustfmt::skip]
const STATIC_EXTENSIONS: &[&str] = &[".ld", ".rom", ".bin", ".loads", ".sbn", ".sgn", ".zip", ".img", ".wav", ".jpg", ".png", ".bmp"];

#[derive(Default)]
struct Captures<'a> {
    mac: Option<&'a str>,
    code: Option<&'a str>,
    model: Option<&'a str>,
}

fn match_tokens<'a>(tokens: &[Tok], input: &'a str, caps: &mut Captures<'a>) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return input.is_empty();
    };
    match *first {
        Lit(lit) => {
            input.len() >= lit.len()
                && input.is_char_boundary(lit.len())
                && input[..lit.len()].eq_ignore_ascii_case(lit)
                && match_tokens(rest, &input[lit.len()..], caps)
        }
        Addr => {
            let ok = input.len() >= 12
                && input.as_bytes()[..12].iter().all(u8::is_ascii_hexdigit)
                && input.as_bytes()[..12].iter().any(|b| *b != b'0');
            if ok && match_tokens(rest, &input[12..], caps) {
                caps.mac = Some(&input[..12]);
                return true;
            }
            false
        }
        Code(n) => {
            let ok =
                input.len() >= n && input.as_bytes()[..n].iter().all(u8::is_ascii_alphanumeric);
            if ok && match_tokens(rest, &input[n..], caps) {
                caps.code = Some(&input[..n]);
                return true;
            }
            false
        }
        Model => {
            let max = input
                .bytes()
                .take(32)
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
                .count();
            for len in 1..=max {
                if match_tokens(rest, &input[len..], caps) {
                    caps.model = Some(&input[..len]);
                    return true;
                }
            }
            false
        }
    }
}

/// Yealink's per-model codes in `y0000000000XX.cfg` (docs/vendors.md).
#[rustfmt::skip]
const YEALINK_CODES: &[(&str, &str)] = &[("28", "T46G"), ("35", "T48G"), ("66", "T46S"), ("96", "T54W"), ("25", "W52P")];

/// Vendor prefixes (OUIs) seen on each family's phones.
const OUIS: &[(u32, Family)] = &[
    (0x001565, Family::Yealink),
    (0x805ec0, Family::Yealink),
    (0x249ad8, Family::Yealink),
    (0x0004f2, Family::Poly),
    (0x64167f, Family::Poly),
    (0x000b82, Family::Grandstream),
    (0xc074ad, Family::Grandstream),
    (0x000413, Family::Snom),
    (0x0c383e, Family::Fanvil),
];

/// The family a MAC's vendor prefix points to, among `candidates`. Cisco's
/// prefixes are shared by SPA, MPP and enterprise phones, so they tell
/// nothing here.
pub fn family_by_oui(mac: &Mac, candidates: &[Family]) -> Option<Family> {
    OUIS.iter()
        .find(|(oui, family)| *oui == mac.oui() && candidates.contains(family))
        .map(|(_, family)| *family)
}

/// Identifies a request. `path` is the TFTP file name or the HTTP path
/// (already percent-decoded); `user_agent` the HTTP User-Agent, if any.
pub fn identify(path: &str, user_agent: Option<&str>) -> Result<Identity, IdentifyError> {
    let segments = sanitize_path(path)?;
    let file = *segments.last().ok_or(IdentifyError::NotFound)?;
    let ua = user_agent.and_then(parse_user_agent);

    // Cisco MPP fallback: `Cisco/<product>/<mac>.cfg`.
    let mpp_dir = segments.len() >= 3
        && segments[segments.len() - 3].eq_ignore_ascii_case("cisco")
        && segments[segments.len() - 2]
            .to_ascii_uppercase()
            .starts_with("CP-");

    let mut identity = None;
    for rule in RULES {
        let mut caps = Captures::default();
        if match_tokens(rule.pattern, file, &mut caps) {
            identity = Some((rule, caps));
            break;
        }
    }
    let (candidates, kind, caps, template) = match identity {
        Some((rule, caps))
            if mpp_dir && rule.kind == FileKind::DeviceConfig && caps.mac.is_some() =>
        {
            (MPP, FileKind::DeviceConfig, caps, rule.name)
        }
        Some((rule, caps)) => (rule.candidates, rule.kind, caps, rule.name),
        None => {
            let lower = file.to_ascii_lowercase();
            if STATIC_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) {
                (ANY, FileKind::Static, Captures::default(), "")
            } else {
                return Err(IdentifyError::NotFound);
            }
        }
    };

    // A User-Agent from another family than the file name allows is not
    // evidence of anything, its MAC included: ignore it rather than guess,
    // or one phone's name would fetch another phone's file.
    let ua = ua.filter(|u| candidates.contains(&u.family));
    let mac_from_path = caps.mac.and_then(|m| m.parse::<Mac>().ok());
    let mac = mac_from_path.or_else(|| ua.as_ref().and_then(|u| u.mac));
    let family = if candidates.len() == 1 {
        Some(candidates[0])
    } else {
        ua.as_ref()
            .map(|u| u.family)
            .or_else(|| mac.and_then(|m| family_by_oui(&m, candidates)))
    };

    let mut model = ua.as_ref().and_then(|u| u.model.clone());
    let mut model_code = None;
    if let Some(code) = caps.code {
        model_code = Some(code.to_string());
        if family == Some(Family::Yealink) && model.is_none() {
            model = YEALINK_CODES
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, m)| m.to_string());
        }
    }
    if model.is_none() {
        model = caps.model.map(|m| model_from_file(family, m));
    }
    if mpp_dir && model.is_none() {
        model = Some(segments[segments.len() - 2].to_ascii_uppercase());
    }
    Ok(Identity {
        family,
        ua_family: ua.as_ref().map(|u| u.family),
        candidates,
        kind,
        mac,
        model,
        model_code,
        file_model: caps.model.map(str::to_string),
        firmware: ua.and_then(|u| u.firmware),
        file: file.to_string(),
        template,
    })
}

/// Every rendered file name a phone of `family` may request: the rules'
/// template names with the phone's MAC, model and model code filled in,
/// spelled the way that family spells them. Names whose placeholder cannot
/// be filled (an unknown model code) are left out. `render --all` asks the
/// provisioning core for each; the core decides which exist.
/// The names of the templates that render `family`'s files (boot, model
/// and device files): what a stored template's `file_pattern` may be.
pub fn template_names(family: Family) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = RULES
        .iter()
        .filter(|r| {
            r.candidates.contains(&family)
                && matches!(
                    r.kind,
                    FileKind::Boot | FileKind::ModelCommon | FileKind::DeviceConfig
                )
        })
        .map(|r| r.name)
        .collect();
    names.dedup();
    names
}

pub fn file_names(family: Family, mac: &Mac, model: Option<&str>) -> Vec<String> {
    let lower = mac.to_string();
    let upper = lower.to_ascii_uppercase();
    let model = model.unwrap_or_default();
    let model_in_file = model_in_file(family, model);
    let code = match family {
        Family::Yealink => YEALINK_CODES
            .iter()
            .find(|(_, m)| *m == model)
            .map(|(c, _)| *c),
        _ => None,
    };
    let rendered = [
        FileKind::Boot,
        FileKind::ModelCommon,
        FileKind::DeviceConfig,
        FileKind::PhoneDirectory,
    ];
    let mut names = Vec::new();
    for rule in RULES
        .iter()
        .filter(|r| r.candidates.contains(&family) && rendered.contains(&r.kind))
    {
        let upper_mac = ["SEP", "SIP", "ATA", "snom"]
            .iter()
            .any(|p| rule.name.starts_with(p));
        let mut name = rule
            .name
            .replace("{mac}", if upper_mac { &upper } else { &lower });
        if name.contains("{model}") {
            if model_in_file.is_empty() {
                continue;
            }
            name = name.replace("{model}", &model_in_file);
        }
        if name.contains("{code}") {
            // The common file every Yealink's boot file includes
            // (`y000000000000.cfg`) beside its model's own, when known.
            let common = name.replace("{code}", "00");
            if !names.contains(&common) {
                names.push(common);
            }
            let Some(code) = code else { continue };
            name = name.replace("{code}", code);
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A model as `family`'s file names spell it (`SPA504G` is `504g`,
/// `CP-8851-3PCC` is `8851`).
pub(crate) fn model_in_file(family: Family, model: &str) -> String {
    match family {
        Family::CiscoSpa => model.trim_start_matches("SPA").to_ascii_lowercase(),
        Family::CiscoMpp => model
            .trim_start_matches("CP-")
            .trim_end_matches("-3PCC")
            .to_string(),
        Family::Grandstream => model.to_ascii_lowercase(),
        _ => model.to_string(),
    }
}

/// Turns a model as it appears in a file name into the model's usual name.
fn model_from_file(family: Option<Family>, raw: &str) -> String {
    match family {
        Some(Family::CiscoSpa) => format!("SPA{}", raw.to_ascii_uppercase()),
        Some(Family::CiscoMpp) => format!("CP-{}-3PCC", raw.to_ascii_uppercase()),
        // Poly's `<mac>-<suffix>.cfg` suffix is a file variant, not a model.
        Some(Family::Poly) => raw.to_string(),
        _ => raw.to_ascii_uppercase(),
    }
}

// ---- User-Agents ----

fn mac_in(text: &str) -> Option<Mac> {
    let trimmed = text.trim_matches(|c: char| c == '(' || c == ')');
    let hexish = trimmed.len() == 12 || trimmed.len() == 17;
    if !hexish {
        return None;
    }
    trimmed.parse().ok().filter(|m: &Mac| m.0 != [0; 6])
}

/// Longest User-Agent read. Phones send under 100 bytes; a longer one is
/// a client's own text that would otherwise ride along, whole, into the
/// history queue and rows, the unclaimed-device queue and cached renders'
/// inputs. One past this is read as no User-Agent.
pub const MAX_USER_AGENT: usize = 512;

/// Reads the User-Agent formats of docs/vendors.md. Anything else is `None`.
pub fn parse_user_agent(ua: &str) -> Option<UserAgent> {
    let ua = ua.trim();
    let words: Vec<&str> = ua.split_whitespace().collect();
    // Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37
    if let Some(rest) = ua.strip_prefix("Yealink ") {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let model = words.first().map(|m| {
            m.trim_start_matches("SIP-")
                .trim_start_matches("SIP")
                .to_string()
        });
        return Some(UserAgent {
            family: Family::Yealink,
            model: model.filter(|m| !m.is_empty()),
            firmware: words.get(1).map(|s| s.to_string()),
            mac: words.iter().skip(1).find_map(|w| mac_in(w)),
        });
    }
    // FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application
    if let Some(word) = words.iter().find(|w| w.starts_with("Polycom")) {
        let (product, firmware) = word.split_once('/').unwrap_or((word, ""));
        let model = product.split('-').nth(1).map(|m| m.replace('_', " "));
        return Some(UserAgent {
            family: Family::Poly,
            model,
            firmware: (!firmware.is_empty()).then(|| firmware.to_string()),
            mac: None,
        });
    }
    // Cisco-CP-8841-3PCC/11.0 (00562b043615)
    if let Some(rest) = ua.strip_prefix("Cisco-CP-") {
        let (product, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let firmware = tail.split_whitespace().next().map(str::to_string);
        return Some(UserAgent {
            family: Family::CiscoMpp,
            model: Some(format!("CP-{product}")),
            firmware,
            mac: words.iter().find_map(|w| mac_in(w)),
        });
    }
    // Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400UK); Linksys/SPA-942-6.1.5(a) (88019FA42805)
    for prefix in ["Cisco/", "Linksys/"] {
        if let Some(rest) = ua.strip_prefix(prefix) {
            let product = rest.split_whitespace().next().unwrap_or("");
            let (model, firmware) = match product.rfind('-') {
                Some(i) if product[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => {
                    (&product[..i], Some(product[i + 1..].to_string()))
                }
                _ => (product, None),
            };
            let mac = rest.split(['(', ')']).map(str::trim).find_map(mac_in);
            return Some(UserAgent {
                family: Family::CiscoSpa,
                model: (!model.is_empty()).then(|| model.replace('-', "")),
                firmware,
                mac,
            });
        }
    }
    // Grandstream Model HW GXP2135 SW 1.0.7.97 DevId 000b828aa872
    if ua.starts_with("Grandstream") {
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .map(|s| s.to_string())
        };
        return Some(UserAgent {
            family: Family::Grandstream,
            model: after("HW"),
            firmware: after("SW"),
            mac: after("DevId").and_then(|m| mac_in(&m)),
        });
    }
    // Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413922D24 SXM:0 UXM:0)
    if let Some(i) = words.iter().position(|w| w.starts_with("snom")) {
        let model = words[i]
            .trim_start_matches("snom")
            .trim_end_matches("-SIP")
            .to_string();
        return Some(UserAgent {
            family: Family::Snom,
            model: (!model.is_empty()).then_some(model),
            firmware: words.get(i + 1).map(|s| s.to_string()),
            mac: words.iter().skip(i + 1).find_map(|w| mac_in(w)),
        });
    }
    // Fanvil X4 2.10.2.6887 0c383e1a2b3c
    if let Some(rest) = ua.strip_prefix("Fanvil ") {
        let words: Vec<&str> = rest.split_whitespace().collect();
        return Some(UserAgent {
            family: Family::Fanvil,
            model: words.first().map(|s| s.to_string()),
            firmware: words.get(1).map(|s| s.to_string()),
            mac: words.iter().skip(1).find_map(|w| mac_in(w)),
        });
    }
    None
}

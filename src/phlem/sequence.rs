//! What each family's phones request at boot, in order, and the User-Agent
//! they send (from docs/vendors.md). A step may depend on an earlier
//! answer: Poly phones fetch the files their master file names.

use dialtone_sync::{Family, Mac};

/// One phone to emulate.
#[derive(Clone, Debug)]
pub struct Phone {
    pub mac: Mac,
    pub family: Family,
    pub model: String,
    /// Device HTTP credentials, for Digest challenges.
    pub credentials: Option<(String, String)>,
    /// The first line's address of record, registered with `--sip-proxy`.
    pub aor: Option<super::sip::Aor>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The request path, without a leading slash.
    pub file: String,
    /// The file's pattern, for per-step statistics (`{mac}.cfg`).
    pub pattern: &'static str,
    /// Real phones ask for it and carry on when it is missing (Cisco CTL/ITL
    /// files, Grandstream's binary config).
    pub may_be_missing: bool,
}

fn step(file: String, pattern: &'static str) -> Step {
    Step {
        file,
        pattern,
        may_be_missing: false,
    }
}

fn optional(file: String, pattern: &'static str) -> Step {
    Step {
        file,
        pattern,
        may_be_missing: true,
    }
}

/// Yealink's model-common file codes (docs/vendors.md).
const YEALINK_CODES: &[(&str, &str)] = &[
    ("T46G", "28"),
    ("T48G", "35"),
    ("T46S", "66"),
    ("T54W", "96"),
    ("W52P", "25"),
];

/// Cisco SPA/MPP names carry the bare model: `SPA504G` → `spa504g.cfg`,
/// `CP-8841-3PCC` → `8841-3PCC.xml`.
fn cisco_model(model: &str) -> String {
    model
        .trim_start_matches("SPA")
        .trim_start_matches("CP-")
        .trim_end_matches("-3PCC")
        .to_string()
}

impl Phone {
    fn mac_lower(&self) -> String {
        self.mac.to_string()
    }

    fn mac_upper(&self) -> String {
        self.mac.to_string().to_ascii_uppercase()
    }

    fn mac_colon(&self) -> String {
        let hex = self.mac_lower();
        (0..6)
            .map(|i| &hex[i * 2..i * 2 + 2])
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The boot sequence before any answer is known.
    pub fn sequence(&self) -> Vec<Step> {
        let (mac, upper, model) = (self.mac_lower(), self.mac_upper(), self.model.as_str());
        match self.family {
            Family::Yealink => {
                let mut steps = vec![step(format!("{mac}.boot"), "{mac}.boot")];
                if let Some((_, code)) = YEALINK_CODES.iter().find(|(m, _)| *m == model) {
                    steps.push(step(
                        format!("y0000000000{code}.cfg"),
                        "y0000000000{code}.cfg",
                    ));
                }
                steps.push(step(format!("{mac}.cfg"), "{mac}.cfg"));
                steps
            }
            // The master file names the rest (see `follow_ups`).
            Family::Poly => vec![step(format!("{mac}.cfg"), "{mac}.cfg")],
            Family::CiscoSpa => vec![
                step(
                    format!("spa{}.cfg", cisco_model(model).to_ascii_lowercase()),
                    "spa{model}.cfg",
                ),
                step(format!("spa{mac}.cfg"), "spa{mac}.cfg"),
            ],
            Family::CiscoMpp => vec![
                step(
                    format!("{}-3PCC.xml", cisco_model(model)),
                    "{model}-3PCC.xml",
                ),
                step(format!("{mac}.xml"), "{mac}.xml"),
            ],
            Family::CiscoSep => vec![
                optional(format!("CTLSEP{upper}.tlv"), "CTLSEP{MAC}.tlv"),
                optional(format!("ITLSEP{upper}.tlv"), "ITLSEP{MAC}.tlv"),
                step(format!("SEP{upper}.cnf.xml"), "SEP{MAC}.cnf.xml"),
            ],
            Family::Grandstream => vec![
                optional(format!("cfg{mac}"), "cfg{mac}"),
                step(format!("cfg{mac}.xml"), "cfg{mac}.xml"),
                step(
                    format!("cfg{}.xml", model.to_ascii_lowercase()),
                    "cfg{model}.xml",
                ),
                step("cfg.xml".into(), "cfg.xml"),
            ],
            Family::Snom => vec![
                step(format!("snom{model}.htm"), "snom{model}.htm"),
                step(format!("snom{model}-{upper}.htm"), "snom{model}-{MAC}.htm"),
            ],
            Family::Fanvil => vec![step(format!("{mac}.cfg"), "{mac}.cfg")],
        }
    }

    /// Steps an answer adds: a Poly master file's `CONFIG_FILES`.
    pub fn follow_ups(&self, answered: &Step, body: &[u8]) -> Vec<Step> {
        if self.family != Family::Poly || answered.pattern != "{mac}.cfg" {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(body);
        let Some(start) = text.find("CONFIG_FILES=\"") else {
            return Vec::new();
        };
        let rest = &text[start + "CONFIG_FILES=\"".len()..];
        let list = &rest[..rest.find('"').unwrap_or(rest.len())];
        let mut steps = vec![step("000000000000.cfg".into(), "000000000000.cfg")];
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let file = name.replace("[PHONE_MAC_ADDRESS]", &self.mac_lower());
            // Paths from a config file: never let one climb out of the root.
            if file.split('/').any(|s| s == "..") {
                continue;
            }
            steps.push(step(file, "{mac}-phone.cfg"));
        }
        steps
    }

    pub fn user_agent(&self) -> String {
        let model = self.model.as_str();
        match self.family {
            Family::Yealink => format!("Yealink SIP-{model} 66.86.0.15 {}", self.mac_colon()),
            Family::Poly => format!(
                "FileTransport PolycomVVX-{}-UA/6.4.3.5018 Type/Application",
                model.replace(' ', "_")
            ),
            Family::CiscoSpa => format!("Cisco/{model}-7.6.2 ({})(CBT141400UK)", self.mac_upper()),
            Family::CiscoMpp => format!("Cisco-{model}/11.3.7 ({})", self.mac_lower()),
            Family::CiscoSep => format!("Cisco Systems, Inc. IP Phone {model}"),
            Family::Grandstream => format!(
                "Grandstream Model HW {model} SW 1.0.11.3 DevId {}",
                self.mac_lower()
            ),
            Family::Snom => format!(
                "Mozilla/4.0 (compatible; snom{model}-SIP 10.1.54.13 {} SXM:0 UXM:0)",
                self.mac_upper()
            ),
            Family::Fanvil => format!("Fanvil {model} 2.12.1 {}", self.mac_lower()),
        }
    }

    /// Whether `body` looks like a config of this family: not empty, and
    /// XML where the family speaks XML.
    pub fn well_formed(&self, step: &Step, body: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(body);
        let text = text.trim_start_matches('\u{feff}').trim_start();
        if text.is_empty() {
            return Err("empty".into());
        }
        let xml = match self.family {
            Family::Yealink | Family::Fanvil => false,
            Family::CiscoSpa => step.file.ends_with(".xml") || step.pattern == "spa{mac}.cfg",
            _ => true,
        };
        if xml && !text.starts_with('<') {
            return Err("not XML".into());
        }
        if self.family == Family::Yealink && !text.starts_with("#!version:") {
            return Err("no #!version line".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn sequences_follow_the_vendor_facts() {
        let yealink = phone("00:15:65:4a:a9:37", Family::Yealink, "T46S");
        let files: Vec<String> = yealink.sequence().into_iter().map(|s| s.file).collect();
        assert_eq!(
            files,
            ["0015654aa937.boot", "y000000000066.cfg", "0015654aa937.cfg"]
        );
        assert_eq!(
            yealink.user_agent(),
            "Yealink SIP-T46S 66.86.0.15 00:15:65:4a:a9:37"
        );
        let sep = phone("00:1b:54:aa:00:03", Family::CiscoSep, "CP-7941G");
        assert_eq!(sep.sequence()[2].file, "SEP001B54AA0003.cnf.xml");
        assert!(sep.sequence()[0].may_be_missing);
        let mpp = phone("00:62:ec:aa:00:02", Family::CiscoMpp, "CP-8841-3PCC");
        assert_eq!(mpp.sequence()[0].file, "8841-3PCC.xml");
        let spa = phone("00:1b:54:aa:00:01", Family::CiscoSpa, "SPA504G");
        assert_eq!(spa.sequence()[0].file, "spa504g.cfg");
    }

    #[test]
    fn poly_fetches_what_its_master_file_names() {
        let poly = phone("00:04:f2:ab:cd:01", Family::Poly, "VVX 450");
        let first = &poly.sequence()[0];
        let master = br#"<APPLICATION APP_FILE_PATH="sip.ld" CONFIG_FILES="[PHONE_MAC_ADDRESS]-phone.cfg, ../etc/passwd"/>"#;
        let files: Vec<String> = poly
            .follow_ups(first, master)
            .into_iter()
            .map(|s| s.file)
            .collect();
        assert_eq!(files, ["000000000000.cfg", "0004f2abcd01-phone.cfg"]);
    }
}

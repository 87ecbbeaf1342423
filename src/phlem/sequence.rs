//! What each family's phones request at boot, in order, and the User-Agent
//! they send (from docs/vendors.md). Where the firmware asks for what a
//! served file names (a Yealink boot file's includes, a Cisco SPA's profile
//! rule, a Poly master file's list), `follow.rs` reads the answer; where it
//! falls back on a fixed name when a file is missing, `after_missing` says
//! what it asks for next.

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

pub(super) fn step(file: String, pattern: &'static str) -> Step {
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
pub(super) fn cisco_model(model: &str) -> String {
    model
        .trim_start_matches("SPA")
        .trim_start_matches("CP-")
        .trim_end_matches("-3PCC")
        .to_string()
}

impl Phone {
    pub(super) fn mac_lower(&self) -> String {
        self.mac.to_string()
    }

    pub(super) fn mac_upper(&self) -> String {
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
            // The boot file names the rest (`follow_ups`), or its absence
            // sends the phone to fixed names (`after_missing`).
            Family::Yealink => vec![step(format!("{mac}.boot"), "{mac}.boot")],
            // The master file names the rest.
            Family::Poly => vec![step(format!("{mac}.cfg"), "{mac}.cfg")],
            // The model file's profile rule names the phone's own file.
            Family::CiscoSpa => vec![step(
                format!("spa{}.cfg", cisco_model(model).to_ascii_lowercase()),
                "spa{model}.cfg",
            )],
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

    /// What the firmware asks for when `missing` is not found: a Yealink
    /// without its own boot file tries the one for every phone, and without
    /// either the model's common file and its own; an SPA whose model file
    /// is missing, its own file under the name PHLEM always used.
    pub fn after_missing(&self, missing: &Step) -> Vec<Step> {
        let mac = self.mac_lower();
        match (self.family, missing.pattern) {
            (Family::Yealink, "{mac}.boot") => {
                vec![step("y000000000000.boot".into(), "y000000000000.boot")]
            }
            (Family::Yealink, "y000000000000.boot") => {
                let mut steps = Vec::new();
                if let Some((_, code)) = YEALINK_CODES.iter().find(|(m, _)| *m == self.model) {
                    steps.push(step(
                        format!("y0000000000{code}.cfg"),
                        "y0000000000{code}.cfg",
                    ));
                }
                steps.push(step(format!("{mac}.cfg"), "{mac}.cfg"));
                steps
            }
            (Family::CiscoSpa, "spa{model}.cfg") => vec![self.spa_device_cfg()],
            _ => Vec::new(),
        }
    }

    pub(super) fn spa_device_cfg(&self) -> Step {
        step(format!("spa{}.cfg", self.mac_lower()), "spa{mac}.cfg")
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
        let files = |steps: Vec<Step>| steps.into_iter().map(|s| s.file).collect::<Vec<_>>();
        assert_eq!(files(yealink.sequence()), ["0015654aa937.boot"]);
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
        assert_eq!(files(spa.sequence()), ["spa504g.cfg"]);
    }

    #[test]
    fn missing_files_send_phones_to_the_fixed_names() {
        let yealink = phone("00:15:65:4a:a9:37", Family::Yealink, "T46S");
        let own_boot = yealink.sequence().remove(0);
        let common_boot = yealink.after_missing(&own_boot);
        assert_eq!(common_boot[0].file, "y000000000000.boot");
        let files: Vec<String> = yealink
            .after_missing(&common_boot[0])
            .into_iter()
            .map(|s| s.file)
            .collect();
        assert_eq!(files, ["y000000000066.cfg", "0015654aa937.cfg"]);
        // A model without a known code has no model file to ask for.
        let unknown = phone("00:15:65:4a:a9:38", Family::Yealink, "T99X");
        assert_eq!(unknown.after_missing(&common_boot[0]).len(), 1);
        assert!(yealink
            .after_missing(&common_boot[0])
            .iter()
            .all(|s| yealink.after_missing(s).is_empty()));
        let spa = phone("00:1b:54:aa:00:01", Family::CiscoSpa, "SPA504G");
        let model_file = spa.sequence().remove(0);
        assert_eq!(
            spa.after_missing(&model_file)[0].file,
            "spa001b54aa0001.cfg"
        );
    }
}

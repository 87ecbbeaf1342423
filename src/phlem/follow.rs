//! What phones fetch because a served file told them to: the files a
//! Yealink boot file includes, the `Profile_Rule` a Cisco SPA model file
//! sets, the `CONFIG_FILES` a Poly master file lists. Served files come
//! from the server under test, which may be misconfigured or a tenant's
//! template: PHLEM follows them only to the server it was pointed at, never
//! out of that server's root, and only so many per boot.

use std::net::IpAddr;

use dialtone_sync::Family;

use super::sequence::{cisco_model, step, Phone, Step};

/// Files one boot fetches because served files named them. A real phone
/// would fetch every one, but a storm must end whatever a template says;
/// more is reported as `over_cap`. The shipped templates name two at most.
pub const MAX_FOLLOW_UPS: usize = 8;

/// Longer references are not file names any shipped template writes, and
/// would fill the report's re-fetch lists.
const MAX_REFERENCE: usize = 255;

/// Why a reference was not followed (a failure reason in the report).
pub const OTHER_HOST: &str = "other_host";
pub const UNFOLLOWABLE: &str = "unfollowable";

/// A reference in a served file that PHLEM did not fetch, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfollowed {
    pub pattern: &'static str,
    pub reference: String,
    pub reason: &'static str,
}

/// The server PHLEM fetches from, in the ways a served file may name it.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The target's host as written and the addresses it resolved to,
    /// normalised by `host_key`.
    hosts: Vec<String>,
    /// The target URL's path without its trailing slash: files are fetched
    /// under it, so an absolute URL must point under it too.
    base_path: String,
}

/// One spelling per host: lowercase names, addresses as `IpAddr` prints
/// them (hosts of `tftp://` URLs, a scheme the URL standard does not know,
/// come as names even when they are addresses).
fn host_key(host: url::Host<&str>) -> String {
    match host {
        url::Host::Domain(name) => match name.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => name.to_ascii_lowercase(),
        },
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    }
}

impl Origin {
    /// `target` is `--target` as given; `addresses` what its host resolved
    /// to, so that a file naming the server by address matches a target
    /// given by name, and the other way round.
    pub fn new(target: &str, addresses: impl IntoIterator<Item = IpAddr>) -> Origin {
        let mut origin = Origin::default();
        if let Ok(url) = url::Url::parse(target) {
            if let Some(host) = url.host() {
                origin.hosts.push(host_key(host));
            }
            origin.base_path = url.path().trim_end_matches('/').to_string();
        }
        origin
            .hosts
            .extend(addresses.into_iter().map(|ip| ip.to_string()));
        origin
    }

    /// The file `reference` names, as PHLEM requests it from the target. A
    /// bare name is relative to the target; a URL must name the target's
    /// host (whatever its scheme and port: dialtone serves the same files
    /// over TFTP and HTTP, and PHLEM keeps the transport it was given).
    pub fn file_for(&self, reference: &str) -> Result<String, &'static str> {
        let reference = reference.trim();
        if reference.len() > MAX_REFERENCE || reference.chars().any(char::is_control) {
            return Err(UNFOLLOWABLE);
        }
        let path = if reference.contains("://") {
            let url = url::Url::parse(reference).map_err(|_| UNFOLLOWABLE)?;
            if !matches!(url.scheme(), "http" | "https" | "tftp") {
                return Err(UNFOLLOWABLE);
            }
            let host = url.host().map(host_key).ok_or(UNFOLLOWABLE)?;
            if !self.hosts.contains(&host) {
                return Err(OTHER_HOST);
            }
            url.path()
                .strip_prefix(self.base_path.as_str())
                .filter(|rest| rest.starts_with('/'))
                .ok_or(UNFOLLOWABLE)?
                .to_string()
        } else {
            reference.to_string()
        };
        let file = path.trim_start_matches('/');
        // Never let a served file climb out of the root (nor out of a
        // `--verify` folder, where the expected bytes are read).
        if file.is_empty() || file.split(['/', '\\']).any(|s| s == "..") {
            return Err(UNFOLLOWABLE);
        }
        Ok(file.to_string())
    }
}

/// The step for `reference`, or why not. `pattern` names the step in the
/// report from the file; an unfollowed reference gets the catch-all.
fn followed(
    reference: &str,
    file: Result<String, &'static str>,
    pattern: impl Fn(&str) -> &'static str,
) -> Result<Step, Unfollowed> {
    match file {
        Ok(file) => Ok(step(file.clone(), pattern(&file))),
        Err(reason) => Err(Unfollowed {
            pattern: pattern(""),
            reference: reference.chars().take(MAX_REFERENCE).collect(),
            reason,
        }),
    }
}

/// The quoted names of a Yealink boot file's `include:config` lines, in
/// order; a line without its quotes is kept as an error, to be reported.
fn yealink_includes(text: &str) -> Vec<Result<&str, &str>> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("include:config")?.trim();
            let quoted = rest.strip_prefix('"').and_then(|q| q.split_once('"'));
            Some(quoted.map(|(name, _)| name).ok_or(rest))
        })
        .collect()
}

/// The text of a Cisco flat profile's `Profile_Rule` element, if it has
/// one that is not empty.
fn profile_rule(text: &str) -> Option<&str> {
    let start = text.find("<Profile_Rule")?;
    let rest = &text[start + "<Profile_Rule".len()..];
    // `<Profile_Rule ua="na">` as well as `<Profile_Rule>`.
    if !rest.starts_with(['>', ' ', '\t', '\r', '\n']) {
        return None;
    }
    let rest = &rest[rest.find('>')? + 1..];
    let rule = rest[..rest.find("</Profile_Rule>")?].trim();
    // Options such as `[--key …]` come before the URL.
    let rule = match rule.strip_prefix('[') {
        Some(options) => options.split_once(']')?.1.trim(),
        None => rule,
    };
    (!rule.is_empty()).then_some(rule)
}

impl Phone {
    /// Steps an answer adds, and the references in it PHLEM will not follow.
    pub fn follow_ups(
        &self,
        answered: &Step,
        body: &[u8],
        origin: &Origin,
    ) -> Vec<Result<Step, Unfollowed>> {
        let text = String::from_utf8_lossy(body);
        match (self.family, answered.pattern) {
            (Family::Yealink, "{mac}.boot" | "y000000000000.boot") => yealink_includes(&text)
                .into_iter()
                .map(|include| {
                    let reference = include.unwrap_or_else(|raw| raw);
                    let file = include.map_err(|_| UNFOLLOWABLE);
                    followed(reference, file.and_then(|r| origin.file_for(r)), |f| {
                        self.yealink_pattern(f)
                    })
                })
                .collect(),
            (Family::CiscoSpa, "spa{model}.cfg") => match profile_rule(&text) {
                Some(rule) => {
                    let file = self.expand_spa_macros(rule);
                    vec![followed(
                        rule,
                        file.and_then(|r| origin.file_for(&r)),
                        |f| self.spa_pattern(f),
                    )]
                }
                None => vec![Ok(self.spa_device_cfg())],
            },
            (Family::Poly, "{mac}.cfg") => self.poly_config_files(&text, origin),
            _ => Vec::new(),
        }
    }

    /// Report keys stay few whatever a boot file names: the names the
    /// shipped templates use keep their own, the rest share one.
    fn yealink_pattern(&self, file: &str) -> &'static str {
        let model_code = file
            .strip_prefix("y0000000000")
            .and_then(|rest| rest.strip_suffix(".cfg"))
            .is_some_and(|code| code.len() == 2 && code.bytes().all(|b| b.is_ascii_digit()));
        if file == "y000000000000.cfg" {
            "y000000000000.cfg"
        } else if model_code {
            "y0000000000{code}.cfg"
        } else if file == format!("{}.cfg", self.mac_lower()) {
            "{mac}.cfg"
        } else {
            "include:config"
        }
    }

    fn spa_pattern(&self, file: &str) -> &'static str {
        let mac = self.mac_lower();
        if file.eq_ignore_ascii_case(&format!("spa{mac}.xml")) {
            "spa{mac}.xml"
        } else if file.eq_ignore_ascii_case(&format!("spa{mac}.cfg")) {
            "spa{mac}.cfg"
        } else {
            "Profile_Rule"
        }
    }

    /// A profile rule with the SPA firmware's macros replaced: `$MA` is the
    /// MAC in lowercase hex, `$MAU` in uppercase, `$PSN` the product name as
    /// the factory rule's `spa$PSN.cfg` spells it. Any other macro is one
    /// PHLEM cannot know the value of.
    fn expand_spa_macros(&self, rule: &str) -> Result<String, &'static str> {
        let product = cisco_model(&self.model).to_ascii_lowercase();
        let mut expanded = rule.to_string();
        // `$MAU` before `$MA`, which is its prefix.
        for (name, value) in [
            ("MAU", self.mac_upper()),
            ("MA", self.mac_lower()),
            ("PSN", product),
        ] {
            expanded = expanded
                .replace(&format!("$({name})"), &value)
                .replace(&format!("${name}"), &value);
        }
        if expanded.contains('$') {
            return Err(UNFOLLOWABLE);
        }
        Ok(expanded)
    }

    /// What a Poly master file lists, after the master file for every phone.
    fn poly_config_files(&self, text: &str, origin: &Origin) -> Vec<Result<Step, Unfollowed>> {
        let Some(start) = text.find("CONFIG_FILES=\"") else {
            return Vec::new();
        };
        let rest = &text[start + "CONFIG_FILES=\"".len()..];
        let list = &rest[..rest.find('"').unwrap_or(rest.len())];
        let mut steps = vec![Ok(step("000000000000.cfg".into(), "000000000000.cfg"))];
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let reference = name.replace("[PHONE_MAC_ADDRESS]", &self.mac_lower());
            let file = origin.file_for(&reference);
            steps.push(followed(name, file, |_| "{mac}-phone.cfg"));
        }
        steps
    }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;

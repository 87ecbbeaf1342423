//! An HTTP CNAM source's settings: the URL template a number fills, how
//! the name is read from the answer, and how the secret is sent.

use serde::Deserialize;

use super::{check_host_len, invalid};
use crate::error::DirectoryError;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// URL with placeholders: `{e164}` (`+15550101234`, percent-encoded),
    /// `{digits}` (`15550101234`), `{national}` (`5550101234`).
    pub url: String,
    #[serde(default)]
    pub format: HttpFormat,
    /// For JSON: a JSON pointer (`/name`, `/data/0/cnam`) to the name.
    #[serde(default)]
    pub name_field: Option<String>,
    /// CA certificates as PEM text, as for LDAP.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// How the source's secret is sent.
    #[serde(default)]
    pub auth: HttpAuth,
    /// User for basic auth.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuth {
    #[default]
    None,
    Bearer,
    Basic,
}

impl HttpSettings {
    /// `url` parsed with every placeholder (`{e164}`, `{digits}`,
    /// `{national}`, `{secret}`) filled with `with`: its scheme, host and
    /// port as every request will have them.
    pub fn parse_filled(url: &str, with: &str) -> Result<url::Url, url::ParseError> {
        let filled = ["{e164}", "{digits}", "{national}", "{secret}"]
            .iter()
            .fold(url.to_string(), |url, p| url.replace(p, with));
        url::Url::parse(&filled)
    }

    pub fn parse(source: &str, json: &str) -> Result<HttpSettings, DirectoryError> {
        let settings: HttpSettings =
            serde_json::from_str(json).map_err(|e| invalid(source, e.to_string()))?;
        if !(settings.url.starts_with("https://") || settings.url.starts_with("http://")) {
            return Err(invalid(source, "url must start with https:// or http://"));
        }
        if !["{e164}", "{digits}", "{national}"]
            .iter()
            .any(|p| settings.url.contains(p))
        {
            return Err(invalid(
                source,
                "url must contain {e164}, {digits} or {national}",
            ));
        }
        // The host and port are checked once, when the client is built
        // (`upstream.rs`): a number in them would connect to a port (the
        // national number's) or host that check never saw. Compared as
        // the URL parser reads them, with the placeholders filled two
        // ways: a URL's text can hide its host from a split on `/`
        // (`http:///{digits}.example/`: the parser skips the slashes).
        let filled = |with: &str| {
            let url = HttpSettings::parse_filled(&settings.url, with).ok()?;
            Some((url.host_str()?.to_owned(), url.port_or_known_default()?))
        };
        match (filled("1"), filled("2")) {
            (Some(one), Some(two)) if one == two => check_host_len(source, &one.0)?,
            (Some(_), Some(_)) => {
                return Err(invalid(
                    source,
                    "placeholders belong in the url's path or query, not its host or port",
                ))
            }
            _ => {
                return Err(invalid(
                    source,
                    "url must be an absolute http:// or https:// URL with a host",
                ))
            }
        }
        if settings.format == HttpFormat::Json && settings.name_field.is_none() {
            return Err(invalid(
                source,
                "format json needs name_field (a JSON pointer)",
            ));
        }
        if let Some(field) = &settings.name_field {
            if !field.starts_with('/') {
                return Err(invalid(
                    source,
                    "name_field is a JSON pointer and starts with /",
                ));
            }
        }
        if settings.auth == HttpAuth::Basic && settings.user.is_none() {
            return Err(invalid(source, "basic auth needs user"));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_settings_are_checked() {
        HttpSettings::parse("cnam", r#"{"url":"https://cnam.example/v1/{digits}"}"#).unwrap();
        // A number as the user name reaches no other host.
        HttpSettings::parse(
            "cnam",
            r#"{"url":"https://{digits}@cnam.example:8443/?q={e164}"}"#,
        )
        .unwrap();
        for (json, why) in [
            (r#"{"url":"https://cnam.example/v1/"}"#, "must contain"),
            (r#"{"url":"ftp://x/{e164}"}"#, "https://"),
            (
                r#"{"url":"https://x/{e164}","format":"json"}"#,
                "name_field",
            ),
            (r#"{"url":"https://x/{e164}","auth":"basic"}"#, "user"),
            (
                r#"{"url":"http://cnam.example:{national}/"}"#,
                "not its host or port",
            ),
            (
                r#"{"url":"http://{digits}.cnam.example/"}"#,
                "not its host or port",
            ),
            // The parser skips the slashes: the host is the number's.
            (
                r#"{"url":"http:///{digits}.cnam.example/x"}"#,
                "not its host or port",
            ),
            (
                r#"{"url":"http://\\{national}.cnam.example/"}"#,
                "not its host or port",
            ),
            (
                r#"{"url":"http://user:{e164}@cnam.example:99999/"}"#,
                "with a host",
            ),
        ] {
            let err = HttpSettings::parse("cnam", json).unwrap_err().to_string();
            assert!(err.contains(why), "{json}: {err}");
        }
    }
}

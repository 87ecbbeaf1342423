//! The upstream HTTP CNAM source: a URL template, a plain-text or JSON
//! answer, certificates verified (system CAs or a configured CA file).

use std::sync::Arc;
use std::time::Duration;

use crate::error::DirectoryError;
use crate::networks::{resolve, PolicyResolver, SourceNetworks};
use crate::settings::{tls_config, HttpAuth, HttpFormat, HttpSettings};

/// Bodies larger than this are not a name; stop reading.
const MAX_BODY: usize = 16 * 1024;

pub struct HttpSource {
    name: String,
    settings: HttpSettings,
    secret: Option<String>,
    client: reqwest::Client,
    networks: Arc<SourceNetworks>,
}

fn upstream(e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Upstream(e.to_string())
}

/// A connection our resolver refused, or a name it could not resolve, is
/// that, not an upstream failure: the error comes back wrapped in
/// reqwest's own.
fn refused_or_upstream(e: reqwest::Error) -> DirectoryError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(inner) = cause {
        match inner.downcast_ref::<DirectoryError>() {
            Some(DirectoryError::Refused(host)) => return DirectoryError::Refused(host.clone()),
            Some(DirectoryError::Unresolved(why)) => {
                return DirectoryError::Unresolved(why.clone())
            }
            _ => {}
        }
        cause = inner.source();
    }
    // reqwest's text ends with the URL, which holds the caller's number
    // and perhaps the tenant's key in its query; the log says the source.
    upstream(e.without_url())
}

impl HttpSource {
    /// A source whose connections (resolving, TCP and TLS) each end within
    /// `timeout`, the source's own.
    pub fn new(
        name: &str,
        settings: HttpSettings,
        secret: Option<String>,
        networks: Arc<SourceNetworks>,
        timeout: Duration,
    ) -> Result<HttpSource, DirectoryError> {
        let tls = tls_config(name, settings.ca_pem.as_deref())?;
        // The port is fixed by the URL (placeholders fill the path and
        // query); the resolver checks every address against it.
        let port = HttpSettings::parse_filled(&settings.url, "1")
            .ok()
            .and_then(|u| u.port_or_known_default())
            .ok_or_else(|| DirectoryError::Settings {
                source_name: name.to_string(),
                reason: "url must be an absolute http:// or https:// URL".into(),
            })?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .dns_resolver(PolicyResolver {
                networks: networks.clone(),
                port,
            })
            // A proxy from the environment (HTTP_PROXY and the like) would
            // resolve the tenant's host itself, past the resolver's check.
            .no_proxy()
            // A redirect could lead anywhere: an answer is a name or nothing.
            .redirect(reqwest::redirect::Policy::none())
            // When an idle connection frees up first, the pool hands it to
            // the lookup and finishes the connect it had started in a
            // background task no lookup's deadline reaches: unbounded, a
            // server that never answers a second handshake would have the
            // node hold every such connection open for good.
            .connect_timeout(timeout)
            .pool_max_idle_per_host(8)
            .user_agent(concat!("dialtone/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DirectoryError::Settings {
                source_name: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(HttpSource {
            name: name.to_string(),
            settings,
            secret,
            client,
            networks,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn url(&self, e164: &str) -> String {
        let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
        let national = crate::normalize::parse_number(None, e164)
            .map(|n| n.national().to_string())
            .unwrap_or_else(|_| digits.clone());
        // The secret last: its text is never read for placeholders.
        let secret = percent_encoding::utf8_percent_encode(
            self.secret.as_deref().unwrap_or_default(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        self.settings
            .url
            .replace("{e164}", &e164.replace('+', "%2B"))
            .replace("{digits}", &digits)
            .replace("{national}", &national)
            .replace("{secret}", &secret)
    }

    pub async fn lookup(
        &self,
        e164: &str,
        budget: Duration,
    ) -> Result<Option<String>, DirectoryError> {
        match tokio::time::timeout(budget, self.fetch(e164)).await {
            Ok(result) => result,
            Err(_) => Err(DirectoryError::Timeout),
        }
    }

    async fn fetch(&self, e164: &str) -> Result<Option<String>, DirectoryError> {
        let url = url::Url::parse(&self.url(e164)).map_err(upstream)?;
        // A name goes through the checking resolver; an address does not,
        // so it is checked here.
        if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host() {
            let host = url.host_str().unwrap_or_default();
            resolve(
                &self.networks,
                host,
                url.port_or_known_default().unwrap_or(80),
            )
            .await?;
        }
        let mut request = self.client.get(url);
        request = match (self.settings.auth, &self.secret) {
            (HttpAuth::Bearer, Some(token)) => request.bearer_auth(token),
            (HttpAuth::Basic, password) => request.basic_auth(
                self.settings.user.as_deref().unwrap_or_default(),
                password.as_deref(),
            ),
            _ => request,
        };
        if self.settings.format == HttpFormat::Json {
            request = request.header("Accept", "application/json");
        }
        let mut response = request.send().await.map_err(refused_or_upstream)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(DirectoryError::Auth(format!("status {status}")));
        }
        if !status.is_success() {
            return Err(upstream(format!("status {status}")));
        }
        // A header that is not visible ASCII names no type we read.
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or_default());
        if self.settings.format == HttpFormat::Text && !is_text(content_type) {
            return Err(not_text(content_type.unwrap_or_default()));
        }
        let charset = content_type.and_then(charset_of).map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(refused_or_upstream)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(upstream("answer larger than 16 KiB"));
            }
        }
        let text = decode_body(charset.as_deref(), &body);
        match self.settings.format {
            HttpFormat::Text if text.trim_start().starts_with('<') => {
                Err(upstream("answer is markup (an HTML page?), not a name"))
            }
            HttpFormat::Text => Ok(text.lines().next().map(str::to_string)),
            // An empty body is no JSON, but it is how some services say
            // "no name", as they would in plain text: a miss, not the
            // source failing.
            HttpFormat::Json if text.trim().is_empty() => Ok(None),
            HttpFormat::Json => {
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| upstream(format!("bad JSON: {e}")))?;
                let pointer = self.settings.name_field.as_deref().unwrap_or("/name");
                match value.pointer(pointer) {
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    // `false` is how some services say "no name".
                    Some(serde_json::Value::Null | serde_json::Value::Bool(false)) | None => {
                        Ok(None)
                    }
                    // `true`, `12345` or an object is no name: a malformed
                    // answer, as a body that is not JSON is (a `name_field`
                    // pointing at the wrong place shows in the source test).
                    Some(other) => Err(upstream(format!(
                        "{pointer} holds {}, not a string",
                        json_kind(other)
                    ))),
                }
            }
        }
    }
}

/// Whether a text source's answer may hold a name: any `text/*` type, or
/// no Content-Type at all, as older CNAM services send. Not `text/plain`
/// alone: small CNAM scripts answer a bare name as `text/html`, their
/// framework's default. A CNAM provider's maintenance page, a WAF's
/// challenge or a captive portal answers 200 with HTML, whose first line
/// is no one's name: that body is refused for being markup, whatever its
/// type says.
fn is_text(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|value| {
        let media_type = value.split(';').next().unwrap_or_default().trim();
        media_type
            .get(..5)
            .is_some_and(|top| top.eq_ignore_ascii_case("text/"))
    })
}

/// A text source answering something else: the source failing, as a 5xx
/// is, so the answer is retried soon and counts toward its breaker.
fn not_text(content_type: &str) -> DirectoryError {
    // The upstream's text, bounded: it goes into logs and the source test.
    let shown: String = content_type.chars().take(64).collect();
    upstream(format!("answer is {shown:?}, not text"))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The `charset` parameter of a Content-Type value.
fn charset_of(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// A body as text in its declared charset. Without a declared charset
/// other than UTF-8, UTF-8 if it is valid; otherwise Windows-1252, the
/// superset of Latin-1 that older CNAM services send undeclared (read as
/// UTF-8, "Zoë" would come out "Zo\u{fffd}").
fn decode_body<'a>(charset: Option<&str>, body: &'a [u8]) -> std::borrow::Cow<'a, str> {
    let declared = charset.and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()));
    match declared {
        Some(encoding) if encoding != encoding_rs::UTF_8 => encoding.decode(body).0,
        _ => match std::str::from_utf8(body) {
            Ok(text) => text.into(),
            Err(_) => encoding_rs::WINDOWS_1252.decode(body).0,
        },
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;

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
        let charset = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(charset_of)
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(refused_or_upstream)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(upstream("answer larger than 16 KiB"));
            }
        }
        let text = decode_body(charset.as_deref(), &body);
        match self.settings.format {
            HttpFormat::Text => Ok(text.lines().next().map(str::to_string)),
            // An empty body is no JSON, but it is how some services say
            // "no name", as they would in plain text: a miss, not the
            // source failing.
            HttpFormat::Json if text.trim().is_empty() => Ok(None),
            HttpFormat::Json => {
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| upstream(format!("bad JSON: {e}")))?;
                let pointer = self.settings.name_field.as_deref().unwrap_or("/name");
                Ok(match value.pointer(pointer) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                })
            }
        }
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
mod tests {
    use super::*;

    /// A source of `json` settings that may connect to `network`.
    fn source_of(json: &str, network: &str) -> HttpSource {
        let settings = HttpSettings::parse("cnam", json).unwrap();
        let networks = SourceNetworks::parse(&[network]).unwrap().shared();
        HttpSource::new("cnam", settings, None, networks, Duration::from_secs(1)).unwrap()
    }

    /// A failed request's error (logged, and kept as the source's last
    /// error) names neither the caller's number nor the URL's query.
    #[tokio::test]
    async fn a_failure_does_not_carry_the_url() {
        // Bound, then closed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let json =
            format!(r#"{{"url": "http://127.0.0.1:{port}/cnam/{{digits}}?auth_token=s3cret"}}"#);
        let source = source_of(&json, "127.0.0.0/8");
        let error = source
            .lookup("+15550104242", Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            !error.contains("s3cret") && !error.contains("15550104242"),
            "{error}"
        );
    }

    #[test]
    fn bodies_are_read_in_their_charset() {
        let latin1 = b"Zo\xeb \xc5lund";
        let utf8 = "Zoë Ålund".as_bytes();
        let cases: [(Option<&str>, &[u8]); 5] = [
            (None, utf8),
            (Some("utf-8"), utf8),
            (None, latin1),
            (Some("ISO-8859-1"), latin1),
            (Some("utf-8"), latin1),
        ];
        for (charset, body) in cases {
            assert_eq!(decode_body(charset, body), "Zoë Ålund", "{charset:?}");
        }
        // A declared charset wins over a guess (these bytes are valid UTF-8).
        assert_eq!(decode_body(Some("iso-8859-1"), "Zoë".as_bytes()), "ZoÃ«");
        assert_eq!(
            charset_of("text/plain; format=flowed; Charset=\"ISO-8859-1\""),
            Some("ISO-8859-1")
        );
        assert_eq!(charset_of("text/plain"), None);
    }

    #[test]
    fn url_placeholders() {
        let source = source_of(
            r#"{"url": "https://cnam.example/{national}?e={e164}&d={digits}"}"#,
            "public",
        );
        assert_eq!(
            source.url("+442070101234"),
            "https://cnam.example/2070101234?e=%2B442070101234&d=442070101234"
        );
        assert_eq!(
            source.url("+15550101234"),
            "https://cnam.example/5550101234?e=%2B15550101234&d=15550101234"
        );
    }

    /// A key a CNAM service takes in its query goes there from the sealed
    /// secret, escaped, and is never read for placeholders itself.
    #[test]
    fn the_secret_fills_its_placeholder_escaped() {
        let settings = HttpSettings::parse(
            "cnam",
            r#"{"url": "https://cnam.example/{digits}?key={secret}"}"#,
        )
        .unwrap();
        let networks = SourceNetworks::parse(&["public"]).unwrap().shared();
        let secret = Some("a&b={e164} c".to_string());
        let source =
            HttpSource::new("cnam", settings, secret, networks, Duration::from_secs(1)).unwrap();
        assert_eq!(
            source.url("+15550101234"),
            "https://cnam.example/15550101234?key=a%26b%3D%7Be164%7D%20c"
        );
        // A user or password in the url is refused when written.
        for url in [
            "https://user:pw@cnam.example/{digits}",
            "https://user@cnam.example/{digits}",
        ] {
            let json = format!(r#"{{"url": "{url}"}}"#);
            let refused = crate::settings::check(dialtone_sync::SourceKind::Http, "cnam", &json);
            assert!(refused.is_err(), "{url}");
        }
        // The placeholder stays out of the host.
        let json = r#"{"url": "https://{secret}.example/{digits}"}"#;
        assert!(HttpSettings::parse("cnam", json).is_err());
    }

    /// A JSON source that answers 200 with nothing (or only whitespace)
    /// has no name, as a text source doing so has none; a body that is
    /// not JSON is still the source's failure.
    #[tokio::test]
    async fn an_empty_json_body_is_a_miss() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/cnam/{body}",
                axum::routing::get(
                    |axum::extract::Path(body): axum::extract::Path<String>| async move {
                        let body = match body.as_str() {
                            "empty" => "",
                            "blank" => " \r\n\t",
                            _ => "<html>",
                        };
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                    },
                ),
            );
            axum::serve(listener, app).await.unwrap();
        });
        for body in ["empty", "blank", "junk"] {
            let json = format!(
                r#"{{"url": "http://127.0.0.1:{port}/cnam/{body}?n={{digits}}", "format": "json", "name_field": "/name"}}"#
            );
            let source = source_of(&json, "127.0.0.0/8");
            let found = source.lookup("+15550104242", Duration::from_secs(5)).await;
            match body {
                "junk" => assert!(
                    matches!(found, Err(DirectoryError::Upstream(_))),
                    "{found:?}"
                ),
                _ => assert_eq!(found.unwrap(), None, "{body}"),
            }
        }
    }

    /// End to end through the client: an undeclared Latin-1 answer.
    #[tokio::test]
    async fn a_latin1_answer_keeps_its_letters() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/cnam/{digits}",
                axum::routing::get(|| async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain")],
                        &b"M\xfcller GmbH\r\n"[..],
                    )
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
        let json = format!(r#"{{"url": "http://127.0.0.1:{port}/cnam/{{digits}}"}}"#);
        let source = source_of(&json, "127.0.0.0/8");
        let name = source
            .lookup("+15550104242", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("Müller GmbH"));
    }
}

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
    let json = format!(r#"{{"url": "http://127.0.0.1:{port}/cnam/{{digits}}?auth_token=s3cret"}}"#);
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

#[test]
fn only_text_or_no_type_is_read_as_text() {
    for text in [
        None,
        Some("text/plain"),
        Some("text/plain; charset=ISO-8859-1"),
        Some(" Text/Plain ;charset=utf-8"),
        // A small CNAM script's framework default, with a bare name.
        Some("text/html; charset=UTF-8"),
    ] {
        assert!(is_text(text), "{text:?}");
    }
    for other in [
        "application/json",
        "application/octet-stream",
        "image/png",
        "tex",
        "",
    ] {
        assert!(!is_text(Some(other)), "{other:?}");
    }
}

/// A text source answering HTML, and a JSON source whose name is not a
/// string, fail as a 5xx does; the error names the type, not the page.
#[tokio::test]
async fn answers_that_hold_no_name_are_failures() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/cnam/{kind}",
            axum::routing::get(
                |axum::extract::Path(kind): axum::extract::Path<String>| async move {
                    let (content_type, body) = match kind.as_str() {
                        "html" => ("text/html", "<!DOCTYPE html>\n<html>Maintenance</html>"),
                        "true" => ("application/json", r#"{"name": true}"#),
                        "number" => ("application/json", r#"{"name": 12345}"#),
                        _ => ("application/json", r#"{"name": {"first": "Alice"}}"#),
                    };
                    ([(axum::http::header::CONTENT_TYPE, content_type)], body)
                },
            ),
        );
        axum::serve(listener, app).await.unwrap();
    });
    for (kind, format) in [
        ("html", "text"),
        ("true", "json"),
        ("number", "json"),
        ("object", "json"),
    ] {
        let json = format!(
            r#"{{"url": "http://127.0.0.1:{port}/cnam/{kind}?n={{digits}}", "format": "{format}", "name_field": "/name"}}"#
        );
        let source = source_of(&json, "127.0.0.0/8");
        let found = source.lookup("+15550104242", Duration::from_secs(5)).await;
        match found {
            Err(DirectoryError::Upstream(why)) => {
                assert!(!why.contains("DOCTYPE") && !why.contains("Alice"), "{why}")
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
}

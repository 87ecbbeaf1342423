//! An LDAP server that breaks the protocol's bounds on purpose (a tenant's
//! server is untrusted): what it can make a node read, hold or parse.
//! Loopback only; every wait is bounded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::ber::{request_id, tagged};
use dialtone_directory::ldap::LdapSource;
use dialtone_directory::settings::LdapSettings;
use dialtone_directory::source_label::SourceLabel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Sends `reply` to the first request on one connection, then streams
/// `filler` until the connection fails or `cap` bytes went in all, or 20 s
/// pass. Returns the bytes written.
async fn hostile_server(
    reply: Vec<u8>,
    filler: usize,
    cap: usize,
) -> (String, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}/", listener.local_addr().unwrap());
    let serving = tokio::spawn(async move {
        let Ok(Ok((mut stream, _))) =
            tokio::time::timeout(Duration::from_secs(20), listener.accept()).await
        else {
            return 0;
        };
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request).await;
        let mut written = 0;
        if stream.write_all(&reply).await.is_err() {
            return written;
        }
        written += reply.len();
        let chunk = vec![0x04u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while filler > 0 && written < cap && tokio::time::Instant::now() < deadline {
            let send = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&chunk));
            match send.await {
                Ok(Ok(())) => written += chunk.len(),
                _ => break,
            }
        }
        written
    });
    (url, serving)
}

fn source(url: &str) -> LdapSource {
    source_binding(url, false)
}

/// A source that binds first (as a service account) when `binds`.
fn source_binding(url: &str, binds: bool) -> LdapSource {
    let mut settings = serde_json::json!({
        "url": url,
        "base_dn": "dc=example,dc=com",
        "filter": "(objectClass=person)",
        "number_attributes": ["telephoneNumber"],
        "name_attributes": ["cn"],
    });
    if binds {
        settings["bind_dn"] = "cn=dialtone,dc=example,dc=com".into();
    }
    let settings = LdapSettings::parse("hostile", &settings.to_string()).unwrap();
    let networks = dialtone_directory::SourceNetworks::parse(&["127.0.0.0/8"])
        .unwrap()
        .shared();
    let password = binds.then(|| "secret".to_string());
    LdapSource::new(
        SourceLabel::new(1, 1, "hostile"),
        settings,
        password,
        networks,
    )
    .unwrap()
}

/// A reply announcing 1 GiB (ldap3 would buffer it all, whatever the
/// deadline lets through) ends the connection once its header is read:
/// the server gets to write little more than the sockets' buffers hold.
#[tokio::test]
async fn a_reply_announcing_a_gigabyte_is_cut_off_at_its_header() {
    const CAP: usize = 256 << 20;
    let header = vec![0x30, 0x84, 0x40, 0x00, 0x00, 0x00];
    let (url, serving) = hostile_server(header, 1, CAP).await;
    let answer = source(&url)
        .lookup("+15550101234", "US", Duration::from_secs(5))
        .await;
    assert!(answer.is_err(), "{answer:?}");
    let written = serving.await.unwrap();
    assert!(
        written < 32 << 20,
        "the server wrote {} MiB into a connection that should have closed",
        written >> 20
    );
}

/// A reply of ~600 KB nested 100,000 deep: ldap3's decoder recurses once
/// per level, which would overflow the stack and kill the process (every
/// tenant's lookups with it). It is refused before ldap3 sees it.
#[tokio::test]
async fn a_deeply_nested_reply_is_refused_not_parsed() {
    let depth = 100_000usize;
    let mut reply = Vec::with_capacity(depth * 6);
    for level in 0..depth {
        let content = (6 * (depth - 1 - level)) as u32;
        reply.extend([0x30, 0x84]);
        reply.extend(content.to_be_bytes());
    }
    let (url, serving) = hostile_server(reply, 0, 0).await;
    let source = Arc::new(source(&url));
    let answer = source
        .lookup("+15550101234", "US", Duration::from_secs(5))
        .await;
    assert!(answer.is_err(), "{answer:?}");
    serving.await.unwrap();
}

/// Answers the first search on one connection with a searchResultDone of
/// `rc` whose diagnosticMessage is `text`.
async fn failing_server(rc: u8, text: &[u8]) -> (String, tokio::task::JoinHandle<()>) {
    let result = [
        &[0x0a, 0x01, rc][..],
        &tagged(0x04, b""),
        &tagged(0x04, text),
    ]
    .concat();
    replying_server(request_id, 0x65, result).await
}

/// Answers the first request on one connection with `content` as the
/// operation tagged `op`, whatever was asked, under the id `id` writes for
/// the request's.
async fn replying_server(
    id: fn(&[u8]) -> Vec<u8>,
    op: u8,
    content: Vec<u8>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}/", listener.local_addr().unwrap());
    let serving = tokio::spawn(async move {
        let Ok(Ok((mut stream, _))) =
            tokio::time::timeout(Duration::from_secs(20), listener.accept()).await
        else {
            return;
        };
        let mut request = vec![0u8; 4096];
        let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut request)).await
        else {
            return;
        };
        let reply = tagged(0x30, &[id(&request[..n]), tagged(op, &content)].concat());
        let _ = stream.write_all(&reply).await;
        // Held open until the client is done with it.
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut request)).await;
    });
    (url, serving)
}

/// A tenant's server writes what it likes into a result's diagnostic
/// message; the error that reaches `dialtone lookup`, the logs and the
/// admin API carries no escape sequence for the operator's terminal, and
/// no more than a line of it.
#[tokio::test]
async fn a_diagnostic_message_cannot_reach_a_terminal_as_escapes() {
    let mut text = b"busy \x1b]0;pwned\x07\x1b[2J\r\n".to_vec();
    text.extend("\u{9b}31m".as_bytes());
    text.extend([b'A'; 1000]);
    let (url, serving) = failing_server(53, &text).await;
    let answer = source(&url)
        .lookup("+15550101234", "US", Duration::from_secs(5))
        .await;
    let error = answer.expect_err("rc 53 is a failure").to_string();
    assert!(
        error.contains("rc=53") && error.contains("pwned"),
        "{error:?}"
    );
    assert!(!error.chars().any(char::is_control), "{error:?}");
    assert!(
        error.chars().count() < 300,
        "{} chars",
        error.chars().count()
    );
    serving.abort();
}

/// Every panic anywhere in this process while `run` runs (ldap3's
/// connection task included), by its message; each is also printed.
async fn panics_during(run: impl std::future::Future<Output = ()>) -> Vec<String> {
    let panics = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("{info}");
        seen.lock().unwrap().push(info.to_string());
    }));
    run.await;
    // Give a panicking connection task the moment it needs to report.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = std::panic::take_hook();
    std::panic::set_hook(previous);
    let panics = panics.lock().unwrap().clone();
    panics
}

/// A lookup through a server that answers its first request with
/// `content` as operation `op` under `id`'s id: an error, and no panic on
/// the way.
async fn refused_without_panic(
    binds: bool,
    id: fn(&[u8]) -> Vec<u8>,
    op: u8,
    content: Vec<u8>,
    what: &str,
) {
    let (url, serving) = replying_server(id, op, content).await;
    let source = source_binding(&url, binds);
    let panics = panics_during(async {
        let answer = source
            .lookup("+15550101234", "US", Duration::from_secs(2))
            .await;
        assert!(answer.is_err(), "{what}: {answer:?}");
    })
    .await;
    serving.abort();
    assert!(panics.is_empty(), "{what}: {panics:#?}");
}

/// A server that answers a search with another operation's reply (a bind's,
/// a modify's, an extended one's) gets an error for that lookup. ldap3
/// panics on such a reply in its connection task; none may reach it.
#[tokio::test]
async fn a_reply_of_another_operation_to_a_search_is_an_error_not_a_panic() {
    let result = [
        &[0x0a, 0x01, 0x00][..],
        &tagged(0x04, b""),
        &tagged(0x04, b""),
    ]
    .concat();
    // bindResponse, modifyResponse, addResponse, delResponse,
    // modDNResponse, compareResponse, extendedResponse.
    for op in [0x61, 0x67, 0x69, 0x6b, 0x6d, 0x6f, 0x78] {
        let what = format!("op {op:#x}");
        refused_without_panic(false, request_id, op, result.clone(), &what).await;
    }
}

/// Results ldap3 would take apart with `expect`: no parts, a result code
/// that is not an ENUMERATED of one to four octets, a DN or message that
/// is not a primitive UTF-8 string or is missing, referrals that are not a
/// list of them. A search's result fails that lookup, a bind's the
/// connection; neither panics (a bind's was read, and panicked, on the
/// lookup's own task).
#[tokio::test]
async fn a_malformed_result_is_an_error_not_a_panic() {
    let enumerated = [0x0a, 0x01, 0x00];
    let empty = tagged(0x04, b"");
    let results: Vec<Vec<u8>> = vec![
        vec![],
        enumerated.to_vec(),
        [&enumerated[..], &empty].concat(),
        [&[0x02, 0x01, 0x00][..], &empty, &empty].concat(),
        [&enumerated[..], &tagged(0x30, b""), &empty].concat(),
        [&enumerated[..], &empty, &tagged(0x30, b"")].concat(),
        [&enumerated[..], &tagged(0x04, &[0xff]), &empty].concat(),
        [&[0x0a, 0x00][..], &empty, &empty].concat(),
        [
            &enumerated[..],
            &empty,
            &empty,
            &tagged(0xa3, &tagged(0x30, b"")),
        ]
        .concat(),
        [
            &enumerated[..],
            &empty,
            &empty,
            &tagged(0xa3, &tagged(0x04, &[0xff])),
        ]
        .concat(),
        [&enumerated[..], &empty, &empty, &tagged(0x83, b"ldap://x/")].concat(),
    ];
    for (n, result) in results.into_iter().enumerate() {
        let what = format!("search result {n}");
        refused_without_panic(false, request_id, 0x65, result.clone(), &what).await;
        let what = format!("bind result {n}");
        refused_without_panic(true, request_id, 0x61, result, &what).await;
    }
}

/// The request's message id padded to five octets: ldap3 reads an id of
/// any length and keeps its low 32 bits, so it takes this for the
/// request's own, where the relay reads ids only as ldap3 writes them.
fn padded_id(request: &[u8]) -> Vec<u8> {
    let id = request_id(request);
    tagged(0x02, &[&[0; 4][..], &id[2..]].concat())
}

/// A reply under the search's id written long would reach ldap3 counted
/// against no search: a bind's or an extended operation's reply panics its
/// connection task, a result passes unread. The relay closes the
/// connection instead.
#[tokio::test]
async fn a_reply_under_an_id_written_long_is_an_error_not_a_panic() {
    let result = [
        &[0x0a, 0x01, 0x00][..],
        &tagged(0x04, b""),
        &tagged(0x04, b""),
    ]
    .concat();
    // bindResponse, extendedResponse, searchResultDone.
    for op in [0x61, 0x78, 0x65] {
        let what = format!("op {op:#x} under a long id");
        refused_without_panic(false, padded_id, op, result.clone(), &what).await;
    }
}

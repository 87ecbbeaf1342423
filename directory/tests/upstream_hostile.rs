//! An HTTPS CNAM server that breaks its side on purpose (a tenant's server
//! is untrusted): what it can make a node hold open. Loopback only; every
//! wait is bounded.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::slapd::test_tls;
use dialtone_directory::sources::{build_source, BreakerOptions};
use dialtone_directory::{Clock, SourceNetworks};
use dialtone_sync::{DirectorySource, SourceKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SOURCE_TIMEOUT_MS: i32 = 500;

fn tls_acceptor(tls: &common::slapd::Tls) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Answers every request on `stream` with a name, keeping it alive.
async fn answer_names(mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            let reply =
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nAlice";
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the client closed `stream`: whatever it sent (a ClientHello no
/// one read) is drained first; a read that would wait means still open.
async fn closed_by_client(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// The pool races waiting for an idle connection against opening a new
/// one; when the idle one wins, the new one finishes in the background,
/// past every lookup's deadline. A server that completes TLS on its first
/// connection only (and never reads later ClientHellos) would then have
/// each such connection held open for good, a file descriptor apiece. The
/// source's timeout bounds these connects too: each one ends.
#[tokio::test]
async fn connects_left_to_the_background_end_at_the_source_timeout() {
    let tls = test_tls();
    let acceptor = tls_acceptor(&tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hung: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let held = hung.clone();
    let server = tokio::spawn(async move {
        let (first, _) = listener.accept().await.unwrap();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(stream) = acceptor.accept(first).await {
                answer_names(stream).await;
            }
        });
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            held.lock().unwrap().push(stream);
        }
    });

    let row = DirectorySource {
        id: 1,
        tenant_id: 1,
        name: "cnam".into(),
        kind: SourceKind::Http,
        priority: 10,
        enabled: true,
        settings: serde_json::json!({
            "url": format!("https://127.0.0.1:{port}/cnam/{{digits}}"),
            "ca_pem": tls.ca_pem,
        })
        .to_string()
        .into(),
        secret: None,
        timeout_ms: SOURCE_TIMEOUT_MS,
        updated_at: 0,
    };
    let breaker = BreakerOptions {
        threshold: u32::MAX,
        cooldown: Duration::from_secs(1),
        deadline: Duration::from_secs(5),
    };
    let networks = SourceNetworks::parse(&["127.0.0.0/8"]).unwrap().shared();
    let source = build_source(&row, None, breaker, Clock::system(), &networks, &[]).unwrap();

    let answers = futures::future::join_all(
        (0..30).map(|_| source.lookup("+15550104242", "US", Duration::from_secs(2))),
    )
    .await;
    let named = answers
        .iter()
        .filter(|a| matches!(a, Ok(Some(name)) if name == "Alice"))
        .count();
    assert!(
        named > 1,
        "the idle connection served the lookups: {answers:?}"
    );
    let opened = hung.lock().unwrap().len();
    assert!(
        opened > 0,
        "lookups opened connections the server left hanging"
    );

    // Past the source's timeout, with room for a loaded machine.
    tokio::time::sleep(Duration::from_millis(SOURCE_TIMEOUT_MS as u64)).await;
    let mut streams = std::mem::take(&mut *hung.lock().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut still_open = Vec::new();
        for mut stream in streams {
            if !closed_by_client(&mut stream).await {
                still_open.push(stream);
            }
        }
        streams = still_open;
        if streams.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        streams.is_empty(),
        "{} of {opened} connections the server never answered are still open",
        streams.len()
    );
    drop(source);
    server.abort();
}

//! A proxy named in the environment is never used for tenant sources: it
//! would resolve the tenant's host name itself, past the check of where
//! sources may connect. Its own test binary, since it sets the process's
//! environment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dialtone_directory::upstream::HttpSource;
use dialtone_directory::{DirectoryError, SourceNetworks};

#[test]
fn sources_ignore_proxy_variables() {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    // Set before any other thread exists in this binary.
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        std::env::set_var(name, &proxy_url);
    }
    for name in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(name);
    }
    let connections = Arc::new(AtomicU64::new(0));
    let seen = connections.clone();
    std::thread::spawn(move || {
        for stream in proxy.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let settings = serde_json::from_value(serde_json::json!({
            "url": "http://localhost:9/cnam/{digits}",
        }))
        .unwrap();
        // Public addresses only: localhost is not one.
        let networks = SourceNetworks::default().shared();
        let source =
            HttpSource::new("cnam", settings, None, networks, Duration::from_secs(1)).unwrap();
        source.lookup("+15550101234", Duration::from_secs(5)).await
    });
    assert!(
        matches!(result, Err(DirectoryError::Refused(_))),
        "{result:?}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0, "the proxy was used");
}

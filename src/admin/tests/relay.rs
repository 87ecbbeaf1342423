//! A TCP relay between the store and PostgreSQL that a test can freeze
//! (the connections it relays then go silent, as on a path that drops
//! every packet, while the kernel keeps them open and new ones pass) and
//! that counts what the server sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Relay {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Connections accepted so far, each numbered in order.
    accepted: AtomicU64,
    /// Connections numbered below this relay nothing more.
    frozen_below: AtomicU64,
    /// Bytes relayed from the server to the store.
    from_server: AtomicU64,
}

impl Relay {
    /// Relays to the server `url` names and gives the same URL through it.
    pub async fn to(url: &str) -> (Relay, String) {
        let mut through = url::Url::parse(url).unwrap();
        let server = format!(
            "{}:{}",
            through.host_str().unwrap(),
            through.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let relaying = shared.clone();
        tokio::spawn(async move {
            while let Ok((store_side, _)) = listener.accept().await {
                let number = relaying.accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(server_side) = TcpStream::connect(&server).await else {
                    continue;
                };
                let (from_store, to_store) = store_side.into_split();
                let (from_db, to_db) = server_side.into_split();
                tokio::spawn(pump(from_store, to_db, number, relaying.clone(), false));
                tokio::spawn(pump(from_db, to_store, number, relaying.clone(), true));
            }
        });
        through.set_host(Some("127.0.0.1")).unwrap();
        through.set_port(Some(addr.port())).unwrap();
        (Relay { shared }, through.to_string())
    }

    /// Every connection open now relays nothing more, in either direction.
    pub fn freeze(&self) {
        let accepted = self.shared.accepted.load(Ordering::SeqCst);
        self.shared.frozen_below.store(accepted, Ordering::SeqCst);
    }

    pub fn bytes_from_server(&self) -> u64 {
        self.shared.from_server.load(Ordering::SeqCst)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    number: u64,
    shared: Arc<Shared>,
    from_server: bool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if number < shared.frozen_below.load(Ordering::SeqCst) {
            // Silent, and open: neither end hears of it.
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        if from_server {
            shared.from_server.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
}

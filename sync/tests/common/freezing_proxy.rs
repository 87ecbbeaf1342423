//! A loopback TCP proxy in front of PostgreSQL that can freeze: the
//! connections open at that moment stop forwarding either way but stay
//! open, as across a partition or to a hung server (no FIN, no reset,
//! nothing), while connections opened after it are forwarded as usual.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct FreezingProxy {
    pub addr: SocketAddr,
    /// Cancelled at the freeze; connections accepted later get a new one.
    frozen: Arc<Mutex<CancellationToken>>,
    /// Ends every connection, frozen or not, when the proxy is dropped.
    stop: CancellationToken,
}

impl FreezingProxy {
    /// Forwards to the server of `db_url`.
    pub async fn start(db_url: &str) -> FreezingProxy {
        let target = server_of(db_url).to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FreezingProxy {
            addr: listener.local_addr().unwrap(),
            frozen: Arc::default(),
            stop: CancellationToken::new(),
        };
        let (frozen, stop) = (proxy.frozen.clone(), proxy.stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => return,
                    },
                };
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let freeze = frozen.lock().unwrap().clone();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    freeze.clone(),
                    stop.clone(),
                ));
                tokio::spawn(pump(server_read, client_write, freeze, stop.clone()));
            }
        });
        proxy
    }

    /// `db_url` through this proxy.
    pub fn url(&self, db_url: &str) -> String {
        db_url.replacen(server_of(db_url), &self.addr.to_string(), 1)
    }

    /// Every connection open now stops forwarding, and stays open.
    pub fn freeze(&self) {
        let mut frozen = self.frozen.lock().unwrap();
        frozen.cancel();
        *frozen = CancellationToken::new();
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn server_of(db_url: &str) -> &str {
    let (_, rest) = db_url.split_once('@').expect("a URL with a user");
    rest.split_once('/').expect("a URL with a database").0
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    freeze: CancellationToken,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = freeze.cancelled() => {
                // Both halves held, neither read nor written, until the end.
                stop.cancelled().await;
                return;
            }
            read = from.read(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

//! A loopback TCP relay in front of PostgreSQL that a test can freeze: the
//! connections open at that moment stop forwarding either way but stay
//! open, as across a partition or to a hung server (no FIN, no reset,
//! nothing), while connections opened after it pass as usual. It also
//! counts what the server sent, so a test can see how much a request read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Relays until dropped; dropping it ends every connection, frozen or not,
/// so keep it alive as long as the store that goes through it.
pub struct Relay {
    /// Cancelled at the freeze; connections accepted later get a new one.
    frozen: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    from_server: Arc<AtomicU64>,
}

impl Relay {
    /// Relays to the server `db_url` names, and gives the same URL through
    /// the relay.
    pub async fn to(db_url: &str) -> (Relay, String) {
        let mut through = url::Url::parse(db_url).expect("a database URL");
        let server = format!(
            "{}:{}",
            through.host_str().expect("a URL with a host"),
            through.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let relay = Relay {
            frozen: Arc::default(),
            stop: CancellationToken::new(),
            from_server: Arc::default(),
        };
        tokio::spawn(accept(
            listener,
            server,
            relay.frozen.clone(),
            relay.stop.clone(),
            relay.from_server.clone(),
        ));
        through
            .set_host(Some("127.0.0.1"))
            .expect("a URL with a host");
        through.set_port(Some(port)).expect("a URL with a port");
        (relay, through.to_string())
    }

    /// Every connection open now stops forwarding, and stays open.
    pub fn freeze(&self) {
        let mut frozen = self.frozen.lock().unwrap();
        frozen.cancel();
        *frozen = CancellationToken::new();
    }

    /// Bytes relayed from the server to its clients so far.
    pub fn bytes_from_server(&self) -> u64 {
        self.from_server.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    server: String,
    frozen: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    from_server: Arc<AtomicU64>,
) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => return,
            },
        };
        let Ok(server) = TcpStream::connect(&server).await else {
            continue;
        };
        let freeze = frozen.lock().unwrap().clone();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let to_server = Pump {
            freeze: freeze.clone(),
            stop: stop.clone(),
            counted: None,
        };
        let to_client = Pump {
            freeze,
            stop: stop.clone(),
            counted: Some(from_server.clone()),
        };
        tokio::spawn(to_server.run(client_read, server_write));
        tokio::spawn(to_client.run(server_read, client_write));
    }
}

/// One direction of one connection.
struct Pump {
    freeze: CancellationToken,
    stop: CancellationToken,
    counted: Option<Arc<AtomicU64>>,
}

impl Pump {
    async fn run(self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
        let mut buf = vec![0u8; 64 * 1024];
        let forwarding = async {
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                if let Some(counted) = &self.counted {
                    counted.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        };
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => {}
            // Both halves stay held, neither read nor written, until the
            // relay goes: a frozen connection must not look closed.
            _ = self.freeze.cancelled() => self.stop.cancelled().await,
            _ = forwarding => {}
        }
    }
}

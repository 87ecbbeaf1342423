//! The change listener, and the heartbeat that proves it still hears.
//!
//! The listener's connection only ever reads, and sqlx sets no TCP
//! keepalive: after a failover that moved the server's address, a
//! partition or a hung server, its socket stays established and silent
//! for ever. No NOTIFY would arrive again, the node would fall back to its
//! poll, and nothing would count or say so. So the notifier sends itself a
//! NOTIFY every [`Heartbeat::every`] from a pool connection, the path the
//! writers take, and when one it sent is not heard within
//! [`Heartbeat::deadline`] its `wait` fails: the watcher logs it, builds a
//! new listener and counts the restart.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::time::Instant;

use super::closing::{ClosedUnlessReleased, Pool};
use super::NOTIFY_CHANNEL;
use crate::error::SyncError;
use crate::store::Notifier;

#[derive(Clone, Copy, Debug)]
pub(super) struct Heartbeat {
    /// How often the listener is checked (the default poll interval: a
    /// listener gone deaf is found about as soon as the poll would show it).
    pub every: Duration,
    /// How long a heartbeat, once sent, may take to be heard. A live
    /// listener hears it within milliseconds; this leaves room for a
    /// loaded server and a busy node.
    pub deadline: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            every: Duration::from_secs(5),
            deadline: Duration::from_secs(5),
        }
    }
}

pub(super) struct PgNotifier {
    listener: PgListener,
    /// The shared pool, for sending heartbeats.
    pool: Pool,
    /// A channel only this listener listens on: heartbeats wake no
    /// watcher, this node's or another's, and cost no catch-up.
    heartbeat_channel: String,
    heartbeat: Heartbeat,
    /// The last heartbeat sent or being sent; its payload.
    beat: u64,
    /// The last heartbeat heard. It can come before its sender has
    /// learnt that its NOTIFY committed.
    heard: u64,
    sending: Option<BoxFuture<'static, Result<(), SyncError>>>,
    /// When the last heartbeat's NOTIFY committed, until it is heard.
    unheard_since: Option<Instant>,
    next_beat: Instant,
}

impl PgNotifier {
    pub(super) async fn open(
        pool: &Pool,
        connect: &PgConnectOptions,
        connect_timeout: Duration,
        heartbeat: Heartbeat,
    ) -> Result<Self, SyncError> {
        // A pool of one of its own: sqlx drops a listener by sending
        // UNLISTEN on its connection before giving it back, which on a
        // silent connection never ends. Taken from the shared pool, each
        // listener given up would keep one of its slots for good.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(connect_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(connect.clone());
        let heartbeat_channel = format!("dialtone_heartbeat_{:016x}", rand::random::<u64>());
        let listening = async {
            let mut listener = PgListener::connect_with(&own).await?;
            // A lost connection ends this listener (see `wait`); sqlx's
            // reconnecting first would only open one to drop.
            listener.eager_reconnect(false);
            listener
                .listen_all([NOTIFY_CHANNEL, heartbeat_channel.as_str()])
                .await?;
            Ok::<_, sqlx::Error>(listener)
        };
        // A server that accepts the connection and never answers LISTEN
        // must not hold the listener's supervisor here.
        let listener = tokio::time::timeout(connect_timeout * 2, listening)
            .await
            .map_err(|_| SyncError::Database(sqlx::Error::PoolTimedOut))??;
        Ok(PgNotifier {
            listener,
            pool: pool.clone(),
            heartbeat_channel,
            heartbeat,
            beat: 0,
            heard: 0,
            sending: None,
            unheard_since: None,
            next_beat: Instant::now() + heartbeat.every,
        })
    }

    /// Checks the heartbeat when its time comes: fails if the last one is
    /// overdue, else sends the next one unless one is still being sent.
    fn beat(&mut self) -> Result<(), SyncError> {
        if self.unheard_since.is_some() {
            return Err(SyncError::Database(sqlx::Error::Protocol(format!(
                "the change listener did not hear its own heartbeat within {} ms: \
                 its connection has gone silent",
                self.heartbeat.deadline.as_millis()
            ))));
        }
        self.next_beat = Instant::now() + self.heartbeat.every;
        if self.sending.is_none() {
            self.beat += 1;
            self.sending = Some(send_heartbeat(
                self.pool.clone(),
                self.heartbeat_channel.clone(),
                self.beat,
                self.heartbeat.deadline,
            ));
        }
        Ok(())
    }
}

/// NOTIFY `beat` on `channel` from a pool connection, within `limit`.
fn send_heartbeat(
    pool: Pool,
    channel: String,
    beat: u64,
    limit: Duration,
) -> BoxFuture<'static, Result<(), SyncError>> {
    Box::pin(async move {
        let send = async {
            let mut conn = ClosedUnlessReleased::acquire(&pool).await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(beat.to_string())
                .execute(conn.conn())
                .await?;
            conn.release();
            Ok(())
        };
        tokio::time::timeout(limit, send)
            .await
            .unwrap_or(Err(SyncError::Database(sqlx::Error::PoolTimedOut)))
    })
}

/// The heartbeat being sent, or never if none is.
async fn sent(
    sending: &mut Option<BoxFuture<'static, Result<(), SyncError>>>,
) -> Result<(), SyncError> {
    match sending {
        Some(send) => send.await,
        None => std::future::pending().await,
    }
}

#[async_trait]
impl Notifier for PgNotifier {
    async fn wait(&mut self) -> Result<(), SyncError> {
        loop {
            let due = match self.unheard_since {
                Some(sent_at) => sent_at + self.heartbeat.deadline,
                None => self.next_beat,
            };
            tokio::select! {
                // A notification already read is never judged late.
                biased;
                received = self.listener.try_recv() => {
                    // `None` means the connection dropped. sqlx would quietly
                    // re-LISTEN on the next call, but a commit between our next
                    // catch-up and that re-LISTEN would go unnoticed until the
                    // next poll. Failing instead makes the watcher build a fresh
                    // listener first and catch up after.
                    let Some(notification) = received? else {
                        return Err(SyncError::Database(sqlx::Error::Protocol(
                            "change listener connection lost".into(),
                        )));
                    };
                    if notification.channel() != self.heartbeat_channel {
                        return Ok(());
                    }
                    if let Ok(beat) = notification.payload().parse::<u64>() {
                        self.heard = self.heard.max(beat);
                    }
                    if self.heard >= self.beat {
                        self.unheard_since = None;
                    }
                }
                sent = sent(&mut self.sending) => {
                    self.sending = None;
                    match sent {
                        Ok(()) if self.heard < self.beat => {
                            self.unheard_since = Some(Instant::now());
                        }
                        Ok(()) => {}
                        // Nothing to judge the listener by: the pool is busy or
                        // the database unreachable, which the catch-ups report.
                        Err(e) => tracing::debug!(error = %e, "change listener heartbeat not sent"),
                    }
                }
                _ = tokio::time::sleep_until(due) => self.beat()?,
            }
        }
    }
}

/// A test cannot wait out the production heartbeat at every step.
#[cfg(feature = "testing")]
impl super::PgStore {
    /// This store's listeners check themselves every `every`, and give up
    /// on a heartbeat not heard within `deadline`.
    pub fn with_listener_heartbeat(mut self, every: Duration, deadline: Duration) -> Self {
        self.listener_heartbeat = Heartbeat { every, deadline };
        self
    }
}

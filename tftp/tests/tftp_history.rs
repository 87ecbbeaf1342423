//! A TFTP fetch's history line says how its transfer ended, written once
//! it has: a phone that refuses its file after the OACK (tsize too large
//! for it) reads as the phone's refusal, not as served, and a line is
//! written only for a client that acknowledged a packet (one that ended
//! before is a log line). Client ERRORs are counted by code.

mod common;
#[macro_use]
mod tftp_support;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use dialtone_sync::store::BootRecord;
use dialtone_tftp::tftp::TftpOptions;
use dialtone_tftp::Provisioner;
use tftp_support::*;

both_modes!(
    a_phone_refusing_after_the_oack_is_recorded_as_its_refusal,
    a_completed_transfer_is_recorded_whole_once_it_ends,
    a_client_that_never_acknowledges_leaves_no_line,
    a_stalled_transfer_records_what_was_acknowledged,
    a_transfer_cut_by_the_shutdown_says_so,
    client_errors_are_counted_by_code,
    a_refetch_of_changed_bytes_is_no_repeat,
);

const FILE: &str = "001565000001.cfg";

/// A server whose provisioner records history, and the history's writer
/// running.
struct Recorded {
    f: Fixture,
    provisioner: Arc<Provisioner>,
    server: Server,
    stop: tokio_util::sync::CancellationToken,
    writer: tokio::task::JoinHandle<()>,
}

impl Recorded {
    async fn start(mode: Mode, options: TftpOptions) -> Recorded {
        let f = Fixture::new().await;
        let (sink, writer) = dialtone_sync::history::channel(f.store.clone(), 100);
        let provisioner = Arc::new(
            Provisioner::new(
                f.mirror.clone(),
                dialtone_sync::testing::test_key(),
                dialtone_tftp::Shipped::load(f._dir.path(), 1).unwrap(),
                // The fixture's, so that `expected` renders the same bytes.
                dialtone_tftp::ProvisionOptions {
                    base_url: "http://prov.example.net".into(),
                    ..Default::default()
                },
            )
            .with_history(sink),
        );
        let server = Server::start(mode, provisioner.clone(), options);
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn(writer.run(stop.clone(), Duration::from_secs(10)));
        Recorded {
            f,
            provisioner,
            server,
            stop,
            writer,
        }
    }

    /// The phone's lines written by now: the writer gets well past the
    /// time it gathers a batch for first.
    async fn lines_by_now(&self) -> Vec<BootRecord> {
        tokio::time::sleep(Duration::from_millis(800)).await;
        phone_lines(&self.f).await
    }

    /// Stops the server (the drain lets every transfer end) and the
    /// writer (it writes what is queued), then the phone's lines.
    async fn lines_after_shutdown(self) -> Vec<BootRecord> {
        drop(self.server);
        self.stop.cancel();
        self.writer.await.unwrap();
        phone_lines(&self.f).await
    }
}

async fn phone_lines(f: &Fixture) -> Vec<BootRecord> {
    let mac = FILE.trim_end_matches(".cfg").parse().unwrap();
    f.store.recent_boots(&mac, None, 10).await.unwrap()
}

/// Asks for `FILE` in blocks of 8 with tsize, as phones do; the OACK's
/// sender.
fn ask(server: SocketAddr) -> (UdpSocket, SocketAddr) {
    let s = client();
    s.send_to(
        &request(1, FILE, &[("blksize", "8"), ("tsize", "0")]),
        server,
    )
    .unwrap();
    let (oack, peer) = recv(&s);
    assert_eq!(oack[1], 6, "the OACK: {oack:?}");
    (s, peer)
}

/// Acknowledges the OACK and then `blocks` blocks, each once it arrived;
/// their bytes.
fn acknowledge(s: &UdpSocket, peer: SocketAddr, blocks: u16) -> Vec<u8> {
    ack(s, peer, 0);
    let mut received = Vec::new();
    for block in 1..=blocks {
        let (data, _) = recv(s);
        assert_eq!(data[..4], [0, 3, 0, block as u8], "{data:?}");
        received.extend_from_slice(&data[4..]);
        ack(s, peer, block);
    }
    received
}

fn error(code: u16, message: &[u8]) -> Vec<u8> {
    let mut packet = vec![0, 5];
    packet.extend_from_slice(&code.to_be_bytes());
    packet.extend_from_slice(message);
    packet.push(0);
    packet
}

async fn a_phone_refusing_after_the_oack_is_recorded_as_its_refusal(mode: Mode) {
    let recorded = Recorded::start(mode, TftpOptions::default()).await;
    let (s, peer) = ask(recorded.server.addr);
    acknowledge(&s, peer, 0);
    let (data, _) = recv(&s);
    assert_eq!(data[..4], [0, 3, 0, 1]);
    // Its text is the client's own: a forged log line, an escape, more
    // than anyone needs.
    let mut text = b"Disk full\r\nINFO forged line\x1b[2J ".to_vec();
    text.extend_from_slice(&[b'x'; 300]);
    s.send_to(&error(3, &text), peer).unwrap();
    let lines = recorded.lines_after_shutdown().await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(
        line.outcome
            .starts_with("client-error 3 (disk full or allocation exceeded): \"Disk full  INFO forged line [2J xxx"),
        "{line:?}"
    );
    assert!(line.outcome.len() < 140, "cut short: {line:?}");
    assert!(!line.outcome.contains(char::is_control), "{line:?}");
    assert_eq!(line.bytes, 0, "nothing acknowledged: {line:?}");
    assert_eq!(line.protocol, "tftp");
}

async fn a_completed_transfer_is_recorded_whole_once_it_ends(mode: Mode) {
    let recorded = Recorded::start(mode, TftpOptions::default()).await;
    let want = expected(&recorded.f, FILE);
    let (s, peer) = ask(recorded.server.addr);
    let mut received = acknowledge(&s, peer, 1);
    let (data, _) = recv(&s);
    assert_eq!(
        data[..4],
        [0, 3, 0, 2],
        "block 2 once block 1 is acknowledged"
    );
    // Under way, the phone has not got the file yet: nothing says so.
    assert_eq!(recorded.lines_by_now().await, [], "a line before the end");
    received.extend_from_slice(&data[4..]);
    ack(&s, peer, 2);
    let mut block = 3u16;
    loop {
        let (data, _) = recv(&s);
        assert_eq!(u16::from_be_bytes([data[2], data[3]]), block);
        received.extend_from_slice(&data[4..]);
        ack(&s, peer, block);
        if data.len() - 4 < 8 {
            break;
        }
        block += 1;
    }
    assert_eq!(received, want);
    let lines = recorded.lines_after_shutdown().await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].outcome, "ok");
    assert_eq!(lines[0].bytes, want.len() as i64);
}

/// A second fetch within the repeat window is a line of its own once the
/// phone's file changed in between: on another node, the refetch a resync
/// asked for would otherwise go unrecorded.
async fn a_refetch_of_changed_bytes_is_no_repeat(mode: Mode) {
    let recorded = Recorded::start(mode, TftpOptions::default()).await;
    let (first, _, _) = fetch_raw(recorded.server.addr, FILE, &[]);
    // The same bytes again: a repeat, not written twice.
    let (again, _, _) = fetch_raw(recorded.server.addr, FILE, &[]);
    assert_eq!(first, again);
    let mut events = recorded.f.mirror.subscribe();
    recorded
        .f
        .write(&[phone(
            "00:15:65:00:00:01",
            dialtone_sync::Family::Yealink,
            "T46S",
            &["Front desk", "Back office"],
        )])
        .await;
    while let Ok(event) = events.try_recv() {
        recorded.provisioner.invalidate(&event);
    }
    let (changed, _, _) = fetch_raw(recorded.server.addr, FILE, &[]);
    assert_ne!(first, changed, "the line's new name is in the file");
    let lines = recorded.lines_after_shutdown().await;
    let bytes: Vec<i64> = lines.iter().map(|l| l.bytes).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(bytes.contains(&(first.len() as i64)), "{lines:?}");
    assert!(bytes.contains(&(changed.len() as i64)), "{lines:?}");
}

async fn a_client_that_never_acknowledges_leaves_no_line(mode: Mode) {
    // The server logs from threads of its own, and the log's limit is the
    // process's, per tenant: other tests here make such lines, so only a
    // process of its own reads them.
    let own_process =
        std::env::var_os("NEXTEST_EXECUTION_MODE").is_some_and(|m| m == "process-per-test");
    let logged = own_process.then(dialtone_sync::testing::logs::LogLines::process_wide);
    let recorded = Recorded::start(
        mode,
        TftpOptions {
            shutdown_grace: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await;
    // One refuses the OACK at once, one never answers (a forged source):
    // neither ever acknowledged a packet.
    let (refuses, peer) = ask(recorded.server.addr);
    refuses.send_to(&error(8, b"tsize"), peer).unwrap();
    let (_silent, _) = ask(recorded.server.addr);
    let lines = recorded.lines_after_shutdown().await;
    assert_eq!(lines, [], "a line for a client that acknowledged nothing");
    // The operator still reads of the refusal, the phone named (the silent
    // one ended with the shutdown, which says nothing of the client).
    if let Some(logged) = logged {
        let said = logged.containing("before acknowledging any of it");
        assert_eq!(said.len(), 1, "{said:#?}");
        assert!(
            said[0].contains("001565000001") && said[0].contains("client-error 8"),
            "{said:#?}"
        );
    }
}

async fn a_stalled_transfer_records_what_was_acknowledged(mode: Mode) {
    let recorded = Recorded::start(
        mode,
        TftpOptions {
            timeout: Duration::from_secs(1),
            max_send_retries: 1,
            ..Default::default()
        },
    )
    .await;
    let (s, peer) = ask(recorded.server.addr);
    acknowledge(&s, peer, 2);
    // Then silence, until the server gives up and says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (packet, _) = recv(&s);
        if packet[1] == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "never stalled");
    }
    let lines = recorded.lines_after_shutdown().await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].outcome.starts_with("stalled"), "{lines:?}");
    assert_eq!(lines[0].bytes, 16, "two blocks of 8: {lines:?}");
}

async fn a_transfer_cut_by_the_shutdown_says_so(mode: Mode) {
    let recorded = Recorded::start(
        mode,
        TftpOptions {
            shutdown_grace: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await;
    let (s, peer) = ask(recorded.server.addr);
    acknowledge(&s, peer, 1);
    let lines = recorded.lines_after_shutdown().await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].outcome.starts_with("shutdown"), "{lines:?}");
    assert_eq!(lines[0].bytes, 8, "{lines:?}");
}

async fn client_errors_are_counted_by_code(mode: Mode) {
    let counted = client_errors();
    let recorded = Recorded::start(mode, TftpOptions::default()).await;
    for (code, label) in [(3, "3"), (8, "8"), (42, "other")] {
        let before = counted.get(label);
        let (s, peer) = ask(recorded.server.addr);
        if code == 3 {
            acknowledge(&s, peer, 0);
        }
        s.send_to(&error(code, b"no"), peer).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while counted.get(label) <= before {
            assert!(Instant::now() < deadline, "code {code} not counted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `dialtone_tftp_client_errors_total` by code, as this process records it.
#[derive(Default)]
struct ClientErrors(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl ClientErrors {
    fn get(&self, code: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(code)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

impl metrics::Recorder for &'static ClientErrors {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        if key.name() != "dialtone_tftp_client_errors_total" {
            return metrics::Counter::noop();
        }
        let code = key
            .labels()
            .find(|l| l.key() == "code")
            .map_or(String::new(), |l| l.value().to_string());
        let mut counts = self.0.lock().unwrap();
        metrics::Counter::from_arc(counts.entry(code).or_default().clone())
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// The process's recorder, installed by the first call.
fn client_errors() -> &'static ClientErrors {
    static COUNTED: OnceLock<&'static ClientErrors> = OnceLock::new();
    COUNTED.get_or_init(|| {
        let counted: &'static ClientErrors = Box::leak(Box::default());
        metrics::set_global_recorder(counted).expect("the only recorder of this test process");
        counted
    })
}

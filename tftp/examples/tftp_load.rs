//! An independent TFTP load client for `scripts/bench storm`: it shares no
//! code with the server or with phlem, so a figure it measures is not a
//! property of one client talking to its twin. It fetches every file of a
//! folder (`render --all` output) round robin, `--concurrency` transfers at
//! once, each worker on a socket of its own (like a phone that keeps its
//! source port), compares every file with the folder's bytes, and prints
//! one JSON line: transfers, failures, retransmits (the client's: requests
//! and ACKs sent again after a silence), server retransmits (DATA blocks
//! received a second time: the server's timeout passed before our ACK
//! arrived), transfers/s, p50 and p99 in ms, and its own CPU seconds (from
//! /proc/self/stat).
//!
//! `--sources N` spreads the workers over N source addresses from
//! `--source-base` (127.0.0.1) up, as many phones would be, so that a
//! server's per-source limits see phones rather than one host.
//!
//! cargo run --release -p dialtone-tftp --example tftp_load -- \
//!     --target 127.0.0.1:6969 --dir static --transfers 20000 --concurrency 100 [--blksize 1428 --tsize] \
//!     [--sources 100 --source-base 127.0.3.1]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

struct Args {
    target: SocketAddr,
    dir: std::path::PathBuf,
    transfers: usize,
    concurrency: usize,
    blksize: Option<usize>,
    tsize: bool,
    timeout: Duration,
    retries: u32,
    sources: u32,
    source_base: Ipv4Addr,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            target: "127.0.0.1:6969".parse().unwrap(),
            dir: ".".into(),
            transfers: 10_000,
            concurrency: 100,
            blksize: None,
            tsize: false,
            timeout: Duration::from_millis(1000),
            retries: 5,
            sources: 1,
            source_base: Ipv4Addr::LOCALHOST,
        }
    }
}

fn args() -> Args {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => a.target = value().parse().expect("--target HOST:PORT"),
            "--dir" => a.dir = value().into(),
            "--transfers" => a.transfers = value().parse().expect("--transfers N"),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency N"),
            "--blksize" => a.blksize = Some(value().parse().expect("--blksize N")),
            "--timeout-ms" => a.timeout = Duration::from_millis(value().parse().expect("ms")),
            "--retries" => a.retries = value().parse().expect("--retries N"),
            "--tsize" => a.tsize = true,
            "--sources" => a.sources = value().parse().expect("--sources N"),
            "--source-base" => a.source_base = value().parse().expect("--source-base IPV4"),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(a.sources >= 1, "--sources must be at least 1");
    a
}

/// The address worker `worker` sends from: the workers take the sources
/// in turn.
fn source_of(a: &Args, worker: usize) -> Ipv4Addr {
    let offset = (worker % a.sources as usize) as u32;
    Ipv4Addr::from(u32::from(a.source_base).wrapping_add(offset))
}

/// Wire format, RFC 1350 and 2347: opcode, then NUL-terminated strings.
fn read_request(file: &str, blksize: Option<usize>, tsize: bool) -> Vec<u8> {
    let mut fields = vec![file.to_string(), "octet".to_string()];
    if let Some(b) = blksize {
        fields.extend(["blksize".into(), b.to_string()]);
    }
    if tsize {
        fields.extend(["tsize".into(), "0".into()]);
    }
    let mut out = vec![0u8, 1];
    for f in fields {
        out.extend_from_slice(f.as_bytes());
        out.push(0);
    }
    out
}

fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

#[derive(Default)]
struct Totals {
    done: AtomicUsize,
    failed: AtomicUsize,
    retransmits: AtomicU64,
    /// DATA blocks received again: the server's retransmissions.
    server_retransmits: AtomicU64,
}

/// One transfer; `Err` says why it failed.
async fn fetch(
    socket: &UdpSocket,
    a: &Args,
    name: &str,
    want: &[u8],
    totals: &Totals,
    buf: &mut [u8],
) -> Result<(), String> {
    let mut last = read_request(name, a.blksize, a.tsize);
    socket
        .send_to(&last, a.target)
        .await
        .map_err(|e| e.to_string())?;
    let mut server: Option<SocketAddr> = None;
    let (mut got, mut next, mut tries) = (Vec::with_capacity(want.len()), 1u16, 0);
    let size = a.blksize.unwrap_or(512);
    loop {
        let (n, from) = match tokio::time::timeout(a.timeout, socket.recv_from(buf)).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => {
                tries += 1;
                if tries > a.retries {
                    return Err("timeout".into());
                }
                totals.retransmits.fetch_add(1, Ordering::Relaxed);
                socket
                    .send_to(&last, server.unwrap_or(a.target))
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
        };
        // The first answer fixes the server's transfer address.
        if *server.get_or_insert(from) != from || n < 4 {
            continue;
        }
        match u16::from_be_bytes([buf[0], buf[1]]) {
            6 if next == 1 && got.is_empty() => last = ack(0).to_vec(),
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                if block == next {
                    got.extend_from_slice(&buf[4..n]);
                    last = ack(block).to_vec();
                    next = next.wrapping_add(1);
                    tries = 0;
                    if n - 4 < size {
                        socket
                            .send_to(&last, from)
                            .await
                            .map_err(|e| e.to_string())?;
                        return if got == want {
                            Ok(())
                        } else {
                            Err("wrong bytes".into())
                        };
                    }
                } else {
                    // An old block: the server sent it again before our
                    // ACK reached it, and that ACK is on its way.
                    totals.server_retransmits.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            5 => {
                return Err(String::from_utf8_lossy(&buf[4..n])
                    .trim_end_matches('\0')
                    .into())
            }
            _ => continue,
        }
        socket
            .send_to(&last, from)
            .await
            .map_err(|e| e.to_string())?;
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name's closing parenthesis; utime and stime
    // are the 14th and 15th of the whole line.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let a = Arc::new(args());
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&a.dir)
        .expect("--dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no files in --dir");
    let files = Arc::new(files);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let totals = Arc::new(Totals::default());
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut samples: Vec<u32> = runtime.block_on(async {
        let mut workers = Vec::new();
        for worker in 0..a.concurrency {
            let (a, files, totals, next) = (a.clone(), files.clone(), totals.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let source = source_of(&a, worker);
                let socket = UdpSocket::bind((source, 0))
                    .await
                    .unwrap_or_else(|e| panic!("binding {source}: {e}"));
                let mut buf = vec![0u8; 65_536];
                let mut micros = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= a.transfers {
                        return micros;
                    }
                    let (name, want) = &files[i % files.len()];
                    let t = Instant::now();
                    match fetch(&socket, &a, name, want, &totals, &mut buf).await {
                        Ok(()) => {
                            micros.push(t.elapsed().as_micros() as u32);
                            totals.done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => {
                            if totals.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("{name}: {why}");
                            }
                        }
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    samples.sort_unstable();
    let pct = |p: f64| {
        samples
            .get(((samples.len().max(1) - 1) as f64 * p) as usize)
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    };
    let done = totals.done.load(Ordering::Relaxed);
    println!(
        "{{\"transfers\": {done}, \"failed\": {}, \"retransmits\": {}, \"server_retransmits\": {}, \
         \"sources\": {}, \"elapsed_s\": {elapsed:.3}, \"per_s\": {:.0}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \
         \"client_cpu_s\": {cpu:.3}}}",
        totals.failed.load(Ordering::Relaxed),
        totals.retransmits.load(Ordering::Relaxed),
        totals.server_retransmits.load(Ordering::Relaxed),
        a.sources,
        done as f64 / elapsed,
        pct(0.5),
        pct(0.99),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(block: u16, body: &[u8]) -> Vec<u8> {
        let mut packet = vec![0, 3];
        packet.extend_from_slice(&block.to_be_bytes());
        packet.extend_from_slice(body);
        packet
    }

    /// A server that sends its first block twice, as one whose timeout
    /// passed before the ACK came, then the last block once it is ACKed.
    #[tokio::test]
    async fn a_block_received_twice_is_a_server_retransmit() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut a = args_for(server.local_addr().unwrap());
        a.timeout = Duration::from_secs(5);
        let want: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
        let served = want.clone();
        let serve = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let (_, client) = server.recv_from(&mut buf).await.unwrap();
            let first = data(1, &served[..512]);
            server.send_to(&first, client).await.unwrap();
            server.send_to(&first, client).await.unwrap();
            let (n, _) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &ack(1));
            server
                .send_to(&data(2, &served[512..]), client)
                .await
                .unwrap();
        });
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let totals = Totals::default();
        let mut buf = vec![0u8; 65_536];
        let fetched = fetch(&client, &a, "f.cfg", &want, &totals, &mut buf).await;
        serve.await.unwrap();
        assert_eq!(fetched, Ok(()));
        assert_eq!(totals.server_retransmits.load(Ordering::Relaxed), 1);
        assert_eq!(totals.retransmits.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn workers_take_the_sources_in_turn() {
        let mut a = args_for("127.0.0.1:69".parse().unwrap());
        a.sources = 300;
        a.source_base = Ipv4Addr::new(127, 0, 3, 1);
        assert_eq!(source_of(&a, 0), Ipv4Addr::new(127, 0, 3, 1));
        assert_eq!(source_of(&a, 299), Ipv4Addr::new(127, 0, 4, 44));
        assert_eq!(source_of(&a, 300), Ipv4Addr::new(127, 0, 3, 1));
    }

    fn args_for(target: SocketAddr) -> Args {
        Args {
            target,
            ..Args::default()
        }
    }
}

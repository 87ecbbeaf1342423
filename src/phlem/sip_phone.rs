//! Phones that stay up after booting: each registers its first line with the
//! proxy, then answers the NOTIFYs a platform sends to make phones check
//! their configuration, and fetches its files again as the real phone would.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use dialtone_sync::Family;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::report::Report;
use super::sequence::Phone;
use super::sip::{response, token, Message, Register};

#[derive(Args, Clone, Debug, Default)]
pub struct SipArgs {
    /// After booting, register each phone's first line with this SIP proxy
    /// (HOST:PORT) and answer the NOTIFYs it relays.
    #[arg(long)]
    pub sip_proxy: Option<String>,
    /// Seconds phones stay registered and listening after booting; SIGINT
    /// or SIGTERM ends the wait early, and the report is still written.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// How long a phone told to reboot is away before fetching again.
    #[arg(long, default_value_t = 2000)]
    pub reboot_delay_ms: u64,
    /// Expires asked for in the REGISTER.
    #[arg(long, default_value_t = 3600)]
    pub expires: u32,
}

/// `--hold` at most, in seconds (about 115 days, as a ramp's at most).
const MAX_HOLD_S: f64 = 1e7;

impl SipArgs {
    /// `--hold` as a wait. Bounded: past a `Duration`'s range (`1e20`)
    /// making one panicked, and NaN is none either.
    pub fn hold_for(&self) -> Result<Duration> {
        if !(0.0..=MAX_HOLD_S).contains(&self.hold) {
            bail!(
                "--hold {}: must be between 0 and {MAX_HOLD_S} seconds",
                self.hold
            );
        }
        if self.hold > 0.0 && self.sip_proxy.is_none() {
            bail!("--hold needs --sip-proxy");
        }
        Ok(Duration::from_secs_f64(self.hold))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SipStats {
    pub registered: u64,
    /// Phones without a line: nothing to register.
    pub without_line: u64,
    /// NOTIFYs received, retransmissions not counted.
    pub notifies: u64,
    /// NOTIFYs answered 200 (each one starts a re-fetch).
    pub answered: u64,
    /// NOTIFYs answered 489, their event being one phones ignore.
    pub bad_events: u64,
    pub retransmissions: u64,
    pub refetches: Vec<Refetch>,
}

impl SipStats {
    pub fn merge(&mut self, other: SipStats) {
        self.registered += other.registered;
        self.without_line += other.without_line;
        self.notifies += other.notifies;
        self.answered += other.answered;
        self.bad_events += other.bad_events;
        self.retransmissions += other.retransmissions;
        self.refetches.extend(other.refetches);
    }
}

/// One phone's fetch sequence run again because of a NOTIFY.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refetch {
    pub mac: String,
    pub aor: String,
    /// The Event header as received.
    pub event: String,
    pub reboot: bool,
    /// Unix milliseconds.
    pub received_at_ms: u64,
    pub done_at_ms: u64,
    /// File → SHA-256 (hex) of the bytes the phone got.
    pub files: BTreeMap<String, String>,
    /// `file: reason` of the files it failed to get.
    pub failed: Vec<String>,
}

/// Runs one phone's fetch sequence: each file and its bytes or why not.
pub type Fetcher = Arc<
    dyn Fn(Phone) -> Pin<Box<dyn Future<Output = Vec<(String, Result<Vec<u8>, String>)>> + Send>>
        + Send
        + Sync,
>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a NOTIFY's event asks of a phone of `family`: `Some(reboot)` to
/// fetch again (after a reboot or not), `None` for an event phones reject.
/// Without a `reboot` parameter, Yealink (factory setting) and Snom reboot.
fn verdict(family: Family, event: Option<(String, Vec<(String, String)>)>) -> Option<bool> {
    let (package, params) = event?;
    match package.as_str() {
        "check-sync" | "resync" => {
            let asked = params.iter().find(|(k, _)| k == "reboot");
            Some(match asked.map(|(_, v)| v.as_str()) {
                Some("true") => true,
                Some(_) => false,
                None => matches!(family, Family::Yealink | Family::Snom),
            })
        }
        "reboot" => Some(true),
        _ => None,
    }
}

/// The address on this host that reaches `proxy`: phones put it in Contact.
fn local_ip_towards(proxy: SocketAddr) -> Result<std::net::IpAddr> {
    let any: SocketAddr = if proxy.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(proxy)?;
    Ok(probe.local_addr()?.ip())
}

fn lock(report: &Mutex<Report>) -> std::sync::MutexGuard<'_, Report> {
    report.lock().unwrap_or_else(|e| e.into_inner())
}

/// REGISTER with RFC 3261's timer E doubling from T1 = 500 ms; gives up
/// after 7.5 s. `Ok` on 2xx, `Err(reason)` otherwise.
async fn register(socket: &UdpSocket, proxy: SocketAddr, reg: &Register) -> Result<(), String> {
    let request = reg.request();
    let mut buf = vec![0u8; 65536];
    for wait_ms in [500u64, 1000, 2000, 4000] {
        socket
            .send_to(request.as_bytes(), proxy)
            .await
            .map_err(|_| "register_io".to_string())?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        while let Ok(got) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            let (n, _) = got.map_err(|_| "register_io".to_string())?;
            match Message::parse(&buf[..n]) {
                Some(answer) if reg.answers(&answer) => {
                    return match answer.status() {
                        Some(200..=299) => Ok(()),
                        Some(code) => Err(format!("register_{code}")),
                        None => Err("register_protocol".into()),
                    };
                }
                _ => {}
            }
        }
    }
    Err("register_timeout".into())
}

struct Ctx {
    proxy: SocketAddr,
    args: SipArgs,
    fetch: Fetcher,
    report: Arc<Mutex<Report>>,
    stop: CancellationToken,
}

/// One phone: register, tell `registered` how that went, then answer
/// until told to stop.
async fn phone_main(
    ctx: Arc<Ctx>,
    phone: Phone,
    ip: std::net::IpAddr,
    registered: tokio::sync::mpsc::UnboundedSender<bool>,
) {
    let Some(aor) = phone.aor.clone() else {
        lock(&ctx.report).sip.without_line += 1;
        let _ = registered.send(false);
        return;
    };
    let fail = |reason: &str| {
        lock(&ctx.report).record_failure("sip REGISTER", reason);
        let _ = registered.send(false);
    };
    let Ok(socket) = UdpSocket::bind((ip, 0)).await else {
        return fail("register_io");
    };
    let Ok(local) = socket.local_addr() else {
        return fail("register_io");
    };
    let reg = Register {
        aor: aor.clone(),
        local,
        call_id: format!("{}@{}", token(), local.ip()),
        from_tag: token(),
        cseq: 1,
        expires: ctx.args.expires,
        user_agent: phone.user_agent(),
    };
    let started = Instant::now();
    if let Err(reason) = register(&socket, ctx.proxy, &reg).await {
        return fail(&reason);
    }
    {
        let mut report = lock(&ctx.report);
        report.record_ok("sip REGISTER", started.elapsed(), 0, 0);
        report.sip.registered += 1;
    }
    let _ = registered.send(true);
    let to_tag = token();
    // Answers by transaction, so a retransmitted NOTIFY gets the same answer
    // and does not start a second fetch.
    let mut answered: HashMap<(String, String), String> = HashMap::new();
    let mut refetches = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                Err(_) => continue,
            },
        };
        let Some(request) = Message::parse(&buf[..n]) else {
            continue;
        };
        let (Some(method), Some(key)) = (request.method(), request.transaction()) else {
            continue;
        };
        if method == "ACK" {
            continue;
        }
        if let Some(answer) = answered.get(&key) {
            lock(&ctx.report).sip.retransmissions += 1;
            let _ = socket.send_to(answer.as_bytes(), from).await;
            continue;
        }
        let answer = match method {
            "NOTIFY" => {
                let event = request.header("event").unwrap_or_default().to_string();
                let verdict = verdict(phone.family, request.event());
                let mut report = lock(&ctx.report);
                report.sip.notifies += 1;
                match verdict {
                    Some(reboot) => {
                        report.sip.answered += 1;
                        let (ctx, phone) = (ctx.clone(), phone.clone());
                        let aor = aor.to_string();
                        refetches.spawn(refetch(ctx, phone, aor, event, reboot));
                        response(&request, 200, "OK", &to_tag, &[])
                    }
                    None => {
                        report.sip.bad_events += 1;
                        let allow = "Allow-Events: check-sync, resync";
                        response(&request, 489, "Bad Event", &to_tag, &[allow])
                    }
                }
            }
            "OPTIONS" => response(&request, 200, "OK", &to_tag, &[]),
            _ => response(
                &request,
                405,
                "Method Not Allowed",
                &to_tag,
                &["Allow: NOTIFY, OPTIONS, ACK"],
            ),
        };
        let _ = socket.send_to(answer.as_bytes(), from).await;
        // Timer J is 32 s: a bounded memory of recent answers is plenty.
        if answered.len() >= 256 {
            answered.clear();
        }
        answered.insert(key, answer);
    }
    // Fetches under way finish (each is bounded by the transfer timeouts),
    // so the report has them.
    while refetches.join_next().await.is_some() {}
}

async fn refetch(ctx: Arc<Ctx>, phone: Phone, aor: String, event: String, reboot: bool) {
    let received_at_ms = now_ms();
    if reboot {
        tokio::time::sleep(Duration::from_millis(ctx.args.reboot_delay_ms)).await;
    }
    let mut files = BTreeMap::new();
    let mut failed = Vec::new();
    for (file, result) in (ctx.fetch)(phone.clone()).await {
        match result {
            Ok(body) => {
                files.insert(file, hex::encode(sha2::Sha256::digest(&body)));
            }
            Err(reason) => failed.push(format!("{file}: {reason}")),
        }
    }
    // Tests and people watching wait on this line; the report comes at exit.
    eprintln!(
        "phlem: re-fetched {} ({} files, {} failed) after {event:?}",
        phone.mac,
        files.len(),
        failed.len()
    );
    lock(&ctx.report).sip.refetches.push(Refetch {
        mac: phone.mac.to_string(),
        aor,
        event,
        reboot,
        received_at_ms,
        done_at_ms: now_ms(),
        files,
        failed,
    });
}

/// Registers `phones` with the proxy, says so on stderr, and keeps them
/// answering for `--hold` seconds or until SIGINT/SIGTERM.
pub async fn hold(
    args: &SipArgs,
    phones: &[Phone],
    fetch: Fetcher,
    report: Arc<Mutex<Report>>,
) -> Result<()> {
    let wait = args.hold_for()?;
    let Some(proxy) = &args.sip_proxy else {
        return Ok(());
    };
    let proxy = tokio::net::lookup_host(proxy)
        .await
        .with_context(|| format!("--sip-proxy {proxy:?}"))?
        .next()
        .with_context(|| format!("--sip-proxy {proxy:?}: no address"))?;
    let ip = local_ip_towards(proxy).context("finding the address towards the proxy")?;
    let ctx = Arc::new(Ctx {
        proxy,
        args: args.clone(),
        fetch,
        report: report.clone(),
        stop: CancellationToken::new(),
    });
    let (registered_tx, mut registered_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for phone in phones {
        let main = phone_main(ctx.clone(), phone.clone(), ip, registered_tx.clone());
        tasks.spawn(main);
    }
    drop(registered_tx);
    // Every phone reports once (registration gives up by itself), and
    // then keeps its sender while it listens.
    let mut ok = 0;
    for _ in 0..phones.len() {
        match registered_rx.recv().await {
            Some(registered) => ok += usize::from(registered),
            None => break,
        }
    }
    eprintln!(
        "phlem: {ok} of {} phones registered with {proxy}; listening for {}s",
        phones.len(),
        args.hold
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    ctx.stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> Option<(String, Vec<(String, String)>)> {
        let m = format!("NOTIFY sip:a@b SIP/2.0\r\nEvent: {text}\r\n\r\n");
        Message::parse(m.as_bytes()).unwrap().event()
    }

    #[test]
    fn a_hold_is_a_bounded_number_of_seconds() {
        let args = |hold: f64| SipArgs {
            sip_proxy: Some("127.0.0.1:5060".into()),
            hold,
            ..SipArgs::default()
        };
        assert_eq!(args(0.0).hold_for().unwrap(), Duration::ZERO);
        assert_eq!(args(1.5).hold_for().unwrap(), Duration::from_millis(1500));
        assert!(args(MAX_HOLD_S).hold_for().is_ok());
        // Past what a Duration holds, refused rather than a panic.
        for bad in [1e20, f64::INFINITY, f64::NAN, -1.0, MAX_HOLD_S + 1.0] {
            let e = args(bad).hold_for().unwrap_err().to_string();
            assert!(
                e.starts_with("--hold ") && e.contains("between 0 and"),
                "{e}"
            );
        }
        let no_proxy = SipArgs {
            hold: 5.0,
            ..SipArgs::default()
        };
        assert!(no_proxy.hold_for().is_err());
    }

    #[test]
    fn events_and_reboots_by_family() {
        let v = |family, text| verdict(family, event(text));
        assert_eq!(v(Family::Yealink, "check-sync;reboot=false"), Some(false));
        assert_eq!(v(Family::Yealink, "check-sync"), Some(true));
        assert_eq!(v(Family::Snom, "check-sync"), Some(true));
        assert_eq!(v(Family::Poly, "check-sync"), Some(false));
        assert_eq!(v(Family::Poly, "Check-Sync; reboot=true"), Some(true));
        assert_eq!(v(Family::CiscoMpp, "resync"), Some(false));
        assert_eq!(v(Family::CiscoSpa, "reboot"), Some(true));
        assert_eq!(v(Family::Fanvil, "talk"), None);
        assert_eq!(verdict(Family::Fanvil, None), None);
    }
}

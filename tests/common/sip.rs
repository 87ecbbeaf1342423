//! The SIP side of tests: the Kamailio `scripts/test` starts, a raw UDP
//! client that sends NOTIFYs through it, and phlem phones kept registered
//! as a child process.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{dialtone, text};

/// The test proxy and registrar.
pub fn proxy() -> SocketAddr {
    std::env::var("DIALTONE_TEST_SIP_PROXY")
        .expect("DIALTONE_TEST_SIP_PROXY is not set: run the tests through scripts/test, which starts Kamailio")
        .parse()
        .expect("DIALTONE_TEST_SIP_PROXY is HOST:PORT")
}

/// A registrar domain no other test uses: all tests share one Kamailio.
pub fn unique_domain(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}-{}-{nanos}.example.net", std::process::id())
}

/// A status line and the headers of a SIP response.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A UDP socket sending NOTIFYs through the proxy, as a platform would.
pub struct Notifier {
    socket: UdpSocket,
    proxy: SocketAddr,
}

impl Notifier {
    pub fn new() -> Notifier {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notifier {
            socket,
            proxy: proxy(),
        }
    }

    /// The NOTIFY text for `aor` (`user@host`); `call_id` names the
    /// transaction, so sending the same text again is a retransmission.
    pub fn request(&self, aor: &str, event: &str, call_id: &str) -> String {
        let local = self.socket.local_addr().unwrap();
        format!(
            "NOTIFY sip:{aor} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{call_id};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:tests@127.0.0.1>;tag=t{call_id}\r\n\
             To: <sip:{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 NOTIFY\r\n\
             Event: {event}\r\n\
             Subscription-State: terminated\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    /// Sends `request` and waits (bounded, retransmitting) for its final
    /// answer; `None` when none comes within 10 s.
    pub fn send(&self, request: &str) -> Option<Answer> {
        let call_id = request
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap()
            .to_string();
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        let mut next_send = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if Instant::now() >= next_send {
                self.socket.send_to(request.as_bytes(), self.proxy).unwrap();
                next_send = Instant::now() + Duration::from_millis(500);
            }
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let status: u16 = text
                .strip_prefix("SIP/2.0 ")
                .and_then(|r| r.get(..3))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let answer = Answer { status, text };
            if status >= 200 && answer.header("call-id") == Some(call_id.as_str()) {
                return Some(answer);
            }
        }
        None
    }

    pub fn notify(&self, aor: &str, event: &str) -> Option<Answer> {
        let call_id = format!("{:016x}", rand::random::<u64>());
        self.send(&self.request(aor, event, &call_id))
    }
}

/// Registers `aor` (`user@host`) with the socket returned as contact; a
/// phone that then goes away is that socket dropped.
pub fn register(aor: &str) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let user = aor.split('@').next().unwrap();
    let host = aor.split('@').nth(1).unwrap();
    let request = format!(
        "REGISTER sip:{host} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKr{port};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{aor}>;tag=r{port}\r\n\
         To: <sip:{aor}>\r\n\
         Call-ID: reg-{port}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@{local}>\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        port = local.port()
    );
    let mut buf = [0u8; 4096];
    for _ in 0..10 {
        socket.send_to(request.as_bytes(), proxy()).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            if buf[..n].starts_with(b"SIP/2.0 200") {
                return socket;
            }
        }
    }
    panic!("{aor}: Kamailio did not accept the REGISTER");
}

/// `dialtone phlem run ... --hold` as a child process, killed on drop.
pub struct Phlem {
    child: Child,
    stderr: PathBuf,
    pub json: PathBuf,
}

impl Phlem {
    /// Starts phlem with `args` (plus `--json` and `--quiet`) and waits
    /// until its phones registered (`expect` of them).
    pub fn start(dir: &Path, url: &str, args: &[&str], expect: usize) -> Phlem {
        let n = std::fs::read_dir(dir).map_or(0, |d| d.count());
        let stderr = dir.join(format!("phlem-{n}.log"));
        let json = dir.join(format!("phlem-{n}.json"));
        let mut cmd = dialtone(dir, url);
        cmd.args(["phlem", "run", "--quiet", "--json"])
            .arg(&json)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let phlem = Phlem {
            child: cmd.spawn().expect("spawn phlem"),
            stderr,
            json,
        };
        let want = format!("phlem: {expect} of ");
        let registered = super::wait_until(Duration::from_secs(60), || {
            phlem.stderr().contains(&want) || phlem.stderr().contains(" phones registered")
        });
        assert!(
            registered.is_some(),
            "phlem never registered: {}",
            phlem.stderr()
        );
        assert!(phlem.stderr().contains(&want), "{}", phlem.stderr());
        phlem
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (bounded) until phlem logged `count` re-fetches.
    pub fn wait_refetches(&self, count: usize, timeout: Duration) -> bool {
        super::wait_until(timeout, || {
            self.stderr().matches("phlem: re-fetched ").count() >= count
        })
        .is_some()
    }

    /// SIGTERM, a bounded wait for the exit, then the JSON report.
    pub fn stop(mut self) -> serde_json::Value {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let ended = super::wait_until(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(ended.is_some(), "phlem did not stop: {}", self.stderr());
        let report = std::fs::read_to_string(&self.json)
            .unwrap_or_else(|_| panic!("no phlem report: {}", self.stderr()));
        serde_json::from_str(&report).unwrap()
    }
}

impl Drop for Phlem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SHA-256 (hex) of `bytes`, as phlem reports re-fetched files.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The output of a command, for assertion messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

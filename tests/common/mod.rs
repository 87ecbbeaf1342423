//! Drives the real `dialtone` binary: spawn, wait for readiness, read
//! `/readyz`, stop with a signal. Loops are bounded and stop by themselves.
#![allow(dead_code)]

pub mod bounded;
pub mod browser;
pub mod sip;

#[allow(unused_imports)]
pub use bounded::{run, run_start_meant_to_fail, run_with_input, run_within};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TEST_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dialtone"))
}

pub fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")
}

pub fn free_udp_addr() -> SocketAddr {
    not_handed_out(|| {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    })
}

pub fn free_addr() -> SocketAddr {
    not_handed_out(|| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    })
}

/// A port the kernel says is free and this test process has not handed
/// out before: a port is released as soon as it is read, and the kernel
/// may give it again at the next bind, so two listeners of one `serve`
/// were once given the same port (refused as a configuration error).
fn not_handed_out(mut free: impl FnMut() -> SocketAddr) -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..100 {
        let addr = free();
        if !handed_out.contains(&addr.port()) {
            handed_out.push(addr.port());
            return addr;
        }
    }
    panic!("no free port this process has not handed out in 100 tries");
}

/// A command with a clean environment: no config from the developer's shell.
pub fn dialtone(dir: &Path, database_url: &str) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .env_remove("DIALTONE_CONFIG")
        .env_remove("RUST_LOG")
        .env("DIALTONE_SECRETS__KEY", TEST_KEY)
        .env("DIALTONE_DATABASE__URL", database_url)
        .env("DIALTONE_MIRROR__POLL_INTERVAL_MS", "1000");
    for (k, _) in std::env::vars() {
        if k.starts_with("DIALTONE_")
            && !k.starts_with("DIALTONE_TEST_")
            && k != "DIALTONE_SECRETS__KEY"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("DIALTONE_SECRETS__KEY", TEST_KEY)
        .env("DIALTONE_DATABASE__URL", database_url)
        .env(
            "DIALTONE_DATABASE__ACQUIRE_TIMEOUT_MS",
            TEST_ACQUIRE_TIMEOUT_MS,
        )
        .env("DIALTONE_MIRROR__POLL_INTERVAL_MS", "1000");
    cmd
}

/// Every process a test starts waits this long for a database connection
/// unless the test says otherwise. With 1 s, a first TLS connection and a
/// standby's first answer were missed on CI's busy two cores, and the
/// tests, which were about something else, failed for it. A test whose
/// outage makes the node wait for connections over and over sets a shorter
/// one where the waits add up.
pub const TEST_ACQUIRE_TIMEOUT_MS: &str = "10000";

/// `dialtone ARGS` with `input` on standard input.
pub fn with_input(dir: &Path, url: &str, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = dialtone(dir, url);
    cmd.args(args);
    run_with_input(cmd, input)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The TFTP server's two modes (issue 19): a port per transfer, or every
/// transfer from the listening port. TFTP tests run in both.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TftpMode {
    Ported,
    SinglePort,
}

impl TftpMode {
    /// The environment that selects the mode, for `Server::start_with_env`.
    pub fn env(self) -> [(&'static str, &'static str); 1] {
        let on = if self == TftpMode::SinglePort {
            "true"
        } else {
            "false"
        };
        [("DIALTONE_PROVISIONING__TFTP_SINGLE_PORT", on)]
    }

    /// `env` after `base`.
    pub fn with<'a>(self, base: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        base.iter().copied().chain(self.env()).collect()
    }
}

/// `name::ported` and `name::single_port` for each TFTP test `name(mode)`:
/// `tftp_modes!(test: a, b)` for plain tests, `tftp_modes!(tokio: c)` for
/// ones on a two-worker runtime.
#[allow(unused_macros)]
macro_rules! tftp_modes {
    (test: $($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn ported() {
                super::$name($crate::common::TftpMode::Ported)
            }
            #[test]
            fn single_port() {
                super::$name($crate::common::TftpMode::SinglePort)
            }
        }
    )*};
    (tokio: $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ported() {
                super::$name($crate::common::TftpMode::Ported).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn single_port() {
                super::$name($crate::common::TftpMode::SinglePort).await
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use tftp_modes;

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The provisioning listener (phones' side).
    pub prov_addr: SocketAddr,
    pub tftp_addr: SocketAddr,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts `serve` and waits until /readyz answers 200.
    pub fn start(dir: &Path, database_url: &str, extra: &[&str]) -> Server {
        Self::start_with_env(dir, database_url, extra, &[])
    }

    pub fn start_with_env(
        dir: &Path,
        database_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        // A port found free can be taken before the child binds it (by
        // another test's listener or outgoing connection): a start that
        // failed only for that goes again on fresh ports, a few times.
        const STARTS: u32 = 3;
        for start in 1..=STARTS {
            let server = Self::spawn(dir, database_url, extra, env);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some((200, _)) = server.try_get("/readyz") {
                    return server;
                }
                if let Some(status) = server.child_exited() {
                    let stderr = server.stderr();
                    if start < STARTS && stderr.contains("Address already in use") {
                        break;
                    }
                    panic!("dialtone serve exited early ({status}): {stderr}");
                }
                if Instant::now() >= deadline {
                    panic!("dialtone serve never became ready: {}", server.stderr());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!("the last start returns or panics")
    }

    pub fn spawn(dir: &Path, database_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let addr = free_addr();
        let prov_addr = free_addr();
        let tftp_addr = free_udp_addr();
        let stderr_path = dir.join(format!("serve-{}.log", addr.port()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = dialtone(dir, database_url);
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--provisioning-listen")
            .arg(prov_addr.to_string())
            .arg("--tftp-listen")
            .arg(tftp_addr.to_string())
            .env("DIALTONE_PROVISIONING__TEMPLATES_DIR", templates_dir())
            .args(extra);
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn serve");
        Server {
            child,
            addr,
            prov_addr,
            tftp_addr,
            stderr_path,
        }
    }

    fn child_exited(&self) -> Option<String> {
        // Child::try_wait needs &mut; peek through /proc instead.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        stat.split_whitespace()
            .nth(2)
            .filter(|s| *s == "Z")
            .map(|s| s.to_string())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn try_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path)
    }

    pub fn readyz(&self) -> serde_json::Value {
        let (_, body) = self.try_get("/readyz").expect("readyz answers");
        serde_json::from_str(&body).expect("readyz is JSON")
    }

    /// The sum of every series of metric `name` (all its labels) on
    /// `/metrics`.
    pub fn metric_sum(&self, name: &str) -> f64 {
        let (status, text) = self.try_get("/metrics").expect("metrics answer");
        assert_eq!(status, 200);
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn phones(&self) -> u64 {
        self.readyz()["counts"]["phones"].as_u64().unwrap_or(0)
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns the exit code.
    pub fn stop(self) -> i32 {
        self.signal("TERM");
        self.wait_exit()
    }

    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits (bounded) for the process to exit on its own; the exit code.
    pub fn wait_exit(mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("dialtone did not stop on SIGTERM: {}", self.stderr());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.0 GET, enough for health endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_with(addr, path, &[]).map(|(status, _, body)| (status, body))
}

/// Status, headers (lowercase names) and body of a response.
pub type HttpResponse = (u16, Vec<(String, String)>, String);

/// GET with extra headers.
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, body.to_string()))
}

/// Polls until `check` holds, at most `timeout`; returns the time it took.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub const TENANTS_CSV: &str = "slug,name,default_region\nacme,Acme Inc,US\n";

pub fn phones_csv(first: u32, count: u32) -> String {
    let mut s =
        String::from("tenant,mac,family,model,line,extension,display_name,password,registrar\n");
    for n in first..first + count {
        s.push_str(&format!(
            "acme,00:15:65:00:{:02x}:{:02x},yealink,T46S,1,{},Desk {},pw{},sip.example.net\n",
            n / 256,
            n % 256,
            100 + n,
            n,
            n
        ));
    }
    s
}

/// The SQLite database a test's `serve` uses, in its temp dir.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("dialtone.db").display())
}

/// `dialtone token create ARGS...`; the token it prints once.
pub fn create_token(dir: &Path, url: &str, args: &[&str]) -> String {
    let mut cmd = dialtone(dir, url);
    cmd.args(["token", "create"]).args(args);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// One file over TFTP with `phlem fetch`, as a phone would; `None` on failure.
pub fn tftp_fetch(dir: &Path, url: &str, server: SocketAddr, file: &str) -> Option<String> {
    let mut cmd = dialtone(dir, url);
    cmd.args(["phlem", "fetch", "--timeout-ms", "300", "--retries", "2"])
        .arg(format!("tftp://{server}/{file}"));
    let out = run(cmd);
    out.status.success().then(|| text(&out.stdout))
}
/// Has a `--demo` node serve something of every kind its metrics count: an
/// HTTP file, an HTTP miss, a TFTP file, a lookup with a token made on the
/// command line, and a tenant's admin list (a walk).
pub fn exercise_demo_node(dir: &Path, url: &str, server: &Server) {
    assert_eq!(
        http_get(server.prov_addr, "/0015654aa937.cfg").unwrap().0,
        200
    );
    assert_eq!(
        http_get(server.prov_addr, "/001565ffffff.cfg").unwrap().0,
        404
    );
    assert!(tftp_fetch(dir, url, server.tftp_addr, "0015654aa937.cfg").is_some());
    let token = create_token(
        dir,
        url,
        &["--scope", "lookup", "--tenant", "demo", "--name", "pbx"],
    );
    assert!(wait_until(Duration::from_secs(10), || {
        server
            .try_get(&format!("/v1/lookup?number=%2B15550101234&key={token}"))
            .is_some_and(|(status, _)| status == 200)
    })
    .is_some());
    let reader = create_token(
        dir,
        url,
        &[
            "--scope",
            "tenant-read",
            "--tenant",
            "demo",
            "--name",
            "ops",
        ],
    );
    let bearer = format!("Bearer {reader}");
    assert!(wait_until(Duration::from_secs(10), || {
        http_get_with(server.addr, "/v1/phones", &[("Authorization", &bearer)])
            .is_some_and(|(status, _, _)| status == 200)
    })
    .is_some());
}

/// `dialtone render --all` into `dir/rendered`, with the server's base URL
/// (templates build URLs from it), so its files compare with what phones
/// fetched.
pub fn render_all(dir: &Path, url: &str, base_url: &str) -> PathBuf {
    let rendered = dir.join("rendered");
    let mut render = dialtone(dir, url);
    render
        .args(["render", "--all", "--out"])
        .arg(&rendered)
        .env("DIALTONE_PROVISIONING__BASE_URL", base_url);
    let out = run(render);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    rendered
}

/// A TFTP read request for `file` in `mode`, with options as name and value.
pub fn rrq_with(file: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut packet = vec![0, 1];
    let fields = options.iter().flat_map(|(name, value)| [*name, *value]);
    for field in [file, mode].into_iter().chain(fields) {
        packet.extend_from_slice(field.as_bytes());
        packet.push(0);
    }
    packet
}

/// A plain octet-mode read request for `file`, as most phones send it.
pub fn rrq(file: &str) -> Vec<u8> {
    rrq_with(file, "octet", &[])
}

/// One file over TFTP in process (RFC 1350: 512-byte blocks, no options),
/// cheap enough to keep a server busy from a test. `None` on an error
/// packet, or when the server stays silent through three timeouts.
pub fn tftp_get(server: SocketAddr, file: &str) -> Option<Vec<u8>> {
    tftp_read(std::net::Ipv4Addr::LOCALHOST, server, file).ok()
}

/// `tftp_get` from a client socket on `source` (127.0.0.N stands for a
/// source of its own): the bytes, or the error packet's text.
pub fn tftp_read(
    source: std::net::Ipv4Addr,
    server: SocketAddr,
    file: &str,
) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| e.to_string();
    let socket = UdpSocket::bind((source, 0)).map_err(io)?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(io)?;
    let mut last = rrq(file);
    let mut to = server;
    socket.send_to(&last, to).map_err(io)?;
    let (mut body, mut expected, mut silent) = (Vec::new(), 1u16, 0);
    let mut buf = [0u8; 516];
    // At most 64 KiB of blocks and a few timeouts: the loop always ends.
    for _ in 0..(128 + 3) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(_) => {
                silent += 1;
                if silent > 3 {
                    return Err("no answer".into());
                }
                socket.send_to(&last, to).map_err(io)?;
                continue;
            }
        };
        if n < 4 || (expected > 1 && from != to) {
            continue;
        }
        match u16::from_be_bytes([buf[0], buf[1]]) {
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                if block == expected {
                    body.extend_from_slice(&buf[4..n]);
                    to = from;
                    expected = expected.wrapping_add(1);
                }
                last = vec![0, 4, buf[2], buf[3]];
                socket.send_to(&last, to).map_err(io)?;
                if block == expected.wrapping_sub(1) && n < 516 {
                    return Ok(body);
                }
            }
            5 => return Err(String::from_utf8_lossy(&buf[4..n.saturating_sub(1)]).into()),
            op => return Err(format!("opcode {op}")),
        }
    }
    Err("too long".into())
}

/// The admin API with one bearer token; every response body is kept so a
/// test can search them all at the end.
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
    pub seen: std::sync::Mutex<String>,
}

impl Api {
    pub fn new(addr: SocketAddr, token: String) -> Api {
        // Plain HTTP on loopback, but reqwest wants a provider chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            client: reqwest::Client::new(),
            base: format!("http://{addr}"),
            token,
            seen: Default::default(),
        }
    }

    /// [`Api::send`], sent again while the answer is 503 `busy` (at most
    /// 20 tries, 250 ms apart): a node starved of CPU on a loaded machine
    /// may not get a pool connection within its acquire timeout, and
    /// `busy` means nothing was changed, so the same request again is
    /// safe. Any other answer is returned as it came.
    #[allow(dead_code)]
    pub async fn send_past_busy(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        if_match: Option<&str>,
    ) -> (u16, String, serde_json::Value) {
        let mut tries = 0;
        loop {
            let reply = self
                .send(method.clone(), path, body.clone(), if_match)
                .await;
            tries += 1;
            if reply.0 != 503 || reply.2["error"]["code"] != "busy" || tries == 20 {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Status, ETag header and JSON body (Null when not JSON).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        if_match: Option<&str>,
    ) -> (u16, String, serde_json::Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        let response = request.send().await.expect("API answers");
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.unwrap();
        self.seen.lock().unwrap().push_str(&text);
        (
            status,
            etag,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// `dialtone import FILES...` (with `extra` first): exit code, stdout, stderr.
pub fn import_files(
    dir: &Path,
    database_url: &str,
    extra: &[&str],
    files: &[&Path],
) -> (Option<i32>, String, String) {
    let mut cmd = dialtone(dir, database_url);
    cmd.arg("import").args(extra).args(files);
    let out = run(cmd);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

//! phlem's TFTP client against real servers: dialtone's own, tftpd-hpa,
//! atftpd and dnsmasq (scripts/test installs them), each file's bytes
//! checked, with and without blksize, tsize and windowsize.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pseudo-random file: a single lost or repeated block shows as a mismatch.
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn root_with_files() -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A typical config, a file of exactly two 512-byte blocks (the empty
    // final block case), and a multi-window one.
    let files = vec![
        ("phone.cfg".to_string(), payload(4_600, 1)),
        ("exact.bin".to_string(), payload(1_024, 2)),
        ("big.bin".to_string(), payload(150_000, 3)),
    ];
    for (name, bytes) in &files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    (dir, files)
}

fn id(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().expect("run id");
    assert!(out.status.success(), "id {flag}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// The user and group the test runs as, for the daemons' privilege drop
/// (dropping to root would need root).
fn current_user() -> (String, String) {
    (id("-un"), id("-gn"))
}

/// in.tftpd clears its supplementary groups as it drops to `--user`,
/// which only root may: as anyone else it answers nothing.
fn require_root(daemon: &str) {
    assert!(
        id("-u") == "0",
        "{daemon} needs root (it sets its groups as it drops privileges): \
         run this test as root, as CI does"
    );
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_udp_server(addr: SocketAddr) {
    let ok = wait_until(Duration::from_secs(10), || answers_tftp(addr));
    assert!(ok.is_some(), "TFTP server at {addr} never answered");
}

/// A read of a file that does not exist answers once the server is up.
fn answers_tftp(addr: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    socket
        .send_to(b"\0\x01probe-missing\0octet\0", addr)
        .unwrap();
    let mut buf = [0u8; 516];
    socket.recv_from(&mut buf).is_ok()
}

fn fetch_all(server: SocketAddr, files: &[(String, Vec<u8>)], windowsize: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut variants: Vec<Vec<&str>> = vec![vec![], vec!["--blksize", "1428", "--tsize"]];
    if windowsize {
        variants.push(vec!["--blksize", "1024", "--windowsize", "8", "--tsize"]);
    }
    for (name, want) in files {
        for args in &variants {
            let out = dir.path().join("out");
            let _ = std::fs::remove_file(&out);
            let mut cmd = dialtone(dir.path(), "sqlite::memory:");
            cmd.args(["phlem", "fetch", "--timeout-ms", "500"])
                .args(args)
                .arg("--output")
                .arg(&out)
                .arg(format!("tftp://{server}/{name}"));
            let result = run(cmd);
            assert!(
                result.status.success(),
                "{server} {name} {args:?}: {}",
                text(&result.stderr)
            );
            let got = std::fs::read(&out).unwrap();
            assert!(
                got == *want,
                "{server} {name} {args:?}: {} bytes, want {}",
                got.len(),
                want.len()
            );
        }
    }
    // A missing file is the server's "not found", promptly.
    let mut cmd = dialtone(dir.path(), "sqlite::memory:");
    cmd.args(["phlem", "fetch", &format!("tftp://{server}/no-such-file")]);
    let result = run(cmd);
    assert!(!result.status.success());
    assert!(
        text(&result.stderr).contains("server error 1"),
        "{}",
        text(&result.stderr)
    );
}

#[test]
fn tftpd_hpa() {
    require_root("in.tftpd (tftpd-hpa)");
    let (root, files) = root_with_files();
    let port = free_udp_port();
    let _server = Daemon(
        Command::new("/usr/sbin/in.tftpd")
            .args([
                "--listen",
                "--foreground",
                "--user",
                &current_user().0,
                "--secure",
                "--address",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("in.tftpd (tftpd-hpa) is installed by scripts/test"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_udp_server(addr);
    fetch_all(addr, &files, true);
}

#[test]
fn atftpd() {
    let bin = std::env::var("DIALTONE_TEST_ATFTPD").unwrap_or_else(|_| "/usr/sbin/atftpd".into());
    assert!(
        Path::new(&bin).exists(),
        "{bin} missing: run through scripts/test"
    );
    let (root, files) = root_with_files();
    let port = free_udp_port();
    let (user, group) = current_user();
    let _server = Daemon(
        Command::new(&bin)
            .args([
                "--daemon",
                "--no-fork",
                "--user",
                &user,
                "--group",
                &group,
                "--logfile",
                "/dev/null",
            ])
            .args(["--bind-address", "127.0.0.1", "--port", &port.to_string()])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start atftpd"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_udp_server(addr);
    fetch_all(addr, &files, true);
}

/// A loopback address whose TFTP port (69, the only one dnsmasq serves
/// TFTP on) nobody holds: found by binding it, from a point that differs
/// between processes so that concurrent runs seldom try the same one.
fn free_loopback_for_tftp() -> std::net::Ipv4Addr {
    let start = std::process::id() % 200;
    for n in 0..200 {
        let ip = std::net::Ipv4Addr::new(127, 0, ((start + n) % 200 + 20) as u8, 69);
        match UdpSocket::bind((ip, 69)) {
            Ok(_) => return ip,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => panic!(
                "binding port 69 needs root (or CAP_NET_BIND_SERVICE), as dnsmasq's TFTP \
                 does: run this test as root, as CI does"
            ),
            Err(_) => continue,
        }
    }
    panic!("port 69 is taken on every loopback address tried");
}

#[test]
fn dnsmasq() {
    let (root, files) = root_with_files();
    let user = current_user().0;
    // The address found free may be taken before dnsmasq binds it: a start
    // that failed goes again on another.
    for attempt in 1..=3 {
        let ip = free_loopback_for_tftp();
        let mut server = Daemon(
            Command::new("/usr/sbin/dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--port=0",
                    "--enable-tftp",
                    "--bind-interfaces",
                ])
                .arg(format!("--user={user}"))
                .arg(format!("--listen-address={ip}"))
                .arg(format!("--tftp-root={}", root.path().display()))
                .arg("--pid-file")
                .arg("--conf-file=/dev/null")
                .arg("--log-facility=/dev/null")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("dnsmasq is installed by scripts/test"),
        );
        let addr = SocketAddr::from((ip, 69));
        let up = wait_until(Duration::from_secs(10), || {
            answers_tftp(addr) || matches!(server.0.try_wait(), Ok(Some(_)))
        });
        if let Ok(Some(status)) = server.0.try_wait() {
            let mut stderr = String::new();
            let _ =
                std::io::Read::read_to_string(&mut server.0.stderr.take().unwrap(), &mut stderr);
            assert!(attempt < 3, "dnsmasq on {addr} exited ({status}): {stderr}");
            continue;
        }
        assert!(up.is_some(), "dnsmasq at {addr} never answered");
        fetch_all(addr, &files, false);
        return;
    }
}

#[test]
fn dialtone_serve() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let (_, expected) = http_get(server.prov_addr, "/0015654aa937.cfg").unwrap();
    for args in [
        vec![],
        vec!["--blksize", "1428", "--windowsize", "4", "--tsize"],
    ] {
        let out = dir.path().join("out.cfg");
        let mut cmd = dialtone(dir.path(), &url);
        cmd.args(["phlem", "fetch"]).args(&args).arg("-o").arg(&out);
        cmd.arg(format!("tftp://{}/0015654aa937.cfg", server.tftp_addr));
        let result = run(cmd);
        assert!(result.status.success(), "{}", text(&result.stderr));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
    }
}

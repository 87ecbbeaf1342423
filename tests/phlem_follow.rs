//! `dialtone phlem run` following what served files name: against
//! `dialtone serve --demo` with templates edited to name other places, a
//! URL on the server is followed, one elsewhere never, and a boot file
//! naming too many is cut short; against a server of a few fixed files,
//! missing boot and model files send phones to the names their firmware
//! falls back on.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// The shipped templates, copied so a test can edit them.
fn copied_templates(dir: &Path) -> PathBuf {
    let copy = dir.join("templates");
    for family in std::fs::read_dir(templates_dir()).unwrap() {
        let family = family.unwrap();
        let into = copy.join(family.file_name());
        std::fs::create_dir_all(&into).unwrap();
        for file in std::fs::read_dir(family.path()).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), into.join(file.file_name())).unwrap();
        }
    }
    copy
}

/// `phlem run` of the demo's first Yealink (T46S) and its SPA504G; the
/// exit status and the JSON report.
fn boot_two_demo_phones(dir: &Path, url: &str, target: &str) -> (bool, serde_json::Value) {
    let phones = write_file(
        dir,
        "phones.csv",
        "0015654aa937,yealink,T46S\n001b54aa0001,cisco-spa,SPA504G\n",
    );
    let json = dir.join("run.json");
    let mut cmd = dialtone(dir, url);
    cmd.args(["phlem", "run", "--quiet", "--target", target, "--phones"])
        .arg(&phones)
        .arg("--json")
        .arg(&json);
    let out = run(cmd);
    let report = std::fs::read_to_string(&json)
        .unwrap_or_else(|_| panic!("no report: {}", text(&out.stderr)));
    (out.status.success(), serde_json::from_str(&report).unwrap())
}

#[test]
fn served_files_lead_phones_only_to_the_server_phlem_targets() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // Another host: were phlem to go there, this would see a connection.
    let other_host = TcpListener::bind("127.0.0.2:0").unwrap();
    other_host.set_nonblocking(true).unwrap();
    let elsewhere = other_host.local_addr().unwrap();
    let templates = copied_templates(dir.path());
    // The server's own URL (its address; phlem is given its name), another
    // host, the phone's own file, then more than phlem follows in one boot.
    let mut boot = format!(
        "#!version:1.0.0.1\n\
         include:config \"{{{{ server.base_url }}}}/y000000000000.cfg\"\n\
         include:config \"http://{elsewhere}/elsewhere.cfg\"\n\
         include:config \"{{{{ phone.mac }}}}.cfg\"\n"
    );
    boot.push_str(&"include:config \"y000000000000.cfg\"\n".repeat(9));
    std::fs::write(templates.join("yealink/{mac}.boot.tera"), boot).unwrap();
    std::fs::write(
        templates.join("cisco-spa/spa{model}.cfg.tera"),
        format!("<flat-profile>\n  <Profile_Rule>http://{elsewhere}/spa$MA.xml</Profile_Rule>\n</flat-profile>\n"),
    )
    .unwrap();
    let templates = templates.to_str().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &[("DIALTONE_PROVISIONING__TEMPLATES_DIR", templates)],
    );
    let target = format!("http://localhost:{}", server.prov_addr.port());
    let (ok, r) = boot_two_demo_phones(dir.path(), &url, &target);
    assert!(!ok, "{r}");
    let steps = &r["steps"];
    // Eight followed: the URL, the refused host, the phone's file and five
    // of the nine plain includes; the rest is one `over_cap` failure.
    assert_eq!(steps["yealink y000000000000.cfg"]["transfers"], 6, "{r}");
    assert_eq!(steps["yealink y000000000000.cfg"]["failures"], 0, "{r}");
    assert_eq!(steps["yealink {mac}.cfg"]["transfers"], 1, "{r}");
    assert_eq!(steps["yealink include:config"]["failures"], 1, "{r}");
    assert_eq!(steps["cisco-spa Profile_Rule"]["failures"], 1, "{r}");
    assert!(steps.get("cisco-spa spa{mac}.xml").is_none(), "{r}");
    assert!(steps.get("cisco-spa spa{mac}.cfg").is_none(), "{r}");
    assert_eq!(
        r["failures"],
        serde_json::json!({"other_host": 2, "over_cap": 1}),
        "{r}"
    );
    let called = other_host.accept();
    assert!(
        called
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "phlem went to {elsewhere}: {called:?}"
    );
}

/// A provisioning server with only the files given, recording each path
/// asked for; it stops when dropped.
struct FixedFiles {
    addr: std::net::SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FixedFiles {
    fn serve(files: &'static [(&'static str, &'static str)]) -> FixedFiles {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let path = request.split(' ').nth(1).unwrap_or_default().to_string();
                let answer = match files.iter().find(|(name, _)| *name == path) {
                    Some((_, body)) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    None => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    }
                };
                log.lock().unwrap().push(path);
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        FixedFiles {
            addr,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for FixedFiles {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn missing_boot_and_model_files_send_phones_to_the_fixed_names() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = FixedFiles::serve(&[
        ("/y000000000066.cfg", "#!version:1.0.0.1\n"),
        ("/0015654aa937.cfg", "#!version:1.0.0.1\n"),
        ("/spa001b54aa0001.cfg", "<flat-profile/>\n"),
    ]);
    let target = format!("http://{}", server.addr);
    let (ok, r) = boot_two_demo_phones(dir.path(), &url, &target);
    // The missing boot files and the SPA's model file are failures; the
    // firmware's fallbacks are fetched, in its order.
    assert!(!ok, "{r}");
    assert_eq!(r["failures"], serde_json::json!({"not_found": 3}), "{r}");
    let asked = server.asked();
    let yealink: Vec<&str> = asked
        .iter()
        .map(String::as_str)
        .filter(|p| !p.starts_with("/spa"))
        .collect();
    assert_eq!(
        yealink,
        [
            "/0015654aa937.boot",
            "/y000000000000.boot",
            "/y000000000066.cfg",
            "/0015654aa937.cfg"
        ]
    );
    let spa: Vec<&str> = asked
        .iter()
        .map(String::as_str)
        .filter(|p| p.starts_with("/spa"))
        .collect();
    assert_eq!(spa, ["/spa504g.cfg", "/spa001b54aa0001.cfg"]);
}

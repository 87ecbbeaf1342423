//! A slapd of the test's own, loaded from a generated LDIF: the mirror tests
//! stop, freeze and edit it, which the shared slapd of scripts/test must
//! never see. Configured as services.sh's `start_slapd` is, plus what the
//! tests read: the `stats` log (every search is a `SRCH` line) and an index
//! for the `modifyTimestamp` searches of incremental syncs.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ldif::{ADMIN, BASE, PASSWORD};

/// The filter of `mark_log`'s search: an attribute value no entry has.
const LOG_MARK: &str = "(description=dialtone-test-log-mark)";

pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

fn sbin(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found; scripts/test installs slapd"))
}

impl Slapd {
    pub fn start(ldif: &str) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {d}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             database mdb\n\
             maxsize 1073741824\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ADMIN}\"\n\
             rootpw {PASSWORD}\n\
             directory {db}\n\
             index objectClass eq\n\
             index modifyTimestamp eq\n",
            d = dir.path().display(),
            db = db.display()
        );
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        std::fs::write(dir.path().join("data.ldif"), ldif).unwrap();
        let out = Command::new(sbin("slapadd"))
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(dir.path().join("data.ldif"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Handed out as the servers' ports are: while slapd is stopped its
        // port is free, and a node restarted then once took it for a
        // listener, which every source was refused as the node itself.
        let port = crate::common::free_addr().port();
        let mut slapd = Slapd {
            dir,
            port,
            child: None,
        };
        slapd.resume();
        slapd
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("stats.log")
    }

    /// Starts (or restarts) slapd on the same port and data; waits until it accepts.
    pub fn resume(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        // `-d stats` keeps slapd in the foreground (our child to stop) and
        // logs each operation to stderr.
        let child = Command::new(sbin("slapd"))
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(self.url())
            .args(["-d", "stats"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "slapd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills slapd: connections are refused until `resume`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// SIGSTOP: the kernel still accepts connections, nobody answers.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Searches slapd has received so far (its `SRCH` log lines), the
    /// tests' own `mark_log` searches aside.
    pub fn searches(&self) -> usize {
        self.search_lines(|l| !l.contains(LOG_MARK))
    }

    fn search_lines(&self, wanted: impl Fn(&str) -> bool) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" SRCH base=") && wanted(l))
            .count()
    }

    /// Sends a search of the test's own and waits (bounded) until slapd has
    /// logged it: a search that reached slapd before it is in the log too,
    /// so `searches` then counts every search sent before this call.
    pub fn mark_log(&self) {
        let marks = self.search_lines(|l| l.contains(LOG_MARK));
        let out = Command::new("ldapsearch")
            .args(["-x", "-H", &self.url(), "-D", ADMIN, "-w", PASSWORD])
            .args(["-b", BASE, "-s", "base", LOG_MARK, "dn"])
            .output()
            .unwrap_or_else(|e| panic!("ldapsearch: {e}; scripts/test installs ldap-utils"));
        assert!(
            out.status.success(),
            "ldapsearch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.search_lines(|l| l.contains(LOG_MARK)) <= marks {
            assert!(
                Instant::now() < deadline,
                "slapd never logged the mark search"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `tool` (ldapadd, ldapmodify, ldapdelete) as the admin with `input` on stdin.
    pub fn edit(&self, tool: &str, input: &str) {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ADMIN, "-w", PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}; scripts/test installs ldap-utils"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

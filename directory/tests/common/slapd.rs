//! A private slapd on a free loopback port, loaded with the test LDIF, for
//! tests that must stop, freeze or reconfigure their server without
//! disturbing the shared one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct PrivateSlapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// With TLS, also LDAP over TLS from the first byte (ldaps://).
    pub ldaps_port: Option<u16>,
    child: Option<Child>,
}

fn slapd_bin(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found; scripts/test installs slapd"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateSlapd {
    pub fn start(tls: Option<&Tls>) -> PrivateSlapd {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let mut conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {dir}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n",
            dir = dir.path().display()
        );
        if let Some(tls) = tls {
            for (file, pem) in [
                ("ca.pem", &tls.ca_pem),
                ("cert.pem", &tls.cert_pem),
                ("key.pem", &tls.key_pem),
            ] {
                std::fs::write(dir.path().join(file), pem).unwrap();
            }
            conf.push_str(&format!(
                "TLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/cert.pem\nTLSCertificateKeyFile {d}/key.pem\n",
                d = dir.path().display()
            ));
        }
        conf.push_str(&format!(
            "database mdb\nmaxsize 104857600\nsuffix \"{base}\"\nrootdn \"{admin}\"\nrootpw {pw}\ndirectory {db}\nindex objectClass eq\n",
            base = super::LDAP_BASE,
            admin = super::LDAP_ADMIN,
            pw = super::LDAP_PASSWORD,
            db = db.display()
        ));
        let conf_path = dir.path().join("slapd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let ldif = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/directory.ldif");
        let status = Command::new(slapd_bin("slapadd"))
            .arg("-f")
            .arg(&conf_path)
            .arg("-l")
            .arg(&ldif)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "slapadd failed");
        let mut slapd = PrivateSlapd {
            dir,
            port: free_port(),
            ldaps_port: tls.map(|_| free_port()),
            child: None,
        };
        slapd.resume_serving();
        slapd
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.port)
    }

    /// The ldaps:// listener, by the name its certificate also carries.
    pub fn ldaps_url(&self) -> String {
        let port = self.ldaps_port.expect("started with TLS");
        format!("ldaps://localhost:{port}/")
    }

    /// Starts (or restarts) the server on the same port and waits until it accepts.
    pub fn resume_serving(&mut self) {
        let conf = self.dir.path().join("slapd.conf");
        let mut listeners = self.url();
        if let Some(port) = self.ldaps_port {
            listeners.push_str(&format!(" ldaps://127.0.0.1:{port}/"));
        }
        // `-d 0` keeps slapd in the foreground, so it is our child to stop.
        let child = Command::new(slapd_bin("slapd"))
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(listeners)
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in std::iter::once(self.port).chain(self.ldaps_port) {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "slapd did not start on 127.0.0.1:{port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Kills the server: connections are refused from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("slapd running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGSTOP: connections are accepted by the kernel but never answered.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    pub fn thaw(&self) {
        self.signal("CONT");
    }
}

impl Drop for PrivateSlapd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal_quiet("CONT");
        }
        self.stop();
    }
}

impl PrivateSlapd {
    fn signal_quiet(&self, signal: &str) -> std::io::Result<()> {
        if let Some(child) = &self.child {
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()?;
        }
        Ok(())
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost it signed.
pub fn test_tls() -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dialtone test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    Tls {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

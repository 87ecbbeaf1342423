//! What every mirror test does: tenants with mirrored sources on a test's
//! slapd, a running `dialtone serve`, the sources' state from the admin
//! API, and PBX-shaped lookups over keep-alive connections.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::ldif::{self, REGIONS};
use crate::slapd::Slapd;

/// Loopback is where the test's slapd listens; the operator must allow it.
pub const NETWORKS: (&str, &str) = (
    "DIALTONE_LOOKUP__SOURCE_NETWORKS",
    r#"["public", "127.0.0.0/8"]"#,
);

/// Much longer than any sync of these directories takes, short enough for
/// a failing test to end.
pub const SYNC_WAIT: Duration = Duration::from_secs(60);

pub fn tenant_of(region: &str) -> String {
    format!("t{}", region.to_ascii_lowercase())
}

/// Tenants (one per region), their mirrored sources on `slapd` with
/// `extra` settings, and keys: lookup keys by tenant, and an admin key.
pub struct Setup {
    pub keys: HashMap<String, String>,
    pub admin: String,
}

pub fn setup(dir: &Path, url: &str, slapd: &Slapd, extra: serde_json::Value) -> Setup {
    import_sources(dir, url, slapd, &extra);
    let keys = REGIONS
        .iter()
        .map(|(_, r)| {
            let t = tenant_of(r);
            let key = create_token(
                dir,
                url,
                &["--scope", "lookup", "--tenant", t.as_str(), "--name", "pbx"],
            );
            (t, key)
        })
        .collect();
    let admin = create_token(dir, url, &["--scope", "global-admin", "--name", "ops"]);
    Setup { keys, admin }
}

pub fn serve(dir: &Path, url: &str) -> Server {
    // The test asks every form of every number, some 56,000 lookups on a
    // few tenants' keys as fast as it can: far past `lookup.tenant_rate`,
    // which would answer most of them 429.
    Server::start_with_env(
        dir,
        url,
        &[],
        &[
            NETWORKS,
            ("DIALTONE_LOOKUP__TENANT_RATE", "1000000"),
            ("DIALTONE_LOOKUP__TENANT_BURST", "1000000"),
        ],
    )
}

/// The `mirror` object of a source in the admin API.
pub fn mirror_status(server: &Server, admin: &str, tenant: &str) -> serde_json::Value {
    let bearer = format!("Bearer {admin}");
    let (status, _, body) = http_get_with(
        server.addr,
        &format!("/v1/tenants/{tenant}/directory-sources/ad"),
        &[("Authorization", &bearer)],
    )
    .expect("admin API answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["mirror"].clone()
}

/// Waits until every tenant's mirror has finished a full sync.
pub fn wait_synced(server: &Server, admin: &str) {
    for (_, region) in REGIONS {
        let tenant = tenant_of(region);
        let synced = wait_until(SYNC_WAIT, || {
            !mirror_status(server, admin, &tenant)["last_full_sync"].is_null()
        });
        assert!(
            synced.is_some(),
            "{tenant}: no full sync: {} {}",
            mirror_status(server, admin, &tenant),
            server.stderr()
        );
    }
}

/// One keep-alive connection, as a PBX holds one.
pub struct Pbx {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Pbx {
    pub fn connect(addr: SocketAddr) -> Pbx {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Pbx {
            reader: BufReader::new(stream),
            addr,
        }
    }

    /// The plain-text answer (the name, empty on a miss) and its status.
    pub fn lookup(&mut self, key: &str, number: &str) -> (u16, String) {
        let number: String = number
            .bytes()
            .map(|b| match b {
                b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let request = format!(
            "GET /v1/lookup?number={number}&key={key} HTTP/1.1\r\nHost: {}\r\nUser-Agent: freeswitch-cidlookup/1.0\r\n\r\n",
            self.addr
        );
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

/// Asks every expectation over `threads` keep-alive connections; the misses.
pub fn ask_all(server: &Server, setup: &Setup, cases: &[(String, String, String)]) -> Vec<String> {
    let chunk = cases.len().div_ceil(4).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut pbx = Pbx::connect(server.addr);
                    let mut wrong = Vec::new();
                    for (tenant, form, name) in part {
                        let got = pbx.lookup(&setup.keys[tenant], form);
                        if got != (200, name.clone()) {
                            wrong.push(format!("{tenant} {form}: {got:?}, want {name:?}"));
                        }
                    }
                    wrong
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Imports the tenants and their mirrored sources (again: an import while
/// `serve` runs changes its sources), with `extra` settings.
pub fn import_sources(dir: &Path, url: &str, slapd: &Slapd, extra: &serde_json::Value) {
    let tenants: Vec<_> = REGIONS
        .iter()
        .map(|(_, r)| serde_json::json!({ "slug": tenant_of(r), "name": r, "default_region": r }))
        .collect();
    let sources: Vec<_> = REGIONS
        .iter()
        .map(|(ou, r)| {
            let mut settings = serde_json::json!({
                "url": slapd.url(),
                "bind_dn": ldif::ADMIN,
                "base_dn": format!("ou={ou},ou=people,{}", ldif::BASE),
                "filter": "(objectClass=inetOrgPerson)",
                "number_attributes": ["telephoneNumber", "mobile", "homePhone"],
                "name_attributes": ["displayName", "cn"],
                "mode": "mirror",
            });
            for (k, v) in extra.as_object().unwrap() {
                settings[k] = v.clone();
            }
            serde_json::json!({
                "tenant": tenant_of(r), "name": "ad", "kind": "ldap", "timeout_ms": 250,
                "settings": settings, "secret": ldif::PASSWORD,
            })
        })
        .collect();
    let data = write_file(
        dir,
        "tenants.json",
        &serde_json::json!({ "tenants": tenants, "directory_sources": sources }).to_string(),
    );
    let mut import = dialtone(dir, url);
    import.arg("import").arg(&data);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

//! Caller-name lookups through the real binary: sources imported from a
//! file, a key from `dialtone token create`, requests byte-for-byte like
//! the PBXes send them, and a directory edit reaching the running cache.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Sends `request` as is and returns status and body.
fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn setup(dir: &std::path::Path, url: &str) -> String {
    let ldap = std::env::var("DIALTONE_TEST_LDAP_URL").expect("run through scripts/test");
    let data = write_file(
        dir,
        "acme.json",
        &serde_json::json!({
            "tenants": [{ "slug": "acme", "name": "Acme", "default_region": "US" }],
            "directory": [
                { "tenant": "acme", "external_id": "r1", "name": "Acme Reception", "numbers": [{ "number": "+1 (555) 010-1200" }] }
            ],
            "directory_sources": [{
                "tenant": "acme", "name": "ad", "kind": "ldap", "timeout_ms": 5000,
                "settings": { "url": ldap, "bind_dn": "cn=admin,dc=example,dc=com", "base_dn": "ou=people,dc=example,dc=com" },
                "secret": "secret"
            }]
        })
        .to_string(),
    );
    let mut import = dialtone(dir, url);
    import.arg("import").arg(&data);
    let out = run(import);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("directory sources +1"),
        "{}",
        text(&out.stdout)
    );
    let mut create = dialtone(dir, url);
    create.args([
        "token", "create", "--scope", "lookup", "--tenant", "acme", "--name", "pbx1",
    ]);
    let out = run(create);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn pbx_shaped_requests_against_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let key = setup(dir.path(), &url);
    assert!(key.starts_with("dt_"), "{key}");
    // The directory source the setup configured is the test's slapd, on
    // loopback: the operator allows it.
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[
            (
                "DIALTONE_LOOKUP__SOURCE_NETWORKS",
                r#"["public", "127.0.0.0/8"]"#,
            ),
            // This test is about the shapes of PBX requests, not speed: on a
            // loaded CI machine a first LDAP bind and search can outlast the
            // 300 ms default deadline and answer "" instead of the name.
            ("DIALTONE_LOOKUP__DEADLINE_MS", "5000"),
        ],
    );
    let host = server.addr;

    // FreeSWITCH mod_cidlookup: digits only, key in the query, its User-Agent.
    let cidlookup = |number: &str| {
        format!(
            "GET /v1/lookup?number={number}&key={key} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: freeswitch-cidlookup/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
    };
    assert_eq!(
        raw(host, &cidlookup("15550101240")),
        (200, "Robert Builder".into())
    );
    assert_eq!(
        raw(host, &cidlookup("15550101200")),
        (200, "Acme Reception".into())
    );
    assert_eq!(raw(host, &cidlookup("15550109999")), (200, String::new()));

    // Asterisk: Set(CALLERID(name)=${CURL(http://host/v1/lookup?number=${CALLERID(num)}&key=K)})
    let asterisk = format!(
        "GET /v1/lookup?number=%2B15550101234&key={key} HTTP/1.1\r\nUser-Agent: asterisk-libcurl-agent/1.0\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(host, &asterisk), (200, "Alice Example".into()));
    let opencnam = format!(
        "GET /v3/phone/+15550101234?format=pbx HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(host, &opencnam), (200, "Alice Example".into()));
    let no_key = format!(
        "GET /v1/lookup?number=15550101240 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(host, &no_key), (401, String::new()));

    // An edit imported while the server runs reaches its cache.
    let edit = write_file(
        dir.path(),
        "edit.json",
        r#"{"directory":[{"tenant":"acme","external_id":"r1","name":"Acme Front Desk","numbers":[{"number":"+1 (555) 010-1200"}]}]}"#,
    );
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&edit);
    assert!(run(import).status.success());
    let updated = wait_until(Duration::from_secs(10), || {
        raw(host, &cidlookup("15550101200")).1 == "Acme Front Desk"
    });
    assert!(
        updated.is_some(),
        "the edit never reached the lookup cache: {}",
        server.stderr()
    );
    assert_eq!(server.stop(), 0);

    // The operator's view, past the cache.
    let explained = |number: &str| {
        let mut cli = dialtone(dir.path(), &url);
        cli.args(["lookup", number, "--tenant", "acme"])
            .env(
                "DIALTONE_LOOKUP__SOURCE_NETWORKS",
                r#"["public", "127.0.0.0/8"]"#,
            )
            .env("DIALTONE_LOOKUP__DEADLINE_MS", "5000");
        let out = run(cli);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let shown = explained("(555) 010-1240");
    assert!(
        shown.contains("+15550101240") && shown.contains("answer   Robert Builder (from ad)"),
        "{shown}"
    );

    // A second entry on the front desk's line, of another name and no
    // company: the directory cannot say which called, and says so.
    let shared = write_file(
        dir.path(),
        "shared.json",
        r#"{"directory":[{"tenant":"acme","external_id":"r2","name":"Night Porter","numbers":[{"number":"555 010 1200"}]}]}"#,
    );
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&shared);
    assert!(run(import).status.success());
    let shown = explained("+15550101200");
    assert!(
        shown.contains("not shown: 2 entries list this number") && shown.contains("answer   none"),
        "{shown}"
    );

    let mut bad = dialtone(dir.path(), &url);
    bad.args(["lookup", ")(uid=*", "--tenant", "acme"]);
    let out = run(bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a phone number"),
        "{}",
        text(&out.stderr)
    );
}

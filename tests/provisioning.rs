//! Provisioning over HTTP from the real binary: a demo phone's config with a
//! real client (curl), ETag/304, the same bytes from two processes, and
//! nothing for unknown phones.

mod common;

use std::process::Command;

use common::*;

const DEMO_YEALINK: &str = "/0015654aa937.cfg";

fn curl(args: &[&str]) -> (bool, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed by scripts/test");
    (out.status.success(), out.stdout)
}

#[test]
fn demo_phone_config_over_http_with_curl() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dialtone.db").display());
    // Both nodes sit behind one name, as in a real deployment.
    let base = [("DIALTONE_PROVISIONING__BASE_URL", "http://prov.example.net")];
    let a = Server::start_with_env(dir.path(), &url, &["--demo"], &base);
    // And b answers TFTP from its listening port (issue 19).
    let b = Server::start_with_env(dir.path(), &url, &[], &TftpMode::SinglePort.with(&base));

    let (status, headers, body) = http_get_with(a.prov_addr, DEMO_YEALINK, &[]).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("#!version:1.0.0.1\n"), "{body}");
    assert!(
        body.contains("account.1.display_name = Reception 101"),
        "{body}"
    );
    let etag = headers
        .iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.clone())
        .expect("ETag");

    // A real client gets the same bytes, with the Yealink User-Agent.
    let ua = "Yealink SIP-T46S 66.86.0.15 00:15:65:4a:a9:37";
    let (ok, curl_body) = curl(&["-A", ua, &format!("http://{}{DEMO_YEALINK}", a.prov_addr)]);
    assert!(ok);
    assert_eq!(curl_body, body.as_bytes());

    // Another process over the same data renders identical bytes.
    let (_, headers_b, body_b) = http_get_with(b.prov_addr, DEMO_YEALINK, &[]).unwrap();
    assert_eq!(body_b, body);
    assert!(headers_b.iter().any(|(k, v)| k == "etag" && *v == etag));

    // Every family's device file: non-empty, and identical from both processes.
    for file in [
        "/805ec0123456.cfg",
        "/0004f2abcd01-phone.cfg",
        "/spa001b54aa0001.xml",
        "/0062ecaa0002.xml",
        "/SEP001B54AA0003.cnf.xml",
        "/cfg000b828aa872.xml",
        "/snomD785-000413922D24.htm",
        "/0c383e1a2b3c.cfg",
    ] {
        let (status_a, _, from_a) = http_get_with(a.prov_addr, file, &[]).unwrap();
        let (status_b, _, from_b) = http_get_with(b.prov_addr, file, &[]).unwrap();
        assert_eq!((status_a, status_b), (200, 200), "{file}: {from_a}");
        assert!(from_a.len() > 100, "{file}: {from_a}");
        assert_eq!(from_a, from_b, "{file} differs between processes");
    }

    // Unchanged: 304 without a body.
    let (status, _, body) =
        http_get_with(a.prov_addr, DEMO_YEALINK, &[("If-None-Match", &etag)]).unwrap();
    assert_eq!((status, body.as_str()), (304, ""));

    // XML families come back as XML.
    let (status, headers, body) =
        http_get_with(a.prov_addr, "/SEP001B54AA0003.cnf.xml", &[]).unwrap();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("application/xml")));
    assert!(body.contains("<device>"), "{body}");

    // TFTP serves the very same bytes, to both common clients, in both
    // modes.
    let http_body = http_get(a.prov_addr, DEMO_YEALINK).unwrap().1;
    for tftp in [a.tftp_addr, b.tftp_addr] {
        let port = tftp.port().to_string();
        let atftp_out = dir.path().join("atftp.cfg");
        let status = Command::new("atftp")
            .args([
                "--option",
                "blksize 1428",
                "--get",
                "-r",
                "0015654aa937.cfg",
                "-l",
            ])
            .arg(&atftp_out)
            .args(["127.0.0.1", &port])
            .status()
            .expect("atftp is installed by scripts/test");
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&atftp_out).unwrap(), http_body);
        let hpa_out = dir.path().join("hpa.cfg");
        let status = Command::new("tftp")
            .args([
                "-m",
                "binary",
                "127.0.0.1",
                &port,
                "-c",
                "get",
                "0015654aa937.cfg",
            ])
            .arg(&hpa_out)
            .status()
            .expect("tftp-hpa is installed by scripts/test");
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&hpa_out).unwrap(), http_body);
    }

    // Unknown phones and odd paths reveal nothing.
    assert_eq!(
        http_get(a.prov_addr, "/001565999999.cfg").map(|(s, _)| s),
        Some(404)
    );
    assert_eq!(
        http_get(a.prov_addr, "/..%2f..%2fetc/passwd").map(|(s, _)| s),
        Some(400)
    );
    assert_eq!(a.stop(), 0);
    assert_eq!(b.stop(), 0);
}

#[test]
fn https_is_served_with_a_test_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = write_file(dir.path(), "cert.pem", &cert.cert.pem());
    let key_path = write_file(dir.path(), "key.pem", &cert.signing_key.serialize_pem());
    let https = free_addr();
    let url = format!("sqlite://{}", dir.path().join("dialtone.db").display());
    let env = [
        ("DIALTONE_PROVISIONING__HTTPS_LISTEN", https.to_string()),
        (
            "DIALTONE_PROVISIONING__TLS_CERT",
            cert_path.display().to_string(),
        ),
        (
            "DIALTONE_PROVISIONING__TLS_KEY",
            key_path.display().to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with_env(dir.path(), &url, &["--demo"], &env);
    let plain = http_get(server.prov_addr, DEMO_YEALINK).unwrap().1;
    let resolve = format!("localhost:{}:127.0.0.1", https.port());
    let (ok, body) = curl(&[
        "--cacert",
        &cert_path.display().to_string(),
        "--resolve",
        &resolve,
        &format!("https://localhost:{}{DEMO_YEALINK}", https.port()),
    ]);
    assert!(ok, "curl over TLS failed: {}", server.stderr());
    assert_eq!(body, plain.as_bytes());
    // Certificate verification is on: an unknown CA is refused.
    let (ok, _) = curl(&[
        "--resolve",
        &resolve,
        &format!("https://localhost:{}{DEMO_YEALINK}", https.port()),
    ]);
    assert!(!ok);
    assert_eq!(server.stop(), 0);
}

#[test]
fn an_unreadable_tls_key_stops_startup_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dialtone.db").display());
    let mut cmd = dialtone(dir.path(), &url);
    cmd.args([
        "serve",
        "--listen",
        &free_addr().to_string(),
        "--provisioning-listen",
        &free_addr().to_string(),
    ])
    .args(["--tftp-listen", &free_udp_addr().to_string()])
    .env(
        "DIALTONE_PROVISIONING__HTTPS_LISTEN",
        free_addr().to_string(),
    )
    .env(
        "DIALTONE_PROVISIONING__TLS_CERT",
        dir.path().join("missing-cert.pem"),
    )
    .env(
        "DIALTONE_PROVISIONING__TLS_KEY",
        dir.path().join("missing-key.pem"),
    );
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let last = err.trim().lines().last().unwrap_or("");
    assert!(
        last.starts_with("dialtone: ") && last.contains("TLS certificate"),
        "{err}"
    );
}

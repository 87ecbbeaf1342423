//! A resync's answer counts only from where its NOTIFY went: the real
//! binary sends to a loopback socket standing in for the proxy, and a
//! forger on another address who learned the branch answers first with a
//! status and reason of its own, which `/v1/resyncs` must not show.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::sip::output_text;
use common::*;
use serde_json::{json, Value};

const MAC: &str = "001565000301";

fn dataset() -> String {
    json!({"tenants": [{"slug": "acme", "name": "Acme",
                        "settings": {"sip_domains": ["sip.example.net"]}}],
           "phones": [{"tenant": "acme", "mac": "00:15:65:00:03:01", "family": "yealink",
                       "model": "T46S",
                       "lines": [{"extension": "301", "password": "pw",
                                  "registrar": "sip.example.net"}]}]})
    .to_string()
}

fn answer(status: &str, via: &str) -> String {
    format!("SIP/2.0 {status}\r\n{via}\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n")
}

/// The proxy: the first NOTIFY is answered first by the forger, from
/// 127.0.0.3, then by the proxy itself; retransmissions get the proxy's
/// answer again.
fn proxy_with_a_forger(proxy: UdpSocket) -> std::thread::JoinHandle<usize> {
    let forger = UdpSocket::bind("127.0.0.3:0").unwrap();
    proxy
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut notifies = 0;
        while let Ok((n, from)) = proxy.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let Some(via) = text.lines().find(|l| l.starts_with("Via:")) else {
                continue;
            };
            notifies += 1;
            if notifies == 1 {
                forger
                    .send_to(answer("486 Forged", via).as_bytes(), from)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
            proxy
                .send_to(answer("200 OK", via).as_bytes(), from)
                .unwrap();
            proxy
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
        }
        notifies
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_answer_from_another_address_is_not_the_resyncs_answer() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let data = write_file(dir.path(), "phones.json", &dataset());
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&data);
    let out = run(import);
    assert!(out.status.success(), "{}", output_text(&out));
    let token = create_token(
        dir.path(),
        &url,
        &["--scope", "global-admin", "--name", "answers"],
    );
    let proxy = UdpSocket::bind("127.0.0.2:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap().to_string();
    let far = proxy_with_a_forger(proxy);
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &[],
        &[
            ("DIALTONE_RESYNC__PROXY", &proxy_addr),
            ("DIALTONE_RESYNC__LISTEN", "127.0.0.1:0"),
            ("DIALTONE_RESYNC__T1_MS", "100"),
        ],
    );
    let api = Api::new(server.addr, token);
    let (status, _, queued) = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/phones/{MAC}/resync"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 202, "{queued}");

    let mut resync = Value::Null;
    for _ in 0..200 {
        let (_, _, body) = api
            .send(
                reqwest::Method::GET,
                &format!("/v1/resyncs?mac={MAC}"),
                None,
                None,
            )
            .await;
        resync = body["resyncs"][0].clone();
        if matches!(resync["state"].as_str(), Some("answered" | "failed")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (&resync["state"], &resync["status"], &resync["reason"]),
        (&json!("answered"), &json!(200), &json!("OK")),
        "{resync}\n{}",
        server.stderr()
    );
    assert!(far.join().unwrap() >= 1);
}

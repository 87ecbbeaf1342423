//! Slow work off the TFTP listener, against the real binary: a slow render
//! does not hold up another phone's request, and a large tenant's phone
//! directory is cached like a render and outdated by the next edit.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;

const SLOW_PHONE: &str = "00:15:65:4a:a9:37";

/// A template that spends a while (well inside the raised budget) before
/// it writes anything.
const SLOW_TEMPLATE: &str = "#!version:1.0.0.1\n\
{% for i in range(end=8000) %}{% for j in range(end=1000) %}{% endfor %}{% endfor %}\
account.1.label = slow\n";

fn send_rrq(socket: &UdpSocket, server: SocketAddr, file: &str) {
    socket.send_to(&rrq(file), server).unwrap();
}

/// The rest of a transfer whose first packet is `first` (from `from`).
fn finish_transfer(socket: &UdpSocket, first: &[u8], from: SocketAddr) -> Vec<u8> {
    let mut body = Vec::new();
    let mut packet = first.to_vec();
    let mut buf = [0u8; 516];
    // At most 1 MiB of blocks: the loop always ends.
    for _ in 0..2048 {
        assert_eq!(&packet[..2], &[0, 3], "a DATA packet: {packet:?}");
        body.extend_from_slice(&packet[4..]);
        socket.send_to(&[0, 4, packet[2], packet[3]], from).unwrap();
        if packet.len() < 516 {
            return body;
        }
        let (n, _) = socket.recv_from(&mut buf).expect("the next block");
        packet = buf[..n].to_vec();
    }
    panic!("transfer never ended");
}

async fn admin_api(dir: &std::path::Path, url: &str, server: &Server) -> Api {
    let token = create_token(dir, url, &["--scope", "global-admin", "--name", "edge"]);
    let api = Api::new(server.addr, token);
    // The token reaches the node through the change log.
    for _ in 0..400 {
        let (status, _, _) = api
            .send(reqwest::Method::GET, "/v1/tenants", None, None)
            .await;
        if status == 200 {
            return api;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the token never reached the node: {}", server.stderr());
}

tftp_modes!(tokio: a_slow_render_does_not_hold_up_another_phones_request);

async fn a_slow_render_does_not_hold_up_another_phones_request(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start_with_env(
        dir.path(),
        &url,
        &["--demo"],
        &mode.with(&[
            ("DIALTONE_PROVISIONING__RENDER_TIME_MS", "10000"),
            ("DIALTONE_PROVISIONING__RENDER_FUEL", "100000000"),
            ("DIALTONE_PROVISIONING__RENDER_THREADS", "2"),
            ("DIALTONE_PROVISIONING__RENDER_PER_TENANT", "2"),
        ]),
    );
    let api = admin_api(dir.path(), &url, &server).await;
    let (status, _, created) = api
        .send(
            reqwest::Method::POST,
            "/v1/templates",
            Some(serde_json::json!({
                "scope": "phone", "mac": SLOW_PHONE, "family": "yealink",
                "file_pattern": "{mac}.cfg", "body": SLOW_TEMPLATE,
            })),
            None,
        )
        .await;
    assert_eq!(status, 201, "{created}");

    let tftp = server.tftp_addr;
    let (slow, other) = tokio::task::spawn_blocking(move || {
        let slow = UdpSocket::bind("127.0.0.1:0").unwrap();
        let asked = std::time::Instant::now();
        send_rrq(&slow, tftp, "0015654aa937.cfg");
        // Another phone of the same tenant, cold too, asked for after.
        let other = tftp_get(tftp, "805ec0123456.cfg");
        eprintln!("other answered after {:?}", asked.elapsed());
        // The slow render is still running: nothing has come back for it.
        slow.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 516];
        let early = slow
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| buf[..n].to_vec());
        assert_eq!(early, None, "the slow file came first");
        slow.set_nonblocking(false).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (n, from) = slow.recv_from(&mut buf).expect("the slow file arrives");
        eprintln!("slow answered after {:?}", asked.elapsed());
        (finish_transfer(&slow, &buf[..n], from), other)
    })
    .await
    .unwrap();
    let other = other.expect("the other phone was answered during the slow render");
    assert!(String::from_utf8_lossy(&other).contains("account.1"));
    let slow = String::from_utf8_lossy(&slow).into_owned();
    assert!(slow.contains("account.1.label = slow"), "{slow}");
    assert_eq!(server.stop(), 0);
}

/// The sum of a metric's samples that carry `label`.
fn metric(server: &Server, name: &str, label: &str) -> f64 {
    let (_, body) = server.try_get("/metrics").expect("/metrics answers");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn import(dir: &std::path::Path, url: &str, name: &str, csv: &str) {
    let file = write_file(dir, name, csv);
    let mut cmd = dialtone(dir, url);
    cmd.arg("import").arg(&file);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn entries(server: &Server) -> u64 {
    server.readyz()["counts"]["directory_entries"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_large_directory_is_cached_and_an_edit_reaches_the_next_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let mut csv = String::from("tenant,external_id,name,work\n");
    for n in 0..3000 {
        csv.push_str(&format!("demo,bulk-{n},Person {n:04},+1555{n:07}\n"));
    }
    let before = entries(&server);
    import(dir.path(), &url, "directory.csv", &csv);
    let loaded = wait_until(Duration::from_secs(30), || {
        entries(&server) >= before + 3000
    });
    assert!(loaded.is_some(), "import not seen: {}", server.readyz());

    let path = "/0015654aa937-directory.xml";
    let fetch = |path: &str| {
        let (status, headers, body) = http_get_with(server.prov_addr, path, &[]).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        let etag = headers
            .iter()
            .find(|(k, _)| k == "etag")
            .map(|(_, v)| v.clone());
        (etag, body)
    };
    let hits = || metric(&server, "dialtone_render_cache_total", "result=\"hit\"");
    let misses = || metric(&server, "dialtone_render_cache_total", "result=\"miss\"");
    let first = fetch(path);
    assert!(first.1.contains("Person 2999"), "every entry is there");
    let (hits_before, misses_before) = (hits(), misses());
    let again = fetch(path);
    assert_eq!(again, first);
    // Another phone of the tenant, same family: the same cached file.
    let neighbour = fetch("/805ec0123456-directory.xml");
    assert_eq!(neighbour, first);
    assert_eq!(hits() - hits_before, 2.0, "two fetches, two hits");
    assert_eq!(misses(), misses_before, "nothing built again");
    // Over TFTP the same bytes.
    let over_tftp = tftp_fetch(dir.path(), &url, server.tftp_addr, &path[1..])
        .expect("the directory over TFTP");
    assert_eq!(over_tftp, first.1);

    // An edit: once the node has it, the very next fetch shows it.
    let before = entries(&server);
    import(
        dir.path(),
        &url,
        "edit.csv",
        "tenant,external_id,name,work\ndemo,new-1,Aaron Newcomer,+15550001111\n",
    );
    let seen = wait_until(Duration::from_secs(30), || entries(&server) > before);
    assert!(seen.is_some(), "edit not seen: {}", server.readyz());
    let edited = fetch(path);
    assert!(edited.1.contains("Aaron Newcomer"), "the edit is served");
    assert_ne!(edited.0, first.0, "a new entity tag");
    assert_eq!(server.stop(), 0);
}

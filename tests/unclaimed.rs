//! Unclaimed phones against the real binary: unknown phones booting from a
//! tenant's provisioning networks (127.0.0.N stands for a source of its
//! own) are listed for that tenant with what they said about themselves;
//! one claimed then gets its file; a phone outside every network is listed
//! only when the operator turns that on, and then only for global admins.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// GET from 127.0.0.`from` with a User-Agent; the status.
async fn http_status(from: u8, server: SocketAddr, path: &str, user_agent: &str) -> u16 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((loopback(from), 0).into()).unwrap();
    let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
        .await
        .expect("connects in time")
        .expect("connects");
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {server}\r\nUser-Agent: {user_agent}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answers in time")
        .unwrap();
    let head = String::from_utf8_lossy(&raw);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn tftp(from: u8, server: SocketAddr, file: &str) -> Result<Vec<u8>, String> {
    let file = file.to_string();
    tokio::task::spawn_blocking(move || tftp_read(loopback(from), server, &file))
        .await
        .unwrap()
}

/// acme provisions from 127.0.0.0/29 (127.0.0.1 to .7); globex from
/// nowhere in particular. No phones yet.
fn setup(dir: &std::path::Path, url: &str) -> String {
    let data = json!({
        "tenants": [
            { "slug": "acme", "name": "Acme", "default_region": "US",
              "settings": { "provisioning_networks": ["127.0.0.0/29"] } },
            { "slug": "globex", "name": "Globex", "default_region": "US" },
        ],
    });
    let file = write_file(dir, "import.json", &data.to_string());
    let mut cmd = dialtone(dir, url);
    cmd.arg("import").arg(&file);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    create_token(dir, url, &["--scope", "global-admin", "--name", "ops"])
}

/// Polls `path` until it lists `want` devices (history-like batching
/// writes them a moment later); the list as last read.
async fn wait_for_devices(api: &Api, path: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = api.send(Method::GET, path, None, None).await;
        assert_eq!(status, 200, "{body}");
        let devices = body["devices"].as_array().cloned().unwrap_or_default();
        if devices.len() >= want || Instant::now() > deadline {
            return devices;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find<'a>(devices: &'a [Value], mac: &str) -> &'a Value {
    devices
        .iter()
        .find(|d| d["mac"] == mac)
        .unwrap_or_else(|| panic!("{mac} not listed: {devices:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_phones_in_a_tenant_network_are_listed_and_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let token = setup(dir.path(), &url);
    let server = Server::start(dir.path(), &url, &[]);
    let api = Api::new(server.addr, token);
    let prov = server.prov_addr;

    // First, from outside acme's networks: not listed anywhere.
    let outside = "Yealink SIP-T54W 96.86.0.10 00:15:65:a0:00:09";
    assert_eq!(
        http_status(9, prov, "/001565a00009.cfg", outside).await,
        404
    );

    let yealink = "Yealink SIP-T46U 108.86.0.20 00:15:65:a0:00:01";
    assert_eq!(
        http_status(2, prov, "/001565a00001.cfg", yealink).await,
        404
    );
    let grandstream = "Grandstream Model HW GXP2135 SW 1.0.7.97 DevId 000b82a00002";
    assert_eq!(
        http_status(3, prov, "/cfg000b82a00002.xml", grandstream).await,
        404
    );
    let fanvil = "Fanvil X4 2.10.2.6887 0c383ea00003";
    assert_eq!(http_status(4, prov, "/0c383ea00003.cfg", fanvil).await, 404);
    // Over TFTP: no User-Agent, the file name and vendor prefix only.
    assert!(tftp(5, server.tftp_addr, "001565a00004.cfg").await.is_err());

    let devices = wait_for_devices(&api, "/v1/tenants/acme/unclaimed", 4).await;
    assert_eq!(devices.len(), 4, "{devices:?}");
    let y = find(&devices, "001565a00001");
    assert_eq!(
        (&y["family"], &y["model"], &y["firmware"], &y["source"]),
        (
            &json!("yealink"),
            &json!("T46U"),
            &json!("108.86.0.20"),
            &json!("127.0.0.2")
        )
    );
    assert_eq!(y["count"], 1);
    let g = find(&devices, "000b82a00002");
    assert_eq!(
        (&g["model"], &g["firmware"]),
        (&json!("GXP2135"), &json!("1.0.7.97"))
    );
    let f = find(&devices, "0c383ea00003");
    assert_eq!(
        (&f["model"], &f["firmware"]),
        (&json!("X4"), &json!("2.10.2.6887"))
    );
    assert_eq!(find(&devices, "001565a00004")["source"], "127.0.0.5");
    // Neither the outsider, nor anything on another tenant's list.
    assert!(!devices.iter().any(|d| d["mac"] == "001565a00009"));
    let (_, _, globex) = api
        .send(Method::GET, "/v1/tenants/globex/unclaimed", None, None)
        .await;
    assert_eq!(globex["devices"], json!([]));
    let (_, _, unassigned) = api.send(Method::GET, "/v1/unclaimed", None, None).await;
    assert_eq!(unassigned["devices"], json!([]));

    // Claimed with a line, it gets its own file at the next fetch.
    let (status, _, phone) = api
        .send(
            Method::POST,
            "/v1/tenants/acme/unclaimed/001565a00001/claim",
            Some(json!({ "name": "Lobby", "lines": [
                { "extension": "201", "display_name": "Lobby", "registrar": "sip.example.net" }
            ]})),
            None,
        )
        .await;
    assert_eq!(status, 201, "{phone}");
    assert_eq!(
        (&phone["model"], &phone["tenant"]),
        (&json!("T46U"), &json!("acme"))
    );
    assert_eq!(
        http_status(2, prov, "/001565a00001.cfg", yealink).await,
        200
    );
    let (status, _, again) = api
        .send(
            Method::POST,
            "/v1/tenants/acme/unclaimed/001565a00001/claim",
            Some(json!({})),
            None,
        )
        .await;
    assert_eq!(status, 409, "{again}");
    let (_, _, left) = api
        .send(Method::GET, "/v1/tenants/acme/unclaimed", None, None)
        .await;
    assert_eq!(left["devices"].as_array().unwrap().len(), 3, "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_every_network_is_listed_only_when_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let token = setup(dir.path(), &url);
    let acme = create_token(
        dir.path(),
        &url,
        &[
            "--scope",
            "tenant-admin",
            "--tenant",
            "acme",
            "--name",
            "acme",
        ],
    );
    let env = [("DIALTONE_PROVISIONING__RECORD_UNCLAIMED_ANYWHERE", "true")];
    let server = Server::start_with_env(dir.path(), &url, &[], &env);
    let api = Api::new(server.addr, token);
    let ua = "Yealink SIP-T54W 96.86.0.10 00:15:65:a0:00:09";
    assert_eq!(
        http_status(9, server.prov_addr, "/001565a00009.cfg", ua).await,
        404
    );
    let devices = wait_for_devices(&api, "/v1/unclaimed", 1).await;
    let d = find(&devices, "001565a00009");
    assert_eq!(
        (&d["model"], &d["source"]),
        (&json!("T54W"), &json!("127.0.0.9"))
    );
    let (_, _, own) = api
        .send(Method::GET, "/v1/tenants/acme/unclaimed", None, None)
        .await;
    assert_eq!(own["devices"], json!([]));
    // The unassigned list is the operator's.
    let tenant = Api::new(server.addr, acme);
    let (status, _, _) = tenant.send(Method::GET, "/v1/unclaimed", None, None).await;
    assert_eq!(status, 403);
    let (status, _, _) = tenant
        .send(
            Method::POST,
            "/v1/tenants/acme/unclaimed/001565a00009/claim",
            Some(json!({})),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// The admin page's unclaimed view in a real browser (see tests/ui.rs):
/// the listed phone is shown with its model and claimed with a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_claims_an_unclaimed_phone() {
    let script = common::browser::BrowserScript::new("unclaimed_page.mjs");
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let token = setup(dir.path(), &url);
    let server = Server::start(dir.path(), &url, &[]);
    let api = Api::new(server.addr, token.clone());
    let yealink = "Yealink SIP-T46U 108.86.0.20 00:15:65:a0:00:01";
    let prov = server.prov_addr;
    assert_eq!(
        http_status(2, prov, "/001565a00001.cfg", yealink).await,
        404
    );
    assert_eq!(
        wait_for_devices(&api, "/v1/tenants/acme/unclaimed", 1)
            .await
            .len(),
        1
    );

    let mut node = script.command();
    node.env("UI_API", format!("http://{}", server.addr))
        .env("UI_TOKEN", &token)
        .env("UI_MAC", "001565a00001")
        .env(
            "UI_ARTIFACTS",
            common::browser::artifacts_dir("unclaimed_page"),
        );
    let out = tokio::task::spawn_blocking(move || run(node))
        .await
        .unwrap();
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "the browser run failed:\n{log}");
    let (status, _, phone) = api
        .send(Method::GET, "/v1/phones/001565a00001", None, None)
        .await;
    assert_eq!(status, 200, "{phone}");
    assert_eq!(
        (&phone["label"], &phone["lines"][0]["extension"]),
        (&json!("Lobby"), &json!("201"))
    );
    assert_eq!(
        http_status(2, prov, "/001565a00001.cfg", yealink).await,
        200
    );
}

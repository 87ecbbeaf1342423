//! Issue 16 items 2 and 3 against the real binary: forged misses ban an
//! address but not the phones that boot from it; the misses real phones
//! always make are free; and no answer tells a known MAC from an unknown
//! one without costing a miss. 127.0.0.x addresses stand for distinct
//! sources (the client sockets are bound to them).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// One file over TFTP from 127.0.0.`from`: the bytes, or the error
/// packet's text.
async fn tftp(from: u8, server: SocketAddr, file: &str) -> Result<Vec<u8>, String> {
    let file = file.to_string();
    tokio::task::spawn_blocking(move || tftp_read(loopback(from), server, &file))
        .await
        .unwrap()
}

/// What tells two HTTP answers apart: status, content type, ETag, body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_type: String,
    etag: String,
    body: String,
}

/// One GET over a TCP connection from 127.0.0.`from`.
async fn http(from: u8, server: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((loopback(from), 0).into()).unwrap();
    let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
        .await
        .expect("connects in time")
        .expect("connects");
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {server}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut answer = Answer {
        status,
        content_type: String::new(),
        etag: String::new(),
        body: body.to_string(),
    };
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        match k.trim().to_ascii_lowercase().as_str() {
            "content-type" => answer.content_type = v.trim().into(),
            "etag" => answer.etag = v.trim().into(),
            _ => {}
        }
    }
    answer
}

fn ua(agent: &str) -> [(&str, &str); 1] {
    [("User-Agent", agent)]
}

/// The sum of a counter's samples whose labels include `label`.
fn counter(server: &Server, name: &str, label: &str) -> f64 {
    let (status, body) = server.try_get("/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn import_json(dir: &std::path::Path, url: &str, json: serde_json::Value) {
    let file = write_file(dir, "import.json", &json.to_string());
    let mut cmd = dialtone(dir, url);
    cmd.arg("import").arg(&file);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn phone(tenant: &str, mac: &str, family: &str, model: &str) -> serde_json::Value {
    serde_json::json!({
        "tenant": tenant, "mac": mac, "family": family, "model": model,
        "lines": [{ "extension": "100", "display_name": "Desk", "password": "sip-secret",
                    "registrar": "sip.example.net" }]
    })
}

const YEALINK_5: &str = "001565000005";
const YEALINK_6: &str = "001565000006";

fn yealink_ua(mac: &str) -> String {
    let colons: Vec<&str> = (0..6).map(|i| &mac[i * 2..i * 2 + 2]).collect();
    format!("Yealink SIP-T46S 66.86.0.15 {}", colons.join(":"))
}

tftp_modes!(
    tokio: forged_misses_ban_the_address_not_its_phones,
    normal_misses_are_free_and_unknown_macs_are_not,
    known_and_unknown_macs_cannot_be_told_apart_for_free,
    a_flood_of_one_shot_sources_does_not_save_a_scanner
);

/// Acceptance: a phone boots from 127.0.0.5, a flood of misses "from"
/// 127.0.0.5 bans the address, and the phone boots again at once over TFTP
/// and HTTP, while anything else from 127.0.0.5 is refused as banned.
async fn forged_misses_ban_the_address_not_its_phones(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    import_json(
        dir.path(),
        &url,
        serde_json::json!({
            "tenants": [{ "slug": "acme", "name": "Acme", "default_region": "US" }],
            "phones": [phone("acme", YEALINK_5, "yealink", "T46S"),
                       phone("acme", YEALINK_6, "yealink", "T46S")],
        }),
    );
    // The defaults: 30 misses in a burst, the 31st bans.
    let server = Server::start_with_env(dir.path(), &url, &[], &mode.env());
    let boot = [
        format!("{YEALINK_5}.boot"),
        "y000000000000.cfg".to_string(),
        "y000000000066.cfg".to_string(),
        format!("{YEALINK_5}.cfg"),
    ];
    let mut first = Vec::new();
    for file in &boot {
        let bytes = tftp(5, server.tftp_addr, file).await;
        assert!(bytes.is_ok(), "{file}: {bytes:?}");
        first.push(bytes.unwrap());
    }

    // The forged flood: unknown files and unknown MACs "from" 127.0.0.5.
    for n in 0..31 {
        let file = if n % 2 == 0 {
            format!("00156599{n:04x}.cfg")
        } else {
            format!("nothing-{n}.txt")
        };
        assert!(tftp(5, server.tftp_addr, &file).await.is_err(), "{file}");
    }
    let unknown = http(5, server.prov_addr, "/001565999999.cfg", &[]).await;
    assert_eq!(unknown.status, 429, "127.0.0.5 is banned: {unknown:?}");

    // The phone boots again at once, over TFTP...
    for (file, before) in boot.iter().zip(&first) {
        let again = tftp(5, server.tftp_addr, file).await;
        assert_eq!(again.as_ref(), Ok(before), "{file} while banned");
    }
    // ...and over HTTP, its User-Agent naming it.
    let agent = yealink_ua(YEALINK_5);
    for path in [
        format!("/{YEALINK_5}.boot"),
        "/y000000000000.boot".to_string(),
        "/y000000000066.cfg".to_string(),
        format!("/{YEALINK_5}.cfg"),
    ] {
        let answer = http(5, server.prov_addr, &path, &ua(&agent)).await;
        assert_eq!(answer.status, 200, "{path} while banned: {answer:?}");
    }
    let boot_file = http(5, server.prov_addr, "/y000000000000.boot", &ua(&agent)).await;
    assert!(
        boot_file
            .body
            .contains(&format!("include:config \"{YEALINK_5}.cfg\"")),
        "{boot_file:?}"
    );

    // Nothing else: another phone's files, unknown MACs and files.
    for (path, agent) in [
        (format!("/{YEALINK_6}.cfg"), None),
        (
            "/y000000000000.boot".to_string(),
            Some(yealink_ua(YEALINK_6)),
        ),
        (
            "/y000000000000.boot".to_string(),
            Some(yealink_ua("001565ffff01")),
        ),
        ("/001565999999.cfg".to_string(), None),
        ("/nothing.txt".to_string(), None),
    ] {
        let headers: Vec<(&str, &str)> = agent.iter().map(|a| ("User-Agent", a.as_str())).collect();
        let answer = http(5, server.prov_addr, &path, &headers).await;
        assert_eq!(answer.status, 429, "{path} {agent:?}: {answer:?}");
    }
    assert!(tftp(5, server.tftp_addr, &format!("{YEALINK_6}.cfg"))
        .await
        .is_err());
    // The other phone, from its own address, is not slowed at all.
    let other = http(6, server.prov_addr, &format!("/{YEALINK_6}.cfg"), &[]).await;
    assert_eq!(other.status, 200);

    assert!(counter(&server, "dialtone_provisioning_ban_passes_total", "") >= 8.0);
    assert!(counter(&server, "dialtone_provisioning_bans_total", "") >= 1.0);

    // The operator lists the node's bans and lifts this one: the address
    // gets every file again at once, without a restart.
    let api = Api::new(
        server.addr,
        create_token(
            dir.path(),
            &url,
            &["--scope", "global-admin", "--name", "ops"],
        ),
    );
    // The token reaches the node through the change log.
    let mut listed = (0, String::new(), serde_json::Value::Null);
    for _ in 0..100 {
        listed = api.send(reqwest::Method::GET, "/v1/bans", None, None).await;
        if listed.0 != 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, listed) = listed;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["bans"][0]["source"], "127.0.0.5", "{listed}");
    let (status, _, lifted) = api
        .send(reqwest::Method::DELETE, "/v1/bans/127.0.0.5", None, None)
        .await;
    assert_eq!(status, 204, "{lifted}");
    let other = http(5, server.prov_addr, &format!("/{YEALINK_6}.cfg"), &[]).await;
    assert_eq!(other.status, 200, "after the lift: {other:?}");
    assert!(tftp(5, server.tftp_addr, &format!("{YEALINK_6}.cfg"))
        .await
        .is_ok());
    assert_eq!(server.stop(), 0);
}

const SEP: &str = "001B54AA0007";
const GRANDSTREAM: &str = "000b82aa0008";
const POLY: &str = "0004f2aa0009";

/// The misses every real phone makes cost nothing when they name a phone
/// answered for here (or no MAC); for any other MAC they cost like any
/// unknown name. HTTP misses count (a completed TCP connection cannot be
/// forged), and a common file asked with an unknown MAC costs one too.
async fn normal_misses_are_free_and_unknown_macs_are_not(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    import_json(
        dir.path(),
        &url,
        serde_json::json!({
            "tenants": [{ "slug": "acme", "name": "Acme", "default_region": "US" }],
            "phones": [phone("acme", SEP, "cisco-sep", "CP-7941G"),
                       phone("acme", GRANDSTREAM, "grandstream", "GXP2135"),
                       phone("acme", POLY, "poly", "VVX 450"),
                       phone("acme", YEALINK_5, "yealink", "T46S")],
        }),
    );
    let env = [
        ("DIALTONE_PROVISIONING__BAN_BURST", "5"),
        ("DIALTONE_PROVISIONING__BAN_PER_MINUTE", "1"),
    ];
    let server = Server::start_with_env(dir.path(), &url, &[], &mode.with(&env));

    // Ten boots' worth of normal misses from one address: 70 misses that
    // would have banned it 10 times over.
    for _ in 0..10 {
        for missing in [
            format!("CTLSEP{SEP}.tlv"),
            format!("ITLSEP{SEP}.tlv"),
            "ITLFile.tlv".to_string(),
            "SIPDefault.cnf".to_string(),
            format!("cfg{GRANDSTREAM}"),
            format!("cfg{GRANDSTREAM}.bin"),
            format!("{POLY}-license.cfg"),
        ] {
            assert!(
                tftp(8, server.tftp_addr, &missing).await.is_err(),
                "{missing}"
            );
        }
        for present in [format!("SEP{SEP}.cnf.xml"), format!("cfg{GRANDSTREAM}.xml")] {
            assert!(
                tftp(8, server.tftp_addr, &present).await.is_ok(),
                "{present}"
            );
        }
    }
    let known = http(8, server.prov_addr, &format!("/SEP{SEP}.cnf.xml"), &[]).await;
    assert_eq!(known.status, 200, "normal misses got 127.0.0.8 banned");

    // The same names for a MAC not answered for here: the 6th miss bans.
    let statuses = |from: u8, path: String, agent: Option<String>| {
        let server = server.prov_addr;
        async move {
            let mut statuses = Vec::new();
            for _ in 0..8 {
                let headers: Vec<(&str, &str)> =
                    agent.iter().map(|a| ("User-Agent", a.as_str())).collect();
                statuses.push(http(from, server, &path, &headers).await.status);
            }
            statuses
        }
    };
    let banned_on_7th = [404, 404, 404, 404, 404, 404, 429, 429];
    assert_eq!(
        statuses(9, "/CTLSEP001B54FFFF01.tlv".into(), None).await,
        banned_on_7th
    );
    assert_eq!(
        statuses(10, "/cfg000b82ffff01.bin".into(), None).await,
        banned_on_7th
    );
    // A common file with an unknown MAC in the User-Agent: answered, and
    // costs a miss each time; with a known (admitted) phone's, free.
    assert_eq!(
        statuses(
            11,
            "/y000000000000.boot".into(),
            Some(yealink_ua("001565ffff01"))
        )
        .await,
        [200, 200, 200, 200, 200, 200, 429, 429]
    );
    assert_eq!(
        statuses(
            12,
            "/y000000000000.boot".into(),
            Some(yealink_ua(YEALINK_5))
        )
        .await,
        [200; 8]
    );
    assert!(
        counter(
            &server,
            "dialtone_provisioning_misses_total",
            "kind=\"blind\""
        ) >= 6.0
    );
    assert_eq!(server.stop(), 0);
}

/// One family's common files and the User-Agent its phones send.
struct Family {
    known: &'static str,
    unknown: &'static str,
    family: &'static str,
    model: &'static str,
    files: &'static [&'static str],
    agent: fn(&str) -> Option<String>,
}

const FAMILIES: &[Family] = &[
    Family {
        known: "001565a00001",
        unknown: "001565ff0001",
        family: "yealink",
        model: "T46S",
        files: &["/y000000000000.boot", "/y000000000066.cfg"],
        agent: |mac| Some(yealink_ua(mac)),
    },
    Family {
        known: "0002fda00002",
        unknown: "0002fdff0002",
        family: "cisco-spa",
        model: "SPA504G",
        files: &["/spa504g.cfg", "/init.cfg"],
        agent: |mac| {
            Some(format!(
                "Cisco/SPA504G-7.5.5 ({})",
                mac.to_ascii_uppercase()
            ))
        },
    },
    Family {
        known: "00562ba00003",
        unknown: "00562bff0003",
        family: "cisco-mpp",
        model: "CP-8851-3PCC",
        files: &["/8851-3PCC.xml"],
        agent: |mac| Some(format!("Cisco-CP-8851-3PCC/11.0 ({mac})")),
    },
    Family {
        known: "000b82a00004",
        unknown: "000b82ff0004",
        family: "grandstream",
        model: "GXP2135",
        files: &["/cfg.xml", "/cfggxp2135.xml"],
        agent: |mac| {
            Some(format!(
                "Grandstream Model HW GXP2135 SW 1.0.7.97 DevId {mac}"
            ))
        },
    },
    Family {
        known: "000413a00005",
        unknown: "000413ff0005",
        family: "snom",
        model: "D785",
        files: &["/snomD785.htm"],
        agent: |mac| {
            Some(format!(
                "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 {} SXM:0 UXM:0)",
                mac.to_ascii_uppercase()
            ))
        },
    },
    Family {
        known: "0c383ea00006",
        unknown: "0c383eff0006",
        family: "fanvil",
        model: "X4",
        files: &["/f0C00620000.cfg"],
        agent: |mac| Some(format!("Fanvil X4 2.10.2.6887 {mac}")),
    },
    // No MAC in what these send for their common files: nothing to tell.
    Family {
        known: "0004f2a00007",
        unknown: "0004f2ff0007",
        family: "poly",
        model: "VVX 450",
        files: &["/000000000000.cfg"],
        agent: |_| Some("FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929 Type/Application".into()),
    },
    Family {
        known: "001b54a00008",
        unknown: "001b54ff0008",
        family: "cisco-sep",
        model: "CP-7941G",
        files: &["/XMLDefault.cnf.xml", "/ITLFile.tlv"],
        agent: |_| None,
    },
];

const PROTECTED: &str = "001565a00009";

/// Acceptance: from outside a tenant's networks (and under another
/// tenant's prefix) a known MAC and an unknown one get the same answers,
/// status, type, ETag and body, for every family's common files, for a
/// phone's own file and for a phone with HTTP credentials (404, not 401:
/// admission comes first); and each costs the same miss. Inside, the known
/// phone gets its own answers free, and the unknown MAC pays.
async fn known_and_unknown_macs_cannot_be_told_apart_for_free(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut phones: Vec<serde_json::Value> = FAMILIES
        .iter()
        .map(|f| phone("acme", f.known, f.family, f.model))
        .collect();
    let mut protected = phone("acme", PROTECTED, "yealink", "T46S");
    protected["http_user"] = "desk9".into();
    protected["http_password"] = "desk9-password".into();
    phones.push(protected);
    import_json(
        dir.path(),
        &url,
        serde_json::json!({
            "tenants": [
                { "slug": "acme", "name": "Acme", "default_region": "US",
                  "settings": { "provisioning_networks": ["127.0.0.20/32"],
                                "ntp_server": "ntp.acme.example" } },
                { "slug": "globex", "name": "Globex", "default_region": "US" },
            ],
            "phones": phones,
        }),
    );
    // No ban gets in the way of the comparison; the metric shows the cost.
    let env = [("DIALTONE_PROVISIONING__BAN_BURST", "100000")];
    let server = Server::start_with_env(dir.path(), &url, &[], &mode.with(&env));
    let blind = || {
        counter(
            &server,
            "dialtone_provisioning_misses_total",
            "kind=\"blind\"",
        )
    };
    let not_found = || {
        counter(
            &server,
            "dialtone_provisioning_misses_total",
            "kind=\"not_found\"",
        )
    };
    const OUTSIDE: u8 = 30;
    const INSIDE: u8 = 20;

    let mut compared = 0;
    for f in FAMILIES {
        for file in f.files {
            for prefix in ["", "/globex"] {
                let path = format!("{prefix}{file}");
                let (known_agent, unknown_agent) = ((f.agent)(f.known), (f.agent)(f.unknown));
                let named = known_agent
                    .as_ref()
                    .is_some_and(|a| a.to_ascii_lowercase().replace(':', "").contains(f.known));
                let ask = |agent: &Option<String>| {
                    let headers: Vec<(String, String)> = agent
                        .iter()
                        .map(|a| ("User-Agent".to_string(), a.clone()))
                        .collect();
                    let path = path.clone();
                    let server = server.prov_addr;
                    async move {
                        let headers: Vec<(&str, &str)> = headers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        http(OUTSIDE, server, &path, &headers).await
                    }
                };
                let before = blind();
                let known = ask(&known_agent).await;
                let after_known = blind();
                let unknown = ask(&unknown_agent).await;
                let after_unknown = blind();
                assert_eq!(known, unknown, "{} {path}", f.family);
                if named {
                    assert_eq!(
                        (after_known - before, after_unknown - after_known),
                        (1.0, 1.0),
                        "{} {path}: each costs a miss",
                        f.family
                    );
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 24);

    // A phone's own file, and the phone with credentials: 404 like any
    // unknown MAC from outside, over HTTP and over TFTP.
    for mac in [FAMILIES[0].known, PROTECTED] {
        let before = not_found();
        let known = http(OUTSIDE, server.prov_addr, &format!("/{mac}.cfg"), &[]).await;
        let unknown = http(OUTSIDE, server.prov_addr, "/001565ff0009.cfg", &[]).await;
        assert_eq!(known, unknown, "{mac}");
        assert_eq!(known.status, 404);
        assert_eq!(not_found() - before, 2.0, "both cost a miss");
        let known = tftp(OUTSIDE, server.tftp_addr, &format!("{mac}.cfg")).await;
        let unknown = tftp(OUTSIDE, server.tftp_addr, "001565ff0009.cfg").await;
        assert!(known.is_err());
        assert_eq!(known, unknown, "{mac} over TFTP");
    }

    // Inside the tenant's networks the known phone gets its own files,
    // free; the unknown MAC gets the generic ones and pays.
    let yealink = &FAMILIES[0];
    let before = blind();
    let own = http(
        INSIDE,
        server.prov_addr,
        "/y000000000000.boot",
        &ua(&yealink_ua(yealink.known)),
    )
    .await;
    assert_eq!(own.status, 200);
    assert!(
        own.body.contains(&format!("{}.cfg", yealink.known)),
        "{own:?}"
    );
    assert_eq!(blind(), before, "a known phone's common file is free");
    let generic = http(
        INSIDE,
        server.prov_addr,
        "/y000000000000.boot",
        &ua(&yealink_ua(yealink.unknown)),
    )
    .await;
    assert_eq!(generic.status, 200);
    assert!(!generic.body.contains(yealink.unknown));
    assert_eq!(blind(), before + 1.0, "an unknown MAC pays");
    let grandstream = &FAMILIES[3];
    let tenant_file = http(
        INSIDE,
        server.prov_addr,
        "/cfg.xml",
        &ua(&(grandstream.agent)(grandstream.known).unwrap()),
    )
    .await;
    assert!(
        tenant_file.body.contains("ntp.acme.example"),
        "{tenant_file:?}"
    );

    // Credentials are asked only inside (401, free); an unknown MAC is 404
    // and pays.
    let before = not_found();
    let challenged = http(INSIDE, server.prov_addr, &format!("/{PROTECTED}.cfg"), &[]).await;
    assert_eq!(challenged.status, 401);
    assert_eq!(not_found(), before);
    let missing = http(INSIDE, server.prov_addr, "/001565ff0009.cfg", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(not_found(), before + 1.0);
    assert_eq!(server.stop(), 0);
}

/// The eviction answer against the binary: a miss table of 20 sources,
/// and between each of a scanner's misses 60 forged one-shot sources (three
/// times the table). The scanner is still banned within a couple of misses
/// of its allowance (the first ones may go uncounted while the table is
/// full of one-shots), and the flood itself bans no one.
async fn a_flood_of_one_shot_sources_does_not_save_a_scanner(mode: TftpMode) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let env = [
        ("DIALTONE_PROVISIONING__BAN_BURST", "5"),
        ("DIALTONE_PROVISIONING__BAN_PER_MINUTE", "1"),
        ("DIALTONE_PROVISIONING__BAN_SOURCES", "20"),
    ];
    let server = Server::start_with_env(dir.path(), &url, &[], &mode.with(&env));
    let mut banned_at = None;
    for round in 0..12u16 {
        for n in 0..60u16 {
            let forged = round * 60 + n;
            let socket =
                UdpSocket::bind((Ipv4Addr::new(127, 1, (forged >> 8) as u8, forged as u8), 0))
                    .await
                    .unwrap();
            let rrq = b"\0\x01nothing.txt\0octet\0";
            socket.send_to(rrq, server.tftp_addr).await.unwrap();
            let mut buf = [0u8; 64];
            let answer =
                tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await;
            assert!(
                matches!(answer, Ok(Ok((_, _)))),
                "the server answers each one-shot"
            );
        }
        let status = http(99, server.prov_addr, "/001565ffff99.cfg", &[])
            .await
            .status;
        if status == 429 {
            banned_at = Some(round);
            break;
        }
        assert_eq!(status, 404);
    }
    // Six misses ban without a flood (the 7th request is refused); allow two more.
    assert!(
        banned_at.is_some_and(|r| (6..=8).contains(&r)),
        "scanner refused at request {banned_at:?}"
    );
    assert_eq!(
        counter(&server, "dialtone_provisioning_bans_total", ""),
        1.0
    );
    assert_eq!(server.stop(), 0);
}

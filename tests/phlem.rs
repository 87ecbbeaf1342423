//! `dialtone phlem run` against `dialtone serve --demo`: every family's boot
//! sequence over TFTP and HTTP, shards merged, failures reported.

mod common;

use std::path::Path;

use common::*;

fn phlem(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = dialtone(dir, url);
    cmd.arg("phlem").args(args);
    run(cmd)
}

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The file every shipped Yealink boot file includes, which `render --all`
/// does not write (it writes model files only for known model codes):
/// rendered by name into `out`, with `render`'s configuration, so that
/// `--verify` compares it like the rest rather than finding it missing.
fn render_yealink_common_file(mut render: std::process::Command, mac: &str, out: &Path) {
    render.args(["render", mac, "y000000000000.cfg"]);
    let result = run(render);
    assert!(result.status.success(), "{}", text(&result.stderr));
    std::fs::write(out.join("y000000000000.cfg"), &result.stdout).unwrap();
}

#[test]
fn every_family_boots_over_tftp_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let families = [
        "yealink",
        "poly",
        "cisco-spa",
        "cisco-mpp",
        "cisco-sep",
        "grandstream",
        "snom",
        "fanvil",
    ];
    for (target, extra) in [
        (
            format!("tftp://{}", server.tftp_addr),
            vec!["--blksize", "1428", "--tsize", "--windowsize", "4"],
        ),
        (format!("tftp://{}", server.tftp_addr), vec![]),
        (format!("http://{}", server.prov_addr), vec![]),
    ] {
        let json = dir.path().join("run.json");
        let mut args = vec![
            "run",
            "--target",
            &target,
            "--repeat",
            "2",
            "--concurrency",
            "8",
            "--quiet",
        ];
        args.extend(extra.iter());
        args.extend(["--json", json.to_str().unwrap()]);
        let out = phlem(dir.path(), &url, &args);
        assert!(
            out.status.success(),
            "{target}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let r = report(&json);
        assert_eq!(r["phones"], 18, "{r}");
        assert!(r["failures"].as_object().unwrap().is_empty(), "{r}");
        let steps = r["steps"].as_object().unwrap();
        for family in families {
            assert!(
                steps.keys().any(|k| k.starts_with(&format!("{family} "))),
                "{family} missing in {target}: {steps:?}"
            );
        }
        // Poly fetched the file its master named.
        assert_eq!(steps["poly {mac}-phone.cfg"]["transfers"], 2);
        // Yealinks fetched the common file their boot files include, not
        // one of their own choosing (two phones, two boots each).
        assert_eq!(
            steps["yealink y000000000000.cfg"]["transfers"], 4,
            "{target}: {steps:?}"
        );
        assert!(!steps.contains_key("yealink y0000000000{code}.cfg"));
        // The SPA fetched what its model file's profile rule names.
        assert_eq!(
            steps["cisco-spa spa{mac}.xml"]["transfers"], 2,
            "{target}: {steps:?}"
        );
        assert!(!steps.contains_key("cisco-spa spa{mac}.cfg"));
        // Cisco enterprise phones asked for CTL and ITL files, which are not served.
        if target.starts_with("tftp") {
            assert_eq!(r["expected_missing"], 2 * 2 + 2, "{r}"); // CTL+ITL per SEP boot, Grandstream cfg<mac>
        }
    }

    // Two shards cover the phones once, and their reports merge.
    let target = format!("tftp://{}", server.tftp_addr);
    let mut shards = Vec::new();
    for shard in ["1/2", "2/2"] {
        let json = dir.path().join(format!("shard{}.json", &shard[..1]));
        let out = phlem(
            dir.path(),
            &url,
            &[
                "run",
                "--target",
                &target,
                "--shard",
                shard,
                "--quiet",
                "--json",
                json.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        shards.push(json);
    }
    let merged = dir.path().join("merged.json");
    let mut args = vec!["merge".to_string()];
    args.extend(shards.iter().map(|p| p.display().to_string()));
    args.extend(["--json".to_string(), merged.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = phlem(dir.path(), &url, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(report(&merged)["phones"], 9);
    assert!(
        text(&out.stdout).contains("9 phones"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn failures_are_counted_by_reason_and_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    // No --demo: the server knows none of the demo phones.
    let server = Server::start(dir.path(), &url, &[]);
    let json = dir.path().join("run.json");
    let target = format!("http://{}", server.prov_addr);
    let out = phlem(
        dir.path(),
        &url,
        &[
            "run",
            "--target",
            &target,
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("transfers failed"),
        "{}",
        text(&out.stderr)
    );
    let r = report(&json);
    assert!(r["failures"]["not_found"].as_u64().unwrap() >= 9, "{r}");
    let bad = phlem(dir.path(), &url, &["run", "--target", "ftp://x", "--quiet"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("use tftp://HOST:PORT or http://HOST:PORT"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn render_all_writes_the_bytes_phones_get() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let out = dir.path().join("rendered");
    let mut render = dialtone(dir.path(), &url);
    // Same config as the server: templates build URLs from its address.
    render
        .env("DIALTONE_PROVISIONING__TEMPLATES_DIR", templates_dir())
        .env(
            "DIALTONE_PROVISIONING__HTTP_LISTEN",
            server.prov_addr.to_string(),
        )
        .args(["render", "--all", "--out"])
        .arg(&out);
    let result = run(render);
    assert!(result.status.success(), "{}", text(&result.stderr));
    let mut render = dialtone(dir.path(), &url);
    render
        .env("DIALTONE_PROVISIONING__TEMPLATES_DIR", templates_dir())
        .env(
            "DIALTONE_PROVISIONING__HTTP_LISTEN",
            server.prov_addr.to_string(),
        );
    render_yealink_common_file(render, "0015654aa937", &out);
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for want in [
        "0015654aa937.cfg",
        "SEP001B54AA0003.cnf.xml",
        "0004f2abcd01-phone.cfg",
        "snomD785-000413922D24.htm",
        "cfg000b828aa872.xml",
    ] {
        assert!(
            files.iter().any(|f| f == want),
            "{want} missing from {files:?}"
        );
    }
    // phlem over TFTP gets exactly these bytes, for every family.
    let target = format!("tftp://{}", server.tftp_addr);
    let verify = phlem(
        dir.path(),
        &url,
        &[
            "run",
            "--target",
            &target,
            "--quiet",
            "--verify",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    // A changed file is caught.
    std::fs::write(
        out.join("0015654aa937.cfg"),
        "#!version:1.0.0.1\nedited = 1\n",
    )
    .unwrap();
    let caught = phlem(
        dir.path(),
        &url,
        &[
            "run",
            "--target",
            &target,
            "--quiet",
            "--verify",
            out.to_str().unwrap(),
        ],
    );
    assert!(!caught.status.success());
    assert!(
        text(&caught.stdout).contains("failed: mismatch x1"),
        "{}",
        text(&caught.stdout)
    );
    // A file the folder lacks is told apart from one that differs: both
    // Yealinks fetch the common file.
    std::fs::remove_file(out.join("y000000000000.cfg")).unwrap();
    let unrendered = phlem(
        dir.path(),
        &url,
        &[
            "run",
            "--target",
            &target,
            "--quiet",
            "--verify",
            out.to_str().unwrap(),
        ],
    );
    assert!(!unrendered.status.success());
    let table = text(&unrendered.stdout);
    assert!(table.contains("failed: not_rendered x2"), "{table}");
    assert!(table.contains("failed: mismatch x1"), "{table}");
}

#[test]
fn pbx_mode_mixes_known_and_unknown_callers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let mut create = dialtone(dir.path(), &url);
    create.args([
        "token", "create", "--scope", "lookup", "--tenant", "demo", "--name", "phlem",
    ]);
    let out = run(create);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_string();
    // The running server learns of the new key through its change feed.
    let known_key = wait_until(std::time::Duration::from_secs(10), || {
        matches!(
            server.try_get(&format!("/v1/lookup?number=15550101234&key={key}")),
            Some((200, _))
        )
    });
    assert!(known_key.is_some(), "the server never accepted the new key");
    // Numbers of the demo directory, in the formats a directory holds.
    let numbers = write_file(
        dir.path(),
        "numbers.txt",
        "+1 (555) 010-1234\n555.010.1299\n(555) 010-0042\n",
    );
    let json = dir.path().join("pbx.json");
    let target = format!("http://{}", server.addr);
    let args = [
        "pbx",
        "--target",
        &target,
        "--key",
        &key,
        "--numbers",
        numbers.to_str().unwrap(),
        "--rate",
        "200",
        "--seconds",
        "1",
        "--miss-ratio",
        "0.3",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = phlem(dir.path(), &url, &args);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let r = report(&json);
    let steps = r["steps"].as_object().unwrap();
    let known = steps["lookup known number"]["transfers"].as_u64().unwrap();
    let unknown = steps["lookup unknown number"]["transfers"]
        .as_u64()
        .unwrap();
    assert_eq!(known + unknown, 200, "{r}");
    assert!(unknown > 20 && known > 100, "{r}");
    // A wrong key is a failure phlem reports, not a silent empty name.
    let bad = phlem(
        dir.path(),
        &url,
        &[
            "pbx",
            "--target",
            &target,
            "--key",
            "dt_wrong",
            "--numbers",
            numbers.to_str().unwrap(),
            "--rate",
            "20",
            "--seconds",
            "1",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stdout).contains("failed: http_401"),
        "{}",
        text(&bad.stdout)
    );
}

#[test]
fn phones_that_keep_their_source_port_get_every_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let server = Server::start(dir.path(), &url, &["--demo"]);
    let json = dir.path().join("same-port.json");
    let target = format!("tftp://{}", server.tftp_addr);
    let args = [
        "run",
        "--target",
        &target,
        "--same-port",
        "--repeat",
        "5",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = phlem(dir.path(), &url, &args);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let r = report(&json);
    // Each retransmission here would be a request the server ignored
    // because the same port's previous transfer was still winding down.
    let retransmits: u64 = r["steps"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["retransmits"].as_u64().unwrap())
        .sum();
    assert_eq!(retransmits, 0, "{}", text(&out.stdout));
}

#[test]
fn phones_with_credentials_answer_digest_challenges() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let data = write_file(
        dir.path(),
        "locked.json",
        r#"{"tenants":[{"slug":"acme","name":"Acme"}],
            "phones":[{"tenant":"acme","mac":"00:15:65:00:00:44","family":"yealink","model":"T46S",
                       "http_user":"desk44","http_password":"hunter2!",
                       "lines":[{"extension":"144","password":"s3cret","registrar":"sip.example.net"}]}]}"#,
    );
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&data);
    assert!(run(import).status.success());
    let server = Server::start(dir.path(), &url, &[]);
    let target = format!("http://{}", server.prov_addr);
    let json = dir.path().join("digest.json");
    let out = phlem(
        dir.path(),
        &url,
        &[
            "run",
            "--target",
            &target,
            "--phones",
            "database",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(report(&json)["steps"]["yealink {mac}.cfg"]["transfers"], 1);
    // The review tool shows the protected phone's files too, and they are
    // the bytes HTTP serves the phone with its credentials.
    let rendered = render_all(dir.path(), &url, &target);
    assert!(
        rendered.join("001565000044.cfg").is_file(),
        "{}",
        text(&out.stdout)
    );
    let mut render = dialtone(dir.path(), &url);
    render.env("DIALTONE_PROVISIONING__BASE_URL", &target);
    render_yealink_common_file(render, "001565000044", &rendered);
    let verify = phlem(
        dir.path(),
        &url,
        &[
            "run",
            "--target",
            &target,
            "--phones",
            "database",
            "--quiet",
            "--verify",
            rendered.to_str().unwrap(),
        ],
    );
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let mut list = dialtone(dir.path(), &url);
    list.args(["render", "001565000044"]);
    let out = run(list);
    assert!(
        text(&out.stdout).contains("001565000044.cfg"),
        "{}",
        text(&out.stdout)
    );
    // The same phone without its credentials is refused, and phlem says so.
    let csv = write_file(dir.path(), "nocreds.csv", "001565000044,yealink,T46S\n");
    let out = phlem(
        dir.path(),
        &url,
        &[
            "run",
            "--target",
            &target,
            "--phones",
            csv.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("failed: http_401"),
        "{}",
        text(&out.stdout)
    );
    let wrong = write_file(
        dir.path(),
        "wrong.csv",
        "001565000044,yealink,T46S,desk44,wrong\n",
    );
    let out = phlem(
        dir.path(),
        &url,
        &[
            "run",
            "--target",
            &target,
            "--phones",
            wrong.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert!(
        text(&out.stdout).contains("failed: http_401"),
        "{}",
        text(&out.stdout)
    );
}

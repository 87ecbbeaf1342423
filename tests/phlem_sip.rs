//! phlem's SIP side against the real Kamailio of `scripts/test`: phones
//! register their first line, NOTIFYs sent through the proxy reach them,
//! they answer and fetch their files again.

mod common;

use std::time::Duration;

use common::sip::{output_text, sha256, unique_domain, Notifier, Phlem};
use common::*;

#[test]
fn phones_register_answer_notifies_and_fetch_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let domain = unique_domain("phlem");
    let data = write_file(
        dir.path(),
        "phones.json",
        &format!(
            r#"{{"tenants":[{{"slug":"acme","name":"Acme"}}],
            "phones":[
              {{"tenant":"acme","mac":"00:15:65:00:01:01","family":"yealink","model":"T46S",
                "lines":[{{"extension":"101","auth_user":"acct101","password":"a","registrar":"{domain}"}},
                         {{"extension":"191","password":"b","registrar":"{domain}"}}]}},
              {{"tenant":"acme","mac":"00:04:13:00:01:02","family":"snom","model":"D785",
                "lines":[{{"extension":"102","password":"c","registrar":"{domain}"}}]}},
              {{"tenant":"acme","mac":"00:04:f2:00:01:03","family":"poly","model":"VVX 450"}}]}}"#
        ),
    );
    let mut import = dialtone(dir.path(), &url);
    import.arg("import").arg(&data);
    let out = run(import);
    assert!(out.status.success(), "{}", output_text(&out));
    let server = Server::start(dir.path(), &url, &[]);
    let target = format!("http://{}", server.prov_addr);
    let proxy = common::sip::proxy().to_string();
    let phlem = Phlem::start(
        dir.path(),
        &url,
        &[
            "--target",
            &target,
            "--phones",
            "database",
            "--sip-proxy",
            &proxy,
            "--hold",
            "120",
            "--reboot-delay-ms",
            "100",
        ],
        2,
    );
    let notifier = Notifier::new();
    // The AOR is the first line's extension at its registrar, as the
    // templates make phones register (the auth user only authenticates).
    let yealink = notifier
        .notify(&format!("101@{domain}"), "check-sync;reboot=false")
        .expect("an answer through the proxy");
    assert_eq!(yealink.status, 200, "{}", yealink.text);
    assert!(
        yealink.header("to").unwrap().contains(";tag="),
        "{}",
        yealink.text
    );
    assert_eq!(yealink.header("cseq"), Some("1 NOTIFY"));
    // Snom reboots on a bare check-sync, and fetches after its delay.
    let snom = notifier
        .notify(&format!("102@{domain}"), "check-sync")
        .unwrap();
    assert_eq!(snom.status, 200, "{}", snom.text);
    // A retransmission is answered again but fetches nothing more.
    let request = notifier.request(&format!("102@{domain}"), "resync", "retransmitted");
    assert_eq!(notifier.send(&request).unwrap().status, 200);
    assert_eq!(notifier.send(&request).unwrap().status, 200);
    let talk = notifier.notify(&format!("102@{domain}"), "talk").unwrap();
    assert_eq!(talk.status, 489, "{}", talk.text);
    assert!(
        talk.text.contains("Allow-Events: check-sync"),
        "{}",
        talk.text
    );
    // Kamailio knows no one else: not the second line, not the line-less phone.
    for nobody in ["191", "acct101", "103"] {
        let answer = notifier
            .notify(&format!("{nobody}@{domain}"), "check-sync")
            .unwrap();
        assert_eq!(answer.status, 404, "{nobody}: {}", answer.text);
    }
    assert!(
        phlem.wait_refetches(3, Duration::from_secs(30)),
        "{}",
        phlem.stderr()
    );
    let report = phlem.stop();
    let sip = &report["sip"];
    assert_eq!(
        (&sip["registered"], &sip["without_line"]),
        (&2.into(), &1.into()),
        "{sip}"
    );
    assert_eq!(sip["notifies"], 4, "{sip}");
    assert_eq!(
        (&sip["answered"], &sip["bad_events"]),
        (&3.into(), &1.into())
    );
    assert_eq!(report["failures"], serde_json::json!({}), "{report}");
    let refetches = sip["refetches"].as_array().unwrap();
    assert_eq!(refetches.len(), 3, "{sip}");
    // Each re-fetch got the bytes the server renders for that phone (its
    // own files: `render --all` renders shared ones without a phone).
    let rendered = render_all(dir.path(), &url, &target);
    for r in refetches {
        let files = r["files"].as_object().unwrap();
        assert!(r["failed"].as_array().unwrap().is_empty(), "{r}");
        let own = match r["mac"].as_str().unwrap() {
            "001565000101" => "001565000101.cfg",
            "000413000102" => "snomD785-000413000102.htm",
            other => panic!("unexpected re-fetch by {other}"),
        };
        assert!(files.contains_key(own), "{r}");
        let mac = r["mac"].as_str().unwrap();
        for (file, hash) in files {
            if !file.to_ascii_lowercase().contains(mac) {
                continue;
            }
            let want = std::fs::read(rendered.join(file)).unwrap();
            assert_eq!(hash.as_str(), Some(sha256(&want).as_str()), "{file}");
        }
        let waited = r["done_at_ms"].as_u64().unwrap() >= r["received_at_ms"].as_u64().unwrap();
        assert!(waited, "{r}");
    }
    let snom_reboots: Vec<_> = refetches
        .iter()
        .filter(|r| r["mac"] == "000413000102")
        .map(|r| r["reboot"].as_bool().unwrap())
        .collect();
    assert_eq!(snom_reboots.len(), 2, "{sip}");
    assert!(snom_reboots.contains(&true), "{sip}");
}

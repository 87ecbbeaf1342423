//! A tenant's settings are printed into every phone's files: a string in
//! them holding a control character but a tab or a line break, a line
//! separator or a noncharacter is refused at the write, whoever writes
//! it. A line break may stay (a PEM certificate for an XML attribute).

use axum::http::StatusCode;
use dialtone_sync::Backend;
use serde_json::json;

use crate::admin::tests::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_string_a_file_cannot_carry_is_refused() {
    let h = Harness::new(Backend::Sqlite).await;
    for role in ["global", "acme-admin"] {
        for bad in [
            "pool\u{b}account.1.enable = 0",
            "a\u{1}b",
            "a\u{2028}b",
            "a\u{ffff}",
        ] {
            let body =
                json!({ "name": "Acme", "settings": { "language": "English", "ntp_server": bad } });
            let refused = h.put_acme(role, body).await;
            assert_eq!(
                refused.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{role} {bad:?}: {}",
                refused.text
            );
            let message = refused.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(message.starts_with("settings.ntp_server: U+"), "{message}");
        }
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let body =
            json!({ "name": "Acme", "settings": { "ntp_server": "pool.ntp.org\t", "ca": pem } });
        let ok = h.put_acme(role, body).await;
        assert_eq!(ok.status, StatusCode::OK, "{role}: {}", ok.text);
    }
}

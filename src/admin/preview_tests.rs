//! `GET /v1/phones/{mac}/files` for every family: it lists the files a
//! template renders for the phone, and one file's failing template is
//! shown on that file, not made the whole list's answer.

use axum::http::StatusCode;
use dialtone_sync::store::{LineInput, PhoneInput, TemplateInput};
use dialtone_sync::{Backend, Family, Mutation, TemplateScope};
use serde_json::Value;

use crate::admin::tests::{seed_audit, Harness};

fn phone(mac: &str, family: Family, model: &str) -> Mutation {
    Mutation::UpsertPhone(PhoneInput {
        tenant: "acme".into(),
        mac: mac.parse().unwrap(),
        family,
        model: Some(model.into()),
        label: Some("Lobby".into()),
        variables: "{}".into(),
        http_user: None,
        http_password: None,
        lines: vec![LineInput {
            extension: "301".into(),
            display_name: "Lobby".into(),
            auth_user: "301".into(),
            password: Some("pw".into()),
            registrar: "sip.example.net".into(),
            proxy: None,
            settings: "{}".into(),
        }],
    })
}

async fn files(h: &Harness, mac: &str) -> Vec<Value> {
    let reply = h.get("acme-read", &format!("/v1/phones/{mac}/files")).await;
    assert_eq!(reply.status, StatusCode::OK, "{mac}: {}", reply.text);
    reply.json()["files"].as_array().unwrap().clone()
}

fn names(files: &[Value]) -> Vec<&str> {
    files.iter().map(|f| f["file"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn every_familys_phone_lists_the_files_it_renders() {
    let h = Harness::new(Backend::Sqlite).await;
    let phones = [
        ("0004f2000021", Family::Poly, "VVX 450"),
        ("001b54000022", Family::CiscoSpa, "SPA504G"),
        ("0062ec000023", Family::CiscoMpp, "CP-8841-3PCC"),
        ("001b54000024", Family::CiscoSep, "CP-7941G"),
        ("000b82000025", Family::Grandstream, "GXP2135"),
        ("000413000026", Family::Snom, "D785"),
        ("0c383e000027", Family::Fanvil, "X4"),
    ];
    let mutations: Vec<Mutation> = (phones.iter())
        .map(|(mac, family, model)| phone(mac, *family, model))
        .collect();
    h.store.apply(&mutations, &seed_audit()).await.unwrap();
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    for (mac, family, _) in phones {
        let files = files(&h, mac).await;
        assert!(!files.is_empty(), "{family:?}");
        for file in &files {
            assert!(file.get("error").is_none(), "{family:?}: {file}");
            assert!(!file["body"].as_str().unwrap().is_empty(), "{file}");
        }
    }
    let spa = files(&h, "001b54000022").await;
    assert_eq!(
        names(&spa),
        [
            "spa001b54000022.cfg",
            "spa001b54000022.xml",
            "init.cfg",
            "spa504g.cfg"
        ]
    );
    let sep = files(&h, "001b54000024").await;
    assert_eq!(
        names(&sep),
        ["SEP001B54000024.cnf.xml", "XMLDefault.cnf.xml"]
    );
}

#[tokio::test]
async fn a_failing_file_is_shown_on_that_file() {
    let h = Harness::new(Backend::Sqlite).await;
    let mac = "001b54000031";
    // Stored as is: a template's check at the API would refuse it.
    let broken = Mutation::UpsertTemplate(TemplateInput {
        scope: TemplateScope::Phone,
        family: Family::CiscoSpa,
        scope_key: mac.into(),
        file_pattern: "spa{mac}.cfg".into(),
        body: "<flat-profile>\n{{ throw('no such key') }}\n</flat-profile>\n".into(),
        updated_by: "seed".into(),
        keep_versions: None,
    });
    let mutations = [phone(mac, Family::CiscoSpa, "SPA504G"), broken];
    h.store.apply(&mutations, &seed_audit()).await.unwrap();
    dialtone_sync::watcher::catch_up(&h.mirror, &*h.store)
        .await
        .unwrap();
    let files = files(&h, mac).await;
    assert_eq!(
        names(&files),
        [
            "spa001b54000031.cfg",
            "spa001b54000031.xml",
            "init.cfg",
            "spa504g.cfg"
        ]
    );
    let failed = &files[0];
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("line 2") && error.contains("no such key"),
        "{failed}"
    );
    assert_eq!(failed["body"], "");
    assert!(
        files[1..].iter().all(|f| f.get("error").is_none()),
        "{files:?}"
    );
}

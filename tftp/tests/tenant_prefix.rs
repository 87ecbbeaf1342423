//! The `/{tenant}/` folder guard against every spelling of the folder that
//! identification accepts: case, `.` and empty segments, with or without
//! the leading `/` (HTTP paths have one, TFTP file names often not).

mod common;

use common::*;
use dialtone_sync::store::TenantInput;
use dialtone_sync::*;
use dialtone_tftp::{Protocol, ProvisionError, Request};

async fn with_tenant_other() -> Fixture {
    let f = Fixture::new().await;
    f.write(&[Mutation::UpsertTenant(TenantInput {
        slug: "other".into(),
        name: "Other".into(),
        default_region: "GB".into(),
        settings: "{}".into(),
    })])
    .await;
    f
}

fn fetch(f: &Fixture, path: &str, protocol: Protocol) -> Result<String, ProvisionError> {
    f.provisioner
        .provision(&Request {
            path,
            protocol,
            ..Default::default()
        })
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
}

const PROTOCOLS: [Protocol; 2] = [Protocol::Http, Protocol::Tftp];

/// Each spelling of a folder, as an HTTP path and as a TFTP file name.
fn spellings(folders: &[&str]) -> Vec<String> {
    folders
        .iter()
        .flat_map(|folder| {
            let path = format!("{folder}/001565000001.cfg");
            [path.clone(), path.trim_start_matches('/').to_string()]
        })
        .collect()
}

#[tokio::test]
async fn another_tenants_folder_is_refused_however_it_is_spelled() {
    let f = with_tenant_other().await;
    let folders = [
        "/other",
        "/OTHER",
        "/Other",
        "/./other",
        "//other",
        "/.//./OTHER",
    ];
    for path in spellings(&folders) {
        for protocol in PROTOCOLS {
            assert_eq!(
                fetch(&f, &path, protocol),
                Err(ProvisionError::NotFound),
                "{path} over {protocol:?} served acme's phone under tenant other"
            );
        }
    }
}

#[tokio::test]
async fn the_phones_own_tenant_folder_is_served_however_it_is_spelled() {
    let f = with_tenant_other().await;
    for path in spellings(&["/acme", "/ACME", "/Acme", "/./acme", "//acme"]) {
        for protocol in PROTOCOLS {
            let text = fetch(&f, &path, protocol)
                .unwrap_or_else(|e| panic!("{path} over {protocol:?}: {e:?}"));
            assert!(text.contains("account.1.user_name = u101\n"), "{text}");
        }
    }
}

#[tokio::test]
async fn a_folder_that_is_no_tenant_is_just_a_folder() {
    let f = with_tenant_other().await;
    for path in spellings(&["/configs", "/./Configs", "//x/other"]) {
        assert!(fetch(&f, &path, Protocol::Http).is_ok(), "{path}");
    }
}

/// A tenant named like a vendor's folder does not take the folder from
/// the phones of every other tenant that fetch through it.
#[tokio::test]
async fn a_tenant_named_like_a_vendor_folder_leaves_the_folder_to_phones() {
    let f = Fixture::new().await;
    for slug in ["yealink", "cisco"] {
        f.write(&[Mutation::UpsertTenant(TenantInput {
            slug: slug.into(),
            name: slug.into(),
            default_region: "GB".into(),
            settings: "{}".into(),
        })])
        .await;
    }
    for path in spellings(&["/yealink", "/Yealink", "/Cisco", "/cisco"]) {
        for protocol in PROTOCOLS {
            let text = fetch(&f, &path, protocol)
                .unwrap_or_else(|e| panic!("{path} over {protocol:?}: {e:?}"));
            assert!(text.contains("account.1.user_name = u101\n"), "{text}");
        }
    }
}

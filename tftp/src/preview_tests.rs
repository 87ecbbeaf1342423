//! A phone's file list names only files a template renders for it: the
//! admin API previews each, and one it cannot made the list "not found"
//! for every Cisco SPA and enterprise phone.

use dialtone_sync::testing::build::{mirror_of, phone_row};
use dialtone_sync::{Dataset, Family, Phone, Tenant};

use crate::provision::{ProvisionOptions, Provisioner};
use crate::templates::Shipped;

#[test]
fn every_listed_file_previews() {
    let models = [
        (Family::Yealink, "001565000001", Some("T46S")),
        (Family::Yealink, "001565000002", None),
        (Family::Poly, "0004f2000003", Some("VVX 450")),
        (Family::CiscoSpa, "001b54000004", Some("SPA504G")),
        (Family::CiscoSpa, "001b54000005", None),
        (Family::CiscoMpp, "0062ec000006", Some("CP-8841-3PCC")),
        (Family::CiscoSep, "001b54000007", Some("CP-7941G")),
        (Family::Grandstream, "000b82000008", Some("GXP2135")),
        (Family::Snom, "000413000009", Some("D785")),
        (Family::Snom, "00041300000a", None),
        (Family::Fanvil, "0c383e00000b", Some("X4")),
    ];
    let phones: Vec<Phone> = (models.iter().zip(1..))
        .map(|((family, mac, model), id)| Phone {
            model: model.map(Into::into),
            ..phone_row(id, 1, mac.parse().unwrap(), *family)
        })
        .collect();
    let data = Dataset {
        tenants: vec![Tenant {
            id: 1,
            slug: "acme".into(),
            name: "Acme".into(),
            default_region: "US".into(),
            settings: "{}".into(),
            updated_at: 1,
        }],
        phones: phones.clone(),
        ..Default::default()
    };
    let provisioner = Provisioner::new(
        mirror_of(data),
        dialtone_sync::testing::test_key(),
        Shipped::built_in(1),
        ProvisionOptions::default(),
    );
    for phone in &phones {
        let files = provisioner.rendered_files_of(phone);
        assert!(!files.is_empty(), "{}", phone.mac);
        for file in files {
            if let Err(e) = provisioner.preview(phone, &file, None) {
                panic!(
                    "{:?} {}: {file} is listed, but: {e}",
                    phone.family, phone.mac
                );
            }
        }
    }
    let sep = &phones[6];
    assert_eq!(
        provisioner.rendered_files_of(sep),
        ["SEP001B54000007.cnf.xml", "XMLDefault.cnf.xml"]
    );
}

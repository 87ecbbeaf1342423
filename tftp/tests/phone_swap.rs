//! A hardware swap (`Mutation::ReplacePhoneMac`) keeps the phone's id and
//! gives it a new MAC, so its file has a new name. That name is the
//! phone's own file, not another spelling of the name it had: what the
//! render cache remembers under the old MAC must not make the new one
//! count as a respelling (a miss for its source, and never cached).

mod common;

use std::net::IpAddr;

use common::*;
use dialtone_sync::{Family, Mutation, TemplateScope};
use dialtone_tftp::{Protocol, ProvisionError, Request};

const OLD: &str = "001565000001";
const NEW: &str = "0015650000aa";

fn from(ip: IpAddr, path: &str) -> Request<'_> {
    Request {
        path,
        remote: Some(ip),
        protocol: Protocol::Http,
        ..Default::default()
    }
}

fn desk_template(body: &str) -> Mutation {
    template(
        TemplateScope::Phone,
        Family::Yealink,
        OLD,
        "{mac}.cfg",
        body,
    )
}

/// The desk's own template failed once (a bad edit, mended since): that
/// failure stays remembered under the old name, outdated, after the swap.
#[tokio::test]
async fn a_swapped_phones_file_under_its_new_mac_is_cached_and_costs_no_misses() {
    let f = Fixture::new().await;
    let office: IpAddr = "192.0.2.10".parse().unwrap();
    let old_file = format!("{OLD}.cfg");
    let new_file = format!("{NEW}.cfg");
    assert!(f.provisioner.provision(&from(office, &old_file)).is_ok());
    f.write(&[desk_template("{{ throw(message=\"a bad edit\") }}")])
        .await;
    assert!(matches!(
        f.provisioner.provision(&from(office, &old_file)),
        Err(ProvisionError::Render { .. })
    ));
    f.write(&[desk_template("# mended\n{{ lines[0].password }}\n")])
        .await;
    assert!(f.provisioner.provision(&from(office, &old_file)).is_ok());

    f.write(&[Mutation::ReplacePhoneMac {
        from: OLD.parse().unwrap(),
        to: NEW.parse().unwrap(),
    }])
    .await;
    assert!(matches!(
        f.provisioner.provision(&from(office, &old_file)),
        Err(ProvisionError::NotFound)
    ));

    // The new hardware at the desk: its file is cached as any phone's is.
    let before = f.provisioner.cached_files();
    let served = f.provisioner.provision(&from(office, &new_file)).unwrap();
    assert!(
        String::from_utf8_lossy(&served.body).contains("# mended"),
        "{served:?}"
    );
    assert_eq!(f.provisioner.cached_files(), before + 1);

    // From where the desk never fetched (the new phone on another
    // network): served every time, and no ban for it.
    let elsewhere: IpAddr = "198.51.100.7".parse().unwrap();
    for n in 0..60 {
        assert!(
            f.provisioner.provision(&from(elsewhere, &new_file)).is_ok(),
            "fetch {n} from elsewhere"
        );
    }
    assert!(!f.provisioner.guard().is_banned(elsewhere));
}

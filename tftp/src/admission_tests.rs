use super::*;

fn version(id: Id, network: &str) -> Arc<Tenant> {
    let settings = format!(r#"{{"provisioning_networks":["{network}"]}}"#);
    Arc::new(Tenant {
        id,
        ..dialtone_sync::testing::build::tenant_row(&settings)
    })
}

/// Fetches read a tenant's networks while its row changes under them:
/// each gets the networks of the version it holds, never another's,
/// whichever version the memo held a moment before (old versions are
/// dropped and new ones made all the while, so addresses come round).
#[test]
fn each_version_of_a_row_reads_its_own_networks_under_concurrent_edits() {
    // An id no other test uses: the memo is the process's.
    const TENANT: Id = 9_000_001;
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for n in 0..2_000u32 {
                    let network = format!("10.{}.{}.0/24", t, n % 256);
                    let row = version(TENANT, &network);
                    let expected: ipnet::IpNet = network.parse().unwrap();
                    assert_eq!(
                        provisioning_networks(&row).as_deref(),
                        Some(&[expected][..])
                    );
                    // Some versions live on and are read again later.
                    if n % 7 == 0 {
                        held.push((row, expected));
                    }
                    if n % 50 == 0 {
                        for (row, expected) in &held {
                            assert_eq!(
                                provisioning_networks(row).as_deref(),
                                Some(&[*expected][..])
                            );
                        }
                        held.clear();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// A tenant's phones behind NAT64 (`64:ff9b::a.b.c.d`) are at their IPv4
/// host's site, as bans and the site index read them; a private IPv4
/// host's NAT64 form is an IPv6 address anyone may write, not that host.
#[test]
fn a_nat64_phone_is_inside_its_tenants_networks_as_its_global_ipv4_host() {
    let tenant = |id: Id, network: &str| Tenant {
        slug: format!("t{id}").into(),
        ..(*version(id, network)).clone()
    };
    let mirror = dialtone_sync::testing::build::mirror_of(dialtone_sync::Dataset {
        tenants: vec![
            tenant(1, "81.2.69.0/24"),
            tenant(2, "10.1.0.0/16"),
            tenant(3, "64:ff9b::/96"),
        ],
        ..Default::default()
    });
    let state = mirror.load();
    let from = |id: Id, remote: &str| {
        let tenant = state.tenant(id).unwrap();
        where_from(&state, None, tenant, remote.parse().unwrap())
    };
    assert!(from(1, "81.2.69.5").is_ok());
    assert!(from(1, "64:ff9b::81.2.69.5").is_ok());
    assert!(from(1, "64:ff9b::81.2.70.5") == Err(Barred::OutsideItsNetworks));
    assert!(from(2, "10.1.0.5").is_ok());
    assert!(from(2, "64:ff9b::10.1.0.5") == Err(Barred::OutsideItsNetworks));
    // A list naming the prefix holds it as written.
    assert!(from(3, "64:ff9b::81.2.69.5").is_ok());
    assert!(from(3, "81.2.69.5") == Err(Barred::OutsideItsNetworks));
}

/// Another family's User-Agent on a phone's own file refuses it, but not
/// between Cisco's families (one flat-profile format, a User-Agent an
/// operator sets), and never on a common or static file.
#[test]
fn a_family_mismatch_is_another_vendors_user_agent_on_a_phones_own_file() {
    use dialtone_sync::testing::build::phone_row;
    use dialtone_sync::Family;
    let yealink = phone_row(1, 1, "001565000001".parse().unwrap(), Family::Yealink);
    let mpp = phone_row(2, 1, "00562b043615".parse().unwrap(), Family::CiscoMpp);
    let asked = |path: &str, ua: &str| crate::identify::identify(path, Some(ua)).unwrap();
    let poly = "FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application";
    let spa = "Cisco/SPA508G-7.4.4 (00562B043615)(CBT141400UK)";
    assert_eq!(
        family_mismatch(&asked("001565000001.cfg", poly), &yealink),
        Some(Family::Poly)
    );
    assert_eq!(
        family_mismatch(&asked("001565000001-directory.xml", poly), &yealink),
        Some(Family::Poly)
    );
    assert_eq!(
        family_mismatch(&asked("00562b043615-directory.xml", spa), &mpp),
        None
    );
    assert_eq!(family_mismatch(&asked("sip.ld", poly), &yealink), None);
}

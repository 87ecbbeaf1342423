//! The provision() core against a real (SQLite) store and mirror: rendering,
//! the override chain, error isolation, determinism and cache invalidation.

mod common;

use std::sync::Arc;

use common::*;
use dialtone_sync::store::TenantInput;
use dialtone_sync::testing::test_key;
use dialtone_sync::*;
use dialtone_tftp::{ProvisionError, ProvisionOptions, Provisioner, Request, Shipped};

#[tokio::test]
async fn renders_a_phone_from_the_mirror() {
    let f = Fixture::new().await;
    let text = f.get("/001565000001.cfg").unwrap();
    assert!(text.starts_with("#!version:1.0.0.1\n"), "{text}");
    assert!(text.contains("account.1.user_name = u101\n"), "{text}");
    assert!(
        text.contains("account.2.display_name = Back office\n"),
        "{text}"
    );
    // Secrets are opened only here, for the phone's own file.
    assert!(text.contains("account.1.password = secret-0\n"), "{text}");
    // Tenant settings override the built-in defaults.
    assert!(
        text.contains("local_time.ntp_server1 = ntp.acme.example\n"),
        "{text}"
    );
    assert!(text.contains(
        "remote_phonebook.data.1.url = http://prov.example.net/001565000001-directory.xml"
    ));
    // XML families escape what they interpolate.
    let xml = f.get("snomD785-000413000003.htm").unwrap();
    assert!(
        xml.contains(">R&amp;D &lt;lab&gt;</user_realname>"),
        "{xml}"
    );
}

#[tokio::test]
async fn unknown_phones_and_names_reveal_nothing() {
    let f = Fixture::new().await;
    for path in [
        "001565999999.cfg",
        "nothing.txt",
        "snomD785-000413999999.htm",
        "y000000000000.boot",
    ] {
        assert_eq!(f.get(path), Err(ProvisionError::NotFound), "{path}");
    }
    // A Yealink phone asking for a Snom file name is not served either.
    assert_eq!(
        f.get("snomD785-001565000001.htm"),
        Err(ProvisionError::NotFound)
    );
    assert!(matches!(
        f.get("../001565000001.cfg"),
        Err(ProvisionError::BadPath(_))
    ));
}

#[tokio::test]
async fn renders_are_deterministic_and_cached() {
    let f = Fixture::new().await;
    let request = Request {
        path: "001565000001.cfg",
        user_agent: None,
        ..Default::default()
    };
    let a = f.provisioner.provision(&request).unwrap();
    let b = f.provisioner.provision(&request).unwrap();
    assert!(
        Arc::ptr_eq(&a.body, &b.body),
        "second fetch should be a cache hit"
    );
    // A fresh provisioner (another process, in effect) renders the same bytes.
    let other = Provisioner::new(
        f.mirror.clone(),
        test_key(),
        Shipped::load(f._dir.path(), 7).unwrap(),
        ProvisionOptions {
            base_url: "http://prov.example.net".into(),
            ..Default::default()
        },
    );
    let c = other.provision(&request).unwrap();
    assert_eq!(a.body, c.body);
    assert_eq!(a.etag, c.etag);
}

#[tokio::test]
async fn override_chain_phone_tenant_model_family_shipped() {
    let f = Fixture::new().await;
    let tenant_id = f
        .mirror
        .load()
        .tenant_by_slug("acme")
        .unwrap()
        .id
        .to_string();
    let name = "{mac}.cfg";
    f.write(&[template(
        TemplateScope::Family,
        Family::Yealink,
        "",
        name,
        "from = family\n",
    )])
    .await;
    assert_eq!(f.get("001565000001.cfg").unwrap(), "from = family\n");
    f.write(&[template(
        TemplateScope::Model,
        Family::Yealink,
        "T46S",
        name,
        "from = model\n",
    )])
    .await;
    assert_eq!(f.get("001565000001.cfg").unwrap(), "from = model\n");
    // The other model still gets the family default.
    assert_eq!(f.get("001565000002.cfg").unwrap(), "from = family\n");
    f.write(&[template(
        TemplateScope::Tenant,
        Family::Yealink,
        &tenant_id,
        name,
        "from = tenant\n",
    )])
    .await;
    assert_eq!(f.get("001565000001.cfg").unwrap(), "from = tenant\n");
    assert_eq!(f.get("001565000002.cfg").unwrap(), "from = tenant\n");
    f.write(&[template(
        TemplateScope::Phone,
        Family::Yealink,
        "001565000001",
        name,
        "from = phone\n",
    )])
    .await;
    assert_eq!(f.get("001565000001.cfg").unwrap(), "from = phone\n");
    assert_eq!(f.get("001565000002.cfg").unwrap(), "from = tenant\n");
}

#[tokio::test]
async fn a_broken_template_fails_only_its_phones() {
    let f = Fixture::new().await;
    let broken = "line one\n{% for line in lines %}{{ line.nope }}{% endfor %}\n";
    f.write(&[template(
        TemplateScope::Phone,
        Family::Yealink,
        "001565000001",
        "{mac}.cfg",
        broken,
    )])
    .await;
    match f.get("001565000001.cfg") {
        Err(ProvisionError::Render {
            template,
            line,
            message,
            ..
        }) => {
            assert!(template.contains("yealink/{mac}.cfg (stored"), "{template}");
            assert_eq!(line, Some(2), "{message}");
        }
        other => panic!("expected a render error, got {other:?}"),
    }
    // Everyone else is served as before.
    assert!(f
        .get("001565000002.cfg")
        .unwrap()
        .contains("account.1.user_name = u101"));
    // A syntax error names its line too.
    let syntax = "a = 1\nb = {{ \n";
    f.write(&[template(
        TemplateScope::Phone,
        Family::Yealink,
        "001565000002",
        "{mac}.cfg",
        syntax,
    )])
    .await;
    assert!(matches!(
        f.get("001565000002.cfg"),
        Err(ProvisionError::Render { line: Some(2), .. })
    ));
}

#[tokio::test]
async fn edits_invalidate_exactly_what_they_touch() {
    let f = Fixture::new().await;
    let before_1 = f.get("001565000001.cfg").unwrap();
    let before_2 = f
        .provisioner
        .provision(&Request {
            path: "001565000002.cfg",
            user_agent: None,
            ..Default::default()
        })
        .unwrap();
    f.write(&[phone(
        "00:15:65:00:00:01",
        Family::Yealink,
        "T46S",
        &["Front desk", "Back office", "Lobby"],
    )])
    .await;
    let after_1 = f.get("001565000001.cfg").unwrap();
    assert_ne!(before_1, after_1);
    assert!(
        after_1.contains("account.3.display_name = Lobby"),
        "{after_1}"
    );
    // The other phone's cached file survived the edit.
    let after_2 = f
        .provisioner
        .provision(&Request {
            path: "001565000002.cfg",
            user_agent: None,
            ..Default::default()
        })
        .unwrap();
    assert!(
        Arc::ptr_eq(&before_2.body, &after_2.body),
        "unrelated file was re-rendered"
    );
    // A tenant change reaches every phone of the tenant.
    f.write(&[Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme & Sons".into(),
        default_region: "US".into(),
        settings: r#"{"ntp_server":"ntp2.acme.example"}"#.into(),
    })])
    .await;
    let text = f.get("001565000002.cfg").unwrap();
    assert!(text.contains("ntp2.acme.example"), "{text}");
}

fn from(ip: std::net::IpAddr, path: &str) -> Request<'_> {
    Request {
        path,
        remote: Some(ip),
        protocol: dialtone_tftp::Protocol::Http,
        ..Default::default()
    }
}

#[tokio::test]
async fn scanners_get_banned_while_phones_keep_booting() {
    let f = Fixture::new().await;
    let scanner: std::net::IpAddr = "192.0.2.66".parse().unwrap();
    let phone_ip: std::net::IpAddr = "192.0.2.10".parse().unwrap();

    let mut banned_after = None;
    for n in 0..100u32 {
        let mac = format!("0015650{n:05x}.cfg");
        if f.provisioner.provision(&from(scanner, &mac)).err() == Some(ProvisionError::Banned) {
            banned_after = Some(n);
            break;
        }
    }
    let n = banned_after.expect("the scanner was never banned");
    assert!(n > 5 && n < 100, "banned after {n} misses");
    // Banned: even a real phone's file is refused to that source, unless
    // that phone fetched it from there before (the scan hit 001565000001).
    assert_eq!(
        f.provisioner
            .provision(&from(scanner, "snomD785-000413000003.htm"))
            .err(),
        Some(ProvisionError::Banned)
    );
    assert!(f
        .provisioner
        .provision(&from(scanner, "001565000001.cfg"))
        .is_ok());
    // Another source, the phone itself, is not slowed at all.
    assert!(f
        .provisioner
        .provision(&from(phone_ip, "001565000001.cfg"))
        .is_ok());
    assert_eq!(f.provisioner.guard().banned_sources(), 1);
}

/// A phone's own file has endless spellings (any case; any model part in
/// a Snom name), each a render. They are served, but only the spelling
/// cached first is kept, so no one who knows a MAC fills the cache every
/// tenant shares, and another spelling costs its source a miss unless the
/// phone is known to fetch from there.
#[tokio::test]
async fn spellings_of_a_phones_file_share_one_cache_entry_and_cost_misses() {
    let f = Fixture::new().await;
    let phone_ip: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    assert!(f
        .provisioner
        .provision(&from(phone_ip, "snomD785-000413000003.htm"))
        .is_ok());
    let before = f.provisioner.cached_files();

    // From one source: served until its misses ban it.
    let scanner: std::net::IpAddr = "192.0.2.66".parse().unwrap();
    let served = (0..100u32)
        .take_while(|n| {
            let path = format!("snomX{n}-000413000003.htm");
            f.provisioner.provision(&from(scanner, &path)).is_ok()
        })
        .count();
    assert!(served < 40, "{served} spellings served before a ban");
    // From a hundred sources (TFTP's can be forged): all served, one entry.
    for n in 0..100u32 {
        let ip = std::net::IpAddr::from([198, 51, 100, n as u8]);
        let path = format!("SNOMd{n}-000413000003.HTM");
        assert!(f.provisioner.provision(&from(ip, &path)).is_ok(), "{path}");
    }
    assert!(
        f.provisioner.cached_files() <= before,
        "{} files cached, {before} before",
        f.provisioner.cached_files()
    );
    // The phone's own spelling is still the one cached.
    assert!(f
        .provisioner
        .provision(&from(phone_ip, "snomD785-000413000003.htm"))
        .is_ok());
    assert_eq!(f.provisioner.cached_files(), before);
    // From where the phone fetches, another spelling costs nothing.
    for _ in 0..50 {
        assert!(f
            .provisioner
            .provision(&from(phone_ip, "SNOMD785-000413000003.HTM"))
            .is_ok());
    }
    assert!(!f.provisioner.guard().is_banned(phone_ip));
    assert_eq!(f.provisioner.cached_files(), before);

    // Nor does another spelling in the cache lock out a phone whose own
    // source is banned (an office behind the scanner's address).
    for n in 0..40u32 {
        let _ = f
            .provisioner
            .provision(&from(phone_ip, &format!("0015650{n:05x}.cfg")));
    }
    assert!(f.provisioner.guard().is_banned(phone_ip));
    let elsewhere = std::net::IpAddr::from([198, 51, 100, 200]);
    assert!(f
        .provisioner
        .provision(&from(elsewhere, "snomElse-000413000003.htm"))
        .is_ok());
    assert!(f
        .provisioner
        .provision(&from(phone_ip, "snomD785-000413000003.htm"))
        .is_ok());
}

/// A phone recorded without a model renders with its User-Agent's, which
/// anyone may write anew each request: another model is another spelling
/// (one entry, a miss), and so is another spelling of a file whose render
/// fails (one remembered failure, a miss), or each would be a full render
/// on the tenant's share, uncharged.
#[tokio::test]
async fn a_new_model_or_a_failing_files_new_spelling_costs_a_miss() {
    let f = Fixture::new().await;
    let mut unmodeled = phone("00:15:65:00:00:07", Family::Yealink, "", &["Lobby"]);
    if let Mutation::UpsertPhone(input) = &mut unmodeled {
        input.model = None;
    }
    f.write(&[unmodeled]).await;
    let ask = |ip: std::net::IpAddr, path: &'static str, ua: String| {
        let ua: &'static str = Box::leak(ua.into_boxed_str());
        f.provisioner.provision(&Request {
            user_agent: Some(ua),
            ..from(ip, path)
        })
    };
    let office: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    assert!(ask(
        office,
        "001565000007.cfg",
        "Yealink SIP-T46S 66.86.0.15".into()
    )
    .is_ok());
    let before = f.provisioner.cached_files();
    let scanner: std::net::IpAddr = "192.0.2.66".parse().unwrap();
    let served = (0..100u32)
        .take_while(|n| ask(scanner, "001565000007.cfg", format!("Yealink SIP-X{n} 1.0")).is_ok())
        .count();
    assert!(served < 40, "{served} models served before a ban");
    assert_eq!(f.provisioner.cached_files(), before);
    // From where the phone fetches, its own model costs nothing.
    for _ in 0..50 {
        assert!(ask(
            office,
            "001565000007.cfg",
            "Yealink SIP-T46S 66.86.0.15".into()
        )
        .is_ok());
    }
    assert!(!f.provisioner.guard().is_banned(office));

    // A template that fails for this phone: one failure held, and other
    // spellings from elsewhere cost misses.
    f.write(&[template(
        TemplateScope::Phone,
        Family::Yealink,
        "001565000007",
        "{mac}.cfg",
        "{{ throw(message=\"broken for this phone\") }}",
    )])
    .await;
    assert!(matches!(
        ask(
            office,
            "001565000007.cfg",
            "Yealink SIP-T46S 66.86.0.15".into()
        ),
        Err(ProvisionError::Render { .. })
    ));
    let other: std::net::IpAddr = "192.0.2.67".parse().unwrap();
    let spellings = ["001565000007.CFG", "001565000007.Cfg", "001565000007.cFG"];
    let failed = (0..100usize)
        .take_while(|n| {
            let path = spellings[n % spellings.len()];
            let path: &'static str = Box::leak(path.to_string().into_boxed_str());
            matches!(
                ask(other, path, "Yealink SIP-T46S 66.86.0.15".into()),
                Err(ProvisionError::Render { .. })
            )
        })
        .count();
    assert!(
        failed < 40,
        "{failed} failing spellings rendered before a ban"
    );
    assert!(f.provisioner.guard().is_banned(other));
}

/// The same under concurrency: spellings from many sources fill at once
/// while the phone's office fetches and its lines are edited. Its file
/// stays one cache entry, and after the last edit the office gets the
/// edited file, not one a racing fill left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_spellings_and_edits_leave_one_current_entry() {
    let f = Fixture::new().await;
    let office: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    let own = "snomD785-000413000003.htm";
    assert!(f.provisioner.provision(&from(office, own)).is_ok());
    let before = f.provisioner.cached_files();
    let fetchers: Vec<_> = (0..5u8)
        .map(|t| {
            let provisioner = f.provisioner.clone();
            tokio::task::spawn_blocking(move || {
                for n in 0..40u8 {
                    let (ip, path) = if t == 0 {
                        (office, own.to_string())
                    } else {
                        let ip = std::net::IpAddr::from([198, 51, t, n]);
                        (ip, format!("snom{t}x{n}-000413000003.htm"))
                    };
                    let answer = provisioner.provision(&from(ip, &path));
                    assert!(answer.is_ok(), "{path}: {answer:?}");
                }
            })
        })
        .collect();
    for n in 0..5 {
        let label = format!("Lab {n}");
        f.write(&[phone("00:04:13:00:00:03", Family::Snom, "D785", &[&label])])
            .await;
    }
    for fetcher in fetchers {
        fetcher.await.unwrap();
    }
    assert!(
        f.provisioner.cached_files() <= before,
        "{} files cached, {before} before",
        f.provisioner.cached_files()
    );
    let served = f.provisioner.provision(&from(office, own)).unwrap();
    let text = String::from_utf8(served.body.to_vec()).unwrap();
    assert!(text.contains("Lab 4"), "{text}");
}

#[tokio::test]
async fn fetches_by_known_phones_are_recorded() {
    let f = Fixture::new().await;
    let (provisioner, history) = recording(&f);
    let ua = "Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01";
    for path in ["001565000001.cfg", "001565777777.cfg"] {
        let _ = provisioner.provision(&Request {
            path,
            user_agent: Some(ua),
            remote: Some("192.0.2.10".parse().unwrap()),
            protocol: dialtone_tftp::Protocol::Http,
            query: None,
            auth: None,
        });
    }
    stored(history).await;
    let mac: Mac = "001565000001".parse().unwrap();
    let boots = f.store.recent_boots(&mac, None, 10).await.unwrap();
    assert_eq!(boots.len(), 1, "{boots:?}");
    let boot = &boots[0];
    assert_eq!(
        (
            boot.outcome.as_str(),
            boot.protocol.as_str(),
            boot.remote_ip.as_str()
        ),
        ("ok", "http", "192.0.2.10")
    );
    assert_eq!(boot.model.as_deref(), Some("T46S"));
    assert_eq!(boot.firmware.as_deref(), Some("66.86.0.15"));
    // The unknown MAC left no row (scanners must not fill the table).
    let unknown: Mac = "001565777777".parse().unwrap();
    assert!(f
        .store
        .recent_boots(&unknown, None, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn phone_directories_in_each_format() {
    let f = Fixture::new().await;
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.push(Mutation::UpsertDirectoryEntry(
            dialtone_sync::store::DirectoryEntryInput {
                tenant: "acme".into(),
                external_id: format!("e{i:02}"),
                name: format!("Person {i:02} & Co"),
                company: None,
                numbers: vec![DirectoryNumber {
                    number: format!("+1 (555) 010-{:04}", 1000 + i).into(),
                    kind: "work".into(),
                }],
            },
        ));
    }
    f.write(&batch).await;
    // Poly, Cisco, Yealink and Snom phones of the same tenant.
    f.write(&[
        phone("00:04:f2:00:00:10", Family::Poly, "VVX 450", &["P"]),
        phone("00:1b:54:00:00:11", Family::CiscoSep, "CP-7941G", &["C"]),
    ])
    .await;
    let fetch = |path: &str, query: Option<&str>| {
        let r = f
            .provisioner
            .provision(&Request {
                path,
                query,
                ..Default::default()
            })
            .unwrap();
        String::from_utf8(r.body.to_vec()).unwrap()
    };
    for (path, root) in [
        ("001565000001-directory.xml", "YealinkIPPhoneDirectory"),
        ("000413000003-directory.xml", "SnomIPPhoneDirectory"),
        ("0004f2000010-directory.xml", "directory"),
        ("001b54000011-directory.xml", "CiscoIPPhoneDirectory"),
    ] {
        let xml = fetch(path, None);
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{path}: {e}\n{xml}"));
        assert_eq!(doc.root_element().tag_name().name(), root, "{path}");
        assert!(
            xml.contains("Person 00 &amp; Co") || xml.contains("<fn>Person 00 &amp;</fn>"),
            "{path}: {xml}"
        );
    }
    // Poly splits the name into first and last.
    assert!(fetch("0004f2000010-directory.xml", None).contains("<ln>Co</ln>"));
    // Cisco: 32 per page, with paging keys, and search.
    let page1 = fetch("001b54000011-directory.xml", None);
    assert_eq!(page1.matches("<DirectoryEntry>").count(), 32);
    assert!(
        page1.contains("?page=1") && page1.contains("Page 1 of 2"),
        "{page1}"
    );
    let page2 = fetch("001b54000011-directory.xml", Some("page=1"));
    assert_eq!(page2.matches("<DirectoryEntry>").count(), 8);
    assert!(page2.contains("Person 39"));
    let found = fetch("001b54000011-directory.xml", Some("q=person+07"));
    assert_eq!(found.matches("<DirectoryEntry>").count(), 1, "{found}");
    // Unknown phones get nothing.
    assert_eq!(
        f.provisioner
            .provision(&Request {
                path: "001565999999-directory.xml",
                ..Default::default()
            })
            .err(),
        Some(ProvisionError::NotFound)
    );
}

#[tokio::test]
async fn a_tenant_network_allow_list_is_enforced() {
    let f = Fixture::new().await;
    f.write(&[Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme & Sons".into(),
        default_region: "US".into(),
        settings: r#"{"provisioning_networks":["192.0.2.0/24","2001:db8::/32"]}"#.into(),
    })])
    .await;
    let inside = f
        .provisioner
        .provision(&from("192.0.2.77".parse().unwrap(), "001565000001.cfg"));
    assert!(inside.is_ok());
    let v6 = f
        .provisioner
        .provision(&from("2001:db8::7".parse().unwrap(), "001565000001.cfg"));
    assert!(v6.is_ok());
    let outside = f
        .provisioner
        .provision(&from("198.51.100.7".parse().unwrap(), "001565000001.cfg"));
    assert_eq!(outside.err(), Some(ProvisionError::NotFound));
    // The networks are read once per version of the tenant's row: the
    // next version's list holds from the next fetch.
    f.write(&[Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme & Sons".into(),
        default_region: "US".into(),
        settings: r#"{"provisioning_networks":["198.51.100.0/24"]}"#.into(),
    })])
    .await;
    let moved = f
        .provisioner
        .provision(&from("198.51.100.7".parse().unwrap(), "001565000001.cfg"));
    assert!(moved.is_ok());
    let left = f
        .provisioner
        .provision(&from("192.0.2.77".parse().unwrap(), "001565000001.cfg"));
    assert_eq!(left.err(), Some(ProvisionError::NotFound));
    // Behind NAT64 a phone is its global IPv4 host, inside the list as
    // it is at its site; a documentation (or private) address's NAT64
    // form is only an IPv6 address (RFC 6052), outside.
    f.write(&[Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme & Sons".into(),
        default_region: "US".into(),
        settings: r#"{"provisioning_networks":["81.2.69.0/24","198.51.100.0/24"]}"#.into(),
    })])
    .await;
    for (remote, served) in [
        ("64:ff9b::81.2.69.5", true),
        ("64:ff9b::198.51.100.7", false),
    ] {
        let fetch = f
            .provisioner
            .provision(&from(remote.parse().unwrap(), "001565000001.cfg"));
        assert_eq!(fetch.is_ok(), served, "{remote}");
    }
}

/// A MAC is no secret: a tenant could create a phone by the MAC of a
/// phone that boots at another tenant's office. A tenant without networks
/// has its phones served anywhere but inside another tenant's site; the
/// operator gives it the range too where its phones really are there.
#[tokio::test]
async fn a_phone_is_not_served_inside_another_tenants_site() {
    let f = Fixture::new().await;
    let tenant = |slug: &str, settings: &str| {
        Mutation::UpsertTenant(TenantInput {
            slug: slug.into(),
            name: slug.into(),
            default_region: "US".into(),
            settings: settings.into(),
        })
    };
    f.write(&[tenant(
        "other",
        r#"{"provisioning_networks":["192.0.2.0/24"]}"#,
    )])
    .await;
    let ask = |ip: &str| {
        f.provisioner
            .provision(&from(ip.parse().unwrap(), "001565000001.cfg"))
            .err()
    };
    assert_eq!(ask("192.0.2.77"), Some(ProvisionError::NotFound));
    assert_eq!(ask("::ffff:192.0.2.77"), Some(ProvisionError::NotFound));
    assert_eq!(ask("198.51.100.7"), None);
    // A wide network (a slip) keeps no one's phones out.
    f.write(&[tenant(
        "other",
        r#"{"provisioning_networks":["198.0.0.0/8"]}"#,
    )])
    .await;
    assert_eq!(ask("198.51.100.7"), None);
    // An operator who stages every tenant's phones on one site turns it off.
    f.write(&[tenant(
        "other",
        r#"{"provisioning_networks":["192.0.2.0/24"]}"#,
    )])
    .await;
    let open = dialtone_tftp::Provisioner::new(
        f.mirror.clone(),
        dialtone_sync::testing::test_key(),
        dialtone_tftp::Shipped::built_in(1),
        dialtone_tftp::ProvisionOptions {
            sites_exclusive: false,
            ..Default::default()
        },
    );
    assert!(open
        .provision(&from("192.0.2.77".parse().unwrap(), "001565000001.cfg"))
        .is_ok());
    // Both tenants' sites: acme's phone is served there again.
    f.write(&[
        tenant("other", r#"{"provisioning_networks":["192.0.2.0/24"]}"#),
        tenant("acme", r#"{"provisioning_networks":["192.0.2.0/24"]}"#),
    ])
    .await;
    assert_eq!(ask("192.0.2.77"), None);
}

/// Should a mirror hold a phone whose tenant it lacks (a full load once
/// read a first import's frozen rows beside an older snapshot's tenants;
/// the load now waits for such an import first), its tenant's networks
/// cannot be checked, so it is answered as an unknown phone.
#[tokio::test]
async fn a_phone_without_its_tenant_is_not_served() {
    let f = Fixture::new().await;
    let state = f.mirror.load();
    let mut data = state.to_dataset();
    data.tenants.clear();
    f.mirror.reset(
        data,
        state.cursor(),
        state.meta().clone(),
        LoadedFrom::Database,
    );
    for ip in ["192.0.2.77", "127.0.0.1"] {
        let answer = f
            .provisioner
            .provision(&from(ip.parse().unwrap(), "001565000001.cfg"));
        assert_eq!(answer.err(), Some(ProvisionError::NotFound), "from {ip}");
    }
    assert_eq!(f.get("001565000001.cfg"), Err(ProvisionError::NotFound));
}

#[tokio::test]
async fn a_tenant_prefix_must_match_the_phone() {
    let f = Fixture::new().await;
    f.write(&[Mutation::UpsertTenant(TenantInput {
        slug: "other".into(),
        name: "Other".into(),
        default_region: "GB".into(),
        settings: "{}".into(),
    })])
    .await;
    assert!(f.get("/acme/001565000001.cfg").is_ok());
    assert_eq!(
        f.get("/other/001565000001.cfg"),
        Err(ProvisionError::NotFound)
    );
    // A folder that is no tenant is just a folder.
    assert!(f.get("/configs/001565000001.cfg").is_ok());
}

/// A dual-stack listener (`[::]`) sees IPv4 phones as `::ffff:a.b.c.d`:
/// they are the same phones, inside or outside their tenant's IPv4
/// networks, and history records them as IPv4.
#[tokio::test]
async fn ipv4_phones_on_a_dual_stack_socket_are_judged_as_ipv4() {
    let f = Fixture::new().await;
    acme_served_in(&f, "192.0.2.0/24").await;
    let (provisioner, history) = recording(&f);
    let inside: std::net::IpAddr = "::ffff:192.0.2.10".parse().unwrap();
    let outside: std::net::IpAddr = "::ffff:198.51.100.1".parse().unwrap();
    assert!(provisioner
        .provision(&from(inside, "001565000001.cfg"))
        .is_ok());
    assert_eq!(
        provisioner
            .provision(&from(outside, "001565000001.cfg"))
            .err(),
        Some(ProvisionError::NotFound)
    );
    stored(history).await;
    let mac: Mac = "001565000001".parse().unwrap();
    let boots = f.store.recent_boots(&mac, None, 10).await.unwrap();
    let sources: Vec<&str> = boots.iter().map(|b| b.remote_ip.as_str()).collect();
    assert!(sources.contains(&"192.0.2.10"), "{sources:?}");
    assert!(
        sources.iter().all(|s| !s.starts_with("::ffff")),
        "{sources:?}"
    );
}

/// A fetch refused because it came from where the phone's tenant is not
/// served is not that tenant's to see: a tenant that creates a phone by
/// another organization's device's MAC would read that device's office
/// address and boot times. Global admins still see it, and the tenant
/// sees its refused fetches from its own networks (a wrong transport).
#[tokio::test]
async fn a_fetch_refused_from_elsewhere_is_kept_from_the_tenant() {
    let f = Fixture::new().await;
    acme_served_in(&f, "192.0.2.0/24").await;
    // A second phone that needs credentials, so never served over TFTP.
    let mut guarded = phone("00:15:65:00:00:02", Family::Yealink, "T46S", &["Lab"]);
    if let Mutation::UpsertPhone(p) = &mut guarded {
        p.http_user = Some("desk2".into());
        p.http_password = Some("secret".into());
    }
    f.write(&[guarded]).await;
    let acme = f.mirror.load().tenant_by_slug("acme").unwrap().id;
    let (provisioner, history) = recording(&f);
    let inside: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    let elsewhere: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    assert!(provisioner
        .provision(&from(inside, "001565000001.cfg"))
        .is_ok());
    for (source, protocol) in [
        (elsewhere, dialtone_tftp::Protocol::Http),
        (inside, dialtone_tftp::Protocol::Tftp),
        (elsewhere, dialtone_tftp::Protocol::Tftp),
    ] {
        let path = if protocol == dialtone_tftp::Protocol::Http {
            "001565000001.cfg"
        } else {
            "001565000002.cfg"
        };
        let refused = provisioner.provision(&Request {
            protocol,
            ..from(source, path)
        });
        assert_eq!(refused.err(), Some(ProvisionError::NotFound));
    }
    stored(history).await;
    let seen = |mac: &str, tenant: Option<Id>| {
        let mac: Mac = mac.parse().unwrap();
        let store = f.store.clone();
        async move {
            let boots = store.recent_boots(&mac, tenant, 10).await.unwrap();
            let mut sources: Vec<String> = boots.into_iter().map(|b| b.remote_ip).collect();
            sources.sort();
            sources
        }
    };
    assert_eq!(seen("001565000001", Some(acme)).await, ["192.0.2.10"]);
    assert_eq!(
        seen("001565000001", None).await,
        ["192.0.2.10", "198.51.100.7"]
    );
    // Refused for its transport at its own office: the tenant's to see.
    assert_eq!(seen("001565000002", Some(acme)).await, ["192.0.2.10"]);
    assert_eq!(
        seen("001565000002", None).await,
        ["192.0.2.10", "198.51.100.7"]
    );
}

/// Acme's phones served only inside `network`.
async fn acme_served_in(f: &Fixture, network: &str) {
    f.write(&[Mutation::UpsertTenant(TenantInput {
        slug: "acme".into(),
        name: "Acme & Sons".into(),
        default_region: "US".into(),
        settings: format!(r#"{{"provisioning_networks":["{network}"]}}"#),
    })])
    .await;
}

/// A client's overlong User-Agent is read as none: its text would ride,
/// whole, into the history queue and rows and the cached render's inputs.
#[tokio::test]
async fn an_overlong_user_agent_is_read_as_none() {
    use axum::extract::connect_info::MockConnectInfo;
    use tower::ServiceExt;

    let f = Fixture::new().await;
    let (provisioner, history) = recording(&f);
    let provisioner = Arc::new(provisioner);
    let short = "Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01";
    let long = format!("Yealink SIP-T46S 66.86.0.15{}", " x".repeat(300));
    // From two addresses: a repeat from one within a minute is recorded once.
    for (ua, from) in [
        (short.to_string(), "192.0.2.10:5060"),
        (long, "192.0.2.11:5060"),
    ] {
        let app = dialtone_tftp::http::router(provisioner.clone()).layer(MockConnectInfo(
            from.parse::<std::net::SocketAddr>().unwrap(),
        ));
        let request = axum::http::Request::get("/001565000001.cfg")
            .header(axum::http::header::USER_AGENT, ua)
            .body(axum::body::Body::empty())
            .unwrap();
        let reply = app.oneshot(request).await.unwrap();
        assert_eq!(reply.status(), axum::http::StatusCode::OK);
    }
    stored(history).await;
    let mac: Mac = "001565000001".parse().unwrap();
    let boots = f.store.recent_boots(&mac, None, 10).await.unwrap();
    let agents: Vec<Option<&str>> = boots.iter().map(|b| b.user_agent.as_deref()).collect();
    assert_eq!(boots.len(), 2, "{agents:?}");
    assert!(agents.contains(&Some(short)), "{agents:?}");
    assert!(agents.contains(&None), "{agents:?}");
}

/// A preview renders the phone the caller was allowed to see: if it moved
/// to another tenant between that check and the render (a tenant can hold
/// its own job back by filling its share), it is not found, rather than
/// shown with the new tenant's lines and settings. A template check's
/// sample phone likewise.
#[tokio::test]
async fn a_preview_of_a_phone_moved_meanwhile_is_not_found() {
    let f = Fixture::new().await;
    let mac: dialtone_sync::Mac = "00:15:65:00:00:01".parse().unwrap();
    let allowed = f.mirror.load().phone_by_mac(&mac).unwrap().as_ref().clone();
    let file = "001565000001.cfg";
    let shown = f.provisioner.preview(&allowed, file, None).unwrap();
    assert!(String::from_utf8_lossy(&shown.body).contains("Reception"));
    let mut moved = phone(
        "00:15:65:00:00:01",
        Family::Yealink,
        "T46S",
        &["Globex desk"],
    );
    if let Mutation::UpsertPhone(p) = &mut moved {
        p.tenant = "globex".into();
    }
    f.write(&[
        Mutation::UpsertTenant(TenantInput {
            slug: "globex".into(),
            name: "Globex".into(),
            default_region: "US".into(),
            settings: "{}".into(),
        }),
        moved,
    ])
    .await;
    assert!(matches!(
        f.provisioner.preview(&allowed, file, None),
        Err(ProvisionError::NotFound)
    ));
    assert!(matches!(
        f.provisioner.check_template(
            Family::Yealink,
            "{mac}.cfg",
            "{{ lines | length }}",
            Some(&allowed)
        ),
        Err(ProvisionError::NotFound)
    ));
}

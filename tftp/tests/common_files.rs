//! Model-common and boot files: served for the models this deployment has
//! for free, and for any other model served too, but at a miss, so a
//! scanner's made-up models get it banned after the usual burst.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::*;
use dialtone_sync::testing::test_key;
use dialtone_sync::{Family, TemplateScope};
use dialtone_tftp::{ProvisionError, ProvisionOptions, Provisioner, Request, Shipped};

fn ask<'a>(ip: IpAddr, path: &'a str, user_agent: Option<&'a str>) -> Request<'a> {
    Request {
        path,
        user_agent,
        remote: Some(ip),
        protocol: dialtone_tftp::Protocol::Http,
        ..Default::default()
    }
}

/// A provisioner over the fixture's mirror with the shipped templates:
/// every family's common files render.
fn with_built_in_templates(f: &Fixture) -> Arc<Provisioner> {
    Arc::new(Provisioner::new(
        f.mirror.clone(),
        test_key(),
        Shipped::built_in(1),
        ProvisionOptions::default(),
    ))
}

/// As [`with_built_in_templates`], with a render cache a flood fills.
fn with_a_small_cache(f: &Fixture) -> Arc<Provisioner> {
    Arc::new(Provisioner::new(
        f.mirror.clone(),
        test_key(),
        Shipped::built_in(1),
        ProvisionOptions {
            render_cache_bytes: 64 << 10,
            ..Default::default()
        },
    ))
}

#[tokio::test]
async fn made_up_models_cost_misses_and_a_ban_bounds_their_renders() {
    let f = Fixture::new().await;
    let provisioner = with_built_in_templates(&f);
    let scanner: IpAddr = "192.0.2.66".parse().unwrap();
    let phone: IpAddr = "192.0.2.10".parse().unwrap();

    let mut banned_after = None;
    for n in 0..200u32 {
        let (path, agent) = match n % 5 {
            0 => (format!("spax{n}.cfg"), None),
            1 => (format!("snomX{n}.htm"), None),
            2 => (format!("cfgx{n}.xml"), None),
            3 => (format!("X{n}-3PCC.xml"), None),
            _ => (
                "y000000000066.cfg".to_string(),
                Some(format!("Yealink SIP-X{n} 66.86.0.15")),
            ),
        };
        match provisioner.provision(&ask(scanner, &path, agent.as_deref())) {
            Err(ProvisionError::Banned) => {
                banned_after = Some(n);
                break;
            }
            other => assert!(other.is_ok(), "{path}: {other:?}"),
        }
    }
    // The default burst is 30 misses.
    assert_eq!(banned_after, Some(31), "made-up models must cost misses");
    assert!(provisioner.cached_files() <= 31, "renders past the ban");

    // Model codes nothing ties to a model (Fanvil's ten characters) too.
    let coder: IpAddr = "192.0.2.67".parse().unwrap();
    let banned_after = (0..200u32).find(|n| {
        let path = format!("f{n:010}.cfg");
        let answer = provisioner.provision(&ask(coder, &path, None));
        assert!(
            matches!(answer, Ok(_) | Err(ProvisionError::Banned)),
            "{path}: {answer:?}"
        );
        answer.is_err()
    });
    assert_eq!(
        banned_after,
        Some(31),
        "made-up model codes must cost misses"
    );

    // A stored model's common and boot files still serve, however the
    // file or the User-Agent spells it, and with no User-Agent (TFTP).
    for (path, agent) in [
        ("snomD785.htm", None),
        ("snomd785.htm", None),
        ("y000000000066.cfg", None),
        ("y000000000066.cfg", Some("Yealink SIP-t46s 66.86.0.15")),
        ("y000000000000.boot", None),
        ("y000000000000.boot", Some("Yealink SIP-T54W 96.86.0.15")),
    ] {
        let served = provisioner.provision(&ask(phone, path, agent));
        assert!(served.is_ok(), "{path} {agent:?}: {served:?}");
    }
    // A model no phone is recorded as (phones are often recorded without
    // one) is still served; it costs one miss, not a ban.
    assert!(provisioner
        .provision(&ask(phone, "spa504g.cfg", None))
        .is_ok());
    // Named by a model template, it is known and served too.
    f.write(&[template(
        TemplateScope::Model,
        Family::CiscoSpa,
        "SPA504G",
        "spa{model}.cfg",
        "<flat-profile></flat-profile>\n",
    )])
    .await;
    assert!(provisioner
        .provision(&ask(phone, "spa504g.cfg", None))
        .is_ok());
    assert!(!provisioner.guard().is_banned(phone));
}

/// A banned source that fetched a phone's own file before passes its ban
/// for that phone's files and its family's real common files, but not for
/// made-up models: each of those is a render and a cache entry, and once
/// banned, the misses it is charged no longer bound them.
#[tokio::test]
async fn a_ban_still_bounds_made_up_models_from_a_source_known_for_a_phone() {
    let f = Fixture::new().await;
    let provisioner = with_built_in_templates(&f);
    let scanner: IpAddr = "192.0.2.68".parse().unwrap();
    assert!(provisioner
        .provision(&ask(scanner, "001565000001.cfg", None))
        .is_ok());
    // Every two-digit model code but 66 and 96, the T46S and T54W the
    // fixture's phones are.
    let mut answers = (0..100u32).filter(|n| ![66, 96].contains(n)).map(|n| {
        let path = format!("y0000000000{n:02}.cfg");
        let answer = provisioner.provision(&ask(scanner, &path, None));
        assert!(
            matches!(answer, Ok(_) | Err(ProvisionError::Banned)),
            "{path}: {answer:?}"
        );
        answer.is_ok()
    });
    let served = answers.by_ref().take_while(|ok| *ok).count();
    // The default burst is 30 misses; the one past it is served and bans.
    assert_eq!(served, 31, "the burst, then the ban");
    assert!(answers.all(|ok| !ok), "made-up models served past the ban");
    assert!(
        provisioner.cached_files() <= 32,
        "{} files cached",
        provisioner.cached_files()
    );
    // What the ban lets a known phone's source have, it still has.
    for path in ["001565000001.cfg", "y000000000066.cfg"] {
        let answer = provisioner.provision(&ask(scanner, path, None));
        assert!(answer.is_ok(), "{path}: {answer:?}");
    }
}

/// Case is free in a common file's name: every spelling is served, from
/// one cache entry rendered once, and costs nothing (before, each was a
/// render and an entry of its own in the cache every tenant shares).
#[tokio::test]
async fn spellings_of_a_common_file_share_one_cache_entry() {
    let f = Fixture::new().await;
    let provisioner = with_built_in_templates(&f);
    let ip: IpAddr = "192.0.2.66".parse().unwrap();
    for name in ["XMLDefault.cnf.xml", "y000000000000.boot"] {
        let first = provisioner.provision(&ask(ip, name, None)).unwrap();
        let before = provisioner.cached_files();
        for n in 1..200u32 {
            let spelled: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| match n >> (i % 12) & 1 {
                    1 if c.is_ascii_lowercase() => c.to_ascii_uppercase(),
                    1 => c.to_ascii_lowercase(),
                    _ => c,
                })
                .collect();
            let again = provisioner.provision(&ask(ip, &spelled, None)).unwrap();
            assert_eq!(again.body, first.body, "{spelled}");
        }
        assert_eq!(provisioner.cached_files(), before, "{name}");
    }
    assert!(!provisioner.guard().is_banned(ip));
}

/// A file made for no phone is kept per User-Agent model: phones of two
/// models asking for the same name in turn each hit their own entry,
/// where under one entry per name every request was a render anew.
#[tokio::test]
async fn a_common_file_is_kept_per_model() {
    let f = Fixture::new().await;
    let provisioner = with_built_in_templates(&f);
    let ip: IpAddr = "192.0.2.66".parse().unwrap();
    let agents = ["Yealink SIP-T46S 66.86.0.15", "Yealink SIP-T54W 96.86.0.15"];
    let fetch = |agent| {
        provisioner
            .provision(&ask(ip, "y000000000000.boot", Some(agent)))
            .unwrap()
            .body
    };
    let first: Vec<_> = agents.iter().map(|a| fetch(a)).collect();
    for _ in 0..20 {
        for (agent, body) in agents.iter().zip(&first) {
            assert!(Arc::ptr_eq(body, &fetch(agent)), "{agent}: rendered anew");
        }
    }
    assert_eq!(provisioner.cached_files(), 2);
    // Spellings of one model are one entry, not one each.
    for agent in [
        "Yealink SIP-t46s 66.86.0.15",
        "Yealink SIP-T46s 66.86.0.15",
        "Yealink SIP-t46S 66.86.0.15",
    ] {
        fetch(agent);
    }
    assert_eq!(provisioner.cached_files(), 2);
}

/// Forged sources (any TFTP request's can be) asking for made-up models'
/// files, each name a few times so the cache rates it above a phone's own
/// file fetched once or twice a day: the phones' files and their real
/// common files stay cached. Before, the flood took the whole cache.
#[tokio::test]
async fn made_up_models_from_forged_sources_leave_phones_files_cached() {
    let f = Fixture::new().await;
    let provisioner = with_a_small_cache(&f);
    let office: IpAddr = "192.0.2.10".parse().unwrap();
    // The office's phones fetched their own files first, so the generic
    // file (whose code names no model, as for phones recorded without
    // one) is kept with the real ones, not with the flood's.
    let real = [
        ("001565000001.cfg", None),
        ("001565000002.cfg", None),
        ("y000000000066.cfg", Some("Yealink SIP-T46S 66.86.0.15")),
        ("y000000000000.cfg", None),
    ];
    let fetch = |path, agent| provisioner.provision(&ask(office, path, agent)).unwrap();
    let before: Vec<_> = real.iter().map(|(p, a)| fetch(*p, *a).body).collect();
    for (path, agent) in real {
        fetch(path, agent);
    }
    for n in 0..1500u32 {
        // Twenty names a source: well under the burst that bans it.
        let forged: IpAddr = format!("10.{}.{}.{}", n / 20 / 250, n / 20 % 250, 1 + n % 20)
            .parse()
            .unwrap();
        let path = format!("spax{n}.cfg");
        for _ in 0..4 {
            assert!(provisioner.provision(&ask(forged, &path, None)).is_ok());
        }
    }
    for ((path, agent), body) in real.iter().zip(&before) {
        let again = fetch(*path, *agent);
        assert!(
            Arc::ptr_eq(body, &again.body),
            "{path} was pushed out by the flood and rendered anew"
        );
    }
    assert!(!provisioner.guard().is_banned(office));
}

/// Model codes no model is known by, asked with a real model's
/// User-Agent, cost no miss (a phone of that model may well use one), but
/// a thousand of them per model were each a render kept in the main store:
/// one client over HTTP pushed every phone's file out. They are kept with
/// made-up models' files now.
#[tokio::test]
async fn unknown_model_codes_with_a_real_user_agent_leave_phones_files_cached() {
    let f = Fixture::new().await;
    let provisioner = with_a_small_cache(&f);
    let office: IpAddr = "192.0.2.10".parse().unwrap();
    let real = ["001565000001.cfg", "001565000002.cfg"];
    let fetch = |path| provisioner.provision(&ask(office, path, None)).unwrap();
    let before: Vec<_> = real.iter().map(|p| fetch(*p).body).collect();
    for path in real {
        fetch(path);
    }
    let client: IpAddr = "198.51.100.7".parse().unwrap();
    let agent = Some("Yealink SIP-T46S 66.86.0.15");
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for n in 0..digits.len() * digits.len() {
        let code = [digits[n / digits.len()], digits[n % digits.len()]];
        let path = format!("y0000000000{}.cfg", std::str::from_utf8(&code).unwrap());
        for _ in 0..3 {
            assert!(provisioner.provision(&ask(client, &path, agent)).is_ok());
        }
    }
    for (path, body) in real.iter().zip(&before) {
        assert!(
            Arc::ptr_eq(body, &fetch(*path).body),
            "{path} was pushed out and rendered anew"
        );
    }
}

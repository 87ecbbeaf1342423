//! Mirrored LDAP sources (issue 18) through the real binary, against a
//! slapd of each test's own (tests/ldap_mirror/slapd.rs) loaded with a
//! generated directory (tests/ldap_mirror/ldif.rs): every spelling a PBX
//! sends finds every entry, answers survive slapd stopping or freezing and
//! a dialtone restart, edits in slapd reach the mirror, and a miss costs
//! slapd nothing.

mod common;
#[path = "ldap_mirror/harness.rs"]
mod harness;
#[path = "ldap_mirror/ldif.rs"]
mod ldif;
#[path = "ldap_mirror/slapd.rs"]
mod slapd;

use std::time::Duration;

use common::*;
use dialtone_directory::name::clean_name;
use dialtone_directory::normalize;
use harness::*;
use ldif::{Directory, PROBES, REGIONS};
use slapd::Slapd;

/// (tenant, number a PBX sends, expected name) for every number of every
/// person, in every form; the generator's spellings are checked against
/// the normalizer first, so a failure below is the mirror's, not the data's.
fn expectations(directory: &Directory) -> Vec<(String, String, String)> {
    let (mut out, mut skipped) = (Vec::new(), 0);
    for p in &directory.people {
        let region = REGIONS.iter().find(|(ou, _)| *ou == p.ou).unwrap().1;
        let name = clean_name(&p.raw_name).expect("generated names are names");
        for n in &p.numbers {
            for s in ldif::spellings(n, region) {
                assert_eq!(
                    normalize(&s, region).ok(),
                    Some(n.e164()),
                    "stored {s:?} in {region}"
                );
            }
            for (kind, form) in ldif::pbx_forms(n, region) {
                let read = normalize(&form, region).ok();
                // Digits without a `+` can read as a national number of
                // the tenant's country too; the normalizer's choice is the
                // answer then, whatever the mirror holds.
                if kind == "digits" && read.as_ref() != Some(&n.e164()) {
                    skipped += 1;
                    continue;
                }
                assert_eq!(read, Some(n.e164()), "sent {form:?} ({kind}) in {region}");
                out.push((tenant_of(region), form, name.clone()));
            }
        }
    }
    assert!(
        skipped * 20 < out.len(),
        "{skipped} digit forms read otherwise"
    );
    out
}

#[test]
fn every_pbx_form_finds_every_entry() {
    let directory = ldif::generate(10_000, 18);
    let cases = expectations(&directory);
    // About 13,800 numbers in three to five forms each.
    assert!(cases.len() > 40_000, "only {} cases", cases.len());
    let slapd = Slapd::start(&directory.ldif);
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let setup = setup(dir.path(), &url, &slapd, serde_json::json!({}));
    let server = serve(dir.path(), &url);
    wait_synced(&server, &setup.admin);
    let mut mirrored = 0;
    for (ou, region) in REGIONS {
        let with_numbers = directory
            .people
            .iter()
            .filter(|p| p.ou == ou && p.has_number_attribute())
            .count();
        let status = mirror_status(&server, &setup.admin, &tenant_of(region));
        assert_eq!(status["entries"], with_numbers, "{region}: {status}");
        assert!(status["last_error"].is_null(), "{status}");
        mirrored += with_numbers;
    }
    // The node's total, and nothing per source: ids never repeat, so a
    // label per source would let a tenant grow the registry by churning
    // sources, and show every tenant's directory size.
    let (_, metrics) = server.try_get("/metrics").expect("/metrics answers");
    assert!(!metrics.contains("source=\""), "a per-source metric label");
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("dialtone_directory_mirror_entries {mirrored}")),
        "the total of {mirrored} entries is not reported"
    );

    let wrong = ask_all(&server, &setup, &cases);
    assert!(
        wrong.is_empty(),
        "{} of {} lookups wrong, first: {:#?}",
        wrong.len(),
        cases.len(),
        &wrong[..wrong.len().min(20)]
    );

    // Filter syntax, in the query or planted in the directory, matches nothing.
    let mut pbx = Pbx::connect(server.addr);
    for (_, region) in REGIONS {
        let key = &setup.keys[&tenant_of(region)];
        for probe in PROBES.iter().chain(ldif::TRAPS.iter()) {
            let (_, body) = pbx.lookup(key, probe);
            assert_eq!(body, "", "{region}: {probe:?} answered");
        }
    }

    // The operator's view tells the mirror's answer and its age.
    let alice = &directory
        .people
        .iter()
        .find(|p| p.ou == "us" && !p.numbers.is_empty())
        .unwrap();
    let number = alice.numbers[0].e164();
    let mut cli = dialtone(dir.path(), &url);
    cli.args(["lookup", number.as_str(), "--tenant", "tus"])
        .env(NETWORKS.0, NETWORKS.1);
    let out = run(cli);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        shown.contains("mirror: ") && shown.contains(" entries, age "),
        "{shown}"
    );
    assert!(
        shown.contains(&clean_name(&alice.raw_name).unwrap()),
        "{shown}"
    );
    assert_eq!(server.stop(), 0);
}

/// People `skip..skip + per_region` of each region (with numbers) and one
/// number each. Each phase of a test asks its own, so that an answer
/// cached in an earlier phase cannot stand in for the mirror's.
fn sample(directory: &Directory, skip: usize, per_region: usize) -> Vec<(String, String, String)> {
    REGIONS
        .iter()
        .flat_map(|(ou, region)| {
            directory
                .people
                .iter()
                .filter(move |p| p.ou == *ou && !p.numbers.is_empty())
                .skip(skip)
                .take(per_region)
                .map(move |p| {
                    (
                        tenant_of(region),
                        p.numbers[0].e164(),
                        clean_name(&p.raw_name).unwrap(),
                    )
                })
        })
        .collect()
}

/// Waits until every tenant's mirror has seen a sync fail: from then on
/// its answers are those of a mirror whose source is out of reach.
fn wait_every_sync_failed(server: &Server, admin: &str) {
    let statuses = || REGIONS.map(|(_, region)| mirror_status(server, admin, &tenant_of(region)));
    let failed = wait_until(SYNC_WAIT, || {
        statuses()
            .iter()
            .all(|status| !status["last_error"].is_null())
    });
    assert!(
        failed.is_some(),
        "not every sync failed: {:?} {}",
        statuses(),
        server.stderr()
    );
}

/// Connections open to slapd (Linux's `/proc/net/tcp`, where state `01`
/// is established). A mirrored lookup never connects to slapd, and each
/// source's syncs run one at a time, each on a connection of its own that
/// it closes when done: so while slapd is frozen, each is a tenant's sync
/// stuck on it.
fn open_to(slapd: &Slapd) -> usize {
    let slapd_address = format!("0100007F:{:04X}", slapd.port);
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<_> = line.split_whitespace().collect();
            fields[2] == slapd_address && fields[3] == "01"
        })
        .count()
}

/// Waits until every tenant's sync is stuck on the frozen slapd: answers
/// asked then are given while the syncs hang.
fn wait_every_sync_stuck(server: &Server, slapd: &Slapd) {
    let stuck = wait_until(SYNC_WAIT, || open_to(slapd) >= REGIONS.len());
    assert!(
        stuck.is_some(),
        "{} of {} syncs stuck on the frozen slapd: {}",
        open_to(slapd),
        REGIONS.len(),
        server.stderr()
    );
}

#[test]
fn answers_survive_slapd_outages_and_a_restart() {
    let directory = ldif::generate(600, 7);
    let phase = |n: usize| sample(&directory, n * 10, 10);
    let mut slapd = Slapd::start(&directory.ldif);
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // Frequent syncs, so that they run (and fail) during the outages below.
    let setup = setup(
        dir.path(),
        &url,
        &slapd,
        serde_json::json!({ "sync_interval_s": 10, "incremental_interval_s": 1 }),
    );
    let server = serve(dir.path(), &url);
    wait_synced(&server, &setup.admin);
    assert!(ask_all(&server, &setup, &phase(0)).is_empty());

    // A failure seen below is then the outage's.
    for (_, region) in REGIONS {
        let status = mirror_status(&server, &setup.admin, &tenant_of(region));
        assert!(status["last_error"].is_null(), "{status}");
    }
    slapd.stop();
    wait_every_sync_failed(&server, &setup.admin);
    let wrong = ask_all(&server, &setup, &phase(1));
    assert!(wrong.is_empty(), "slapd stopped: {wrong:#?}");

    // A restart while slapd is down answers from the mirror on disk.
    assert_eq!(server.stop(), 0);
    let server = serve(dir.path(), &url);
    let wrong = ask_all(&server, &setup, &phase(2));
    assert!(wrong.is_empty(), "restarted without slapd: {wrong:#?}");
    let status = mirror_status(&server, &setup.admin, "tus");
    assert!(status["entries"].as_u64().unwrap_or(0) > 0, "{status}");

    // Frozen: connections are accepted and never answered.
    slapd.resume();
    slapd.freeze();
    wait_every_sync_stuck(&server, &slapd);
    let wrong = ask_all(&server, &setup, &phase(3));
    slapd.thaw();
    assert!(wrong.is_empty(), "slapd frozen: {wrong:#?}");
    assert_eq!(server.stop(), 0);
}

#[test]
fn edits_in_slapd_reach_the_mirror() {
    let directory = ldif::generate(300, 3);
    let slapd = Slapd::start(&directory.ldif);
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // Incremental syncs every second, and no full sync due during the
    // test: an addition or change seen in time came by an incremental one.
    let setup = setup(
        dir.path(),
        &url,
        &slapd,
        serde_json::json!({ "sync_interval_s": 900, "incremental_interval_s": 1 }),
    );
    let server = serve(dir.path(), &url);
    wait_synced(&server, &setup.admin);
    let key = &setup.keys["tus"];
    let mut pbx = Pbx::connect(server.addr);
    // The answer cache would hide a change for its TTL; ask until the
    // mirror's answer shows or the bound passes.
    let mut wait_for = |number: &str, want: &str, bound: Duration| {
        let seen = wait_until(bound, || {
            let got = pbx.lookup(key, number).1;
            std::thread::sleep(Duration::from_millis(100));
            got == want
        });
        assert!(
            seen.is_some(),
            "{number} never answered {want:?}: {}",
            server.stderr()
        );
    };
    let dn = format!("uid=newcomer,ou=us,ou=people,{}", ldif::BASE);
    slapd.edit(
        "ldapadd",
        &format!("dn: {dn}\nobjectClass: inetOrgPerson\nuid: newcomer\ncn: Nadia Newcomer\nsn: Newcomer\ntelephoneNumber: +1 (555) 010-9998\n"),
    );
    // A few incremental intervals: `modifyTimestamp` has whole seconds.
    let incremental = Duration::from_secs(8);
    wait_for("15550109998", "Nadia Newcomer", incremental);
    slapd.edit(
        "ldapmodify",
        &format!("dn: {dn}\nchangetype: modify\nreplace: cn\ncn: Nadia Renamed\n-\nreplace: telephoneNumber\ntelephoneNumber: 555.010.9997\n"),
    );
    wait_for("15550109997", "Nadia Renamed", incremental);
    wait_for("15550109998", "", incremental);
    let status = mirror_status(&server, &setup.admin, "tus");
    assert_eq!(status["incremental"], "modifyTimestamp", "{status}");
    assert!(!status["last_incremental_sync"].is_null(), "{status}");

    // OpenLDAP keeps no trace of a deletion that a `modifyTimestamp`
    // search could find, so a deletion waits for a full sync: the source
    // is changed to the shortest interval allowed, 10 s.
    let before = status["last_full_sync"].as_i64().unwrap();
    import_sources(
        dir.path(),
        &url,
        &slapd,
        &serde_json::json!({ "sync_interval_s": 10, "incremental_interval_s": 1 }),
    );
    // The changed source starts a new copy; the deletion must be seen by
    // a later full sync of it, not by its empty start.
    let resynced = wait_until(SYNC_WAIT, || {
        mirror_status(&server, &setup.admin, "tus")["last_full_sync"]
            .as_i64()
            .is_some_and(|at| at > before)
    });
    assert!(resynced.is_some(), "the changed source never synced");
    wait_for("15550109997", "Nadia Renamed", incremental);
    slapd.edit("ldapdelete", &format!("{dn}\n"));
    wait_for("15550109997", "", Duration::from_secs(40));
    assert_eq!(server.stop(), 0);
}

#[test]
fn a_miss_on_a_mirror_sends_no_search() {
    let directory = ldif::generate(300, 11);
    let slapd = Slapd::start(&directory.ldif);
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // No incremental syncs, and no full one due during the test: any
    // search slapd logs after the first sync would be a lookup's.
    let setup = setup(
        dir.path(),
        &url,
        &slapd,
        serde_json::json!({ "incremental_interval_s": 0 }),
    );
    let server = serve(dir.path(), &url);
    wait_synced(&server, &setup.admin);
    let before = slapd.searches();
    assert!(before > 0, "the sync itself searched");
    let mut pbx = Pbx::connect(server.addr);
    for i in 0..200 {
        // 555 010 9xxx is beyond what 300 people use.
        let (status, body) = pbx.lookup(&setup.keys["tus"], &format!("1555010{}", 9000 + i));
        assert_eq!((status, body.as_str()), (200, ""), "{i}");
    }
    let hit = &directory
        .people
        .iter()
        .find(|p| p.ou == "us" && !p.numbers.is_empty())
        .unwrap();
    assert_eq!(
        pbx.lookup(&setup.keys["tus"], &hit.numbers[0].e164()).1,
        clean_name(&hit.raw_name).unwrap()
    );
    // A search of the test's own, logged: every search the lookups sent
    // before it has reached the log by then.
    slapd.mark_log();
    assert_eq!(slapd.searches(), before, "a mirrored lookup searched LDAP");
    assert_eq!(server.stop(), 0);
}

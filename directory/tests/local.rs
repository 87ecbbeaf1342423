//! The local directory source over a real (SQLite) store and mirror.

use std::sync::Arc;

use dialtone_directory::local::LocalDirectory;
use dialtone_sync::testing::build::{audit, entry, tenant};
use dialtone_sync::testing::TestDb;
use dialtone_sync::*;

#[tokio::test]
async fn finds_by_any_form_within_the_tenant_only() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    store
        .apply(
            &[
                tenant("acme", "US"),
                tenant("brit", "GB"),
                entry(
                    "acme",
                    "1",
                    "Alice Example",
                    &["+1 (555) 010-1234", "555.010.1299"],
                ),
                entry("acme", "2", "Bob Sample", &["0044 1632 960123"]),
                entry("acme", "3", "Odd Format", &["call 010-0042 please"]),
                entry("brit", "1", "Brit Only", &["01632 960777"]),
            ],
            &audit("setup"),
        )
        .await
        .unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let acme = mirror.load().tenant_by_slug("acme").unwrap().id;
    let brit = mirror.load().tenant_by_slug("brit").unwrap().id;
    let local = LocalDirectory::new(mirror.clone(), 7, 100);

    for input in [
        "+15550101234",
        "15550101234",
        "5550101234",
        "(555) 010-1234",
        "011 1 555 010 1234",
    ] {
        let found = local
            .lookup(&mirror.load(), acme, input)
            .unwrap_or_else(|| panic!("{input} not found"));
        assert_eq!(&*found.entry.name, "Alice Example", "{input}");
        assert!(!found.by_suffix);
    }
    assert_eq!(
        &*local
            .lookup(&mirror.load(), acme, "+441632960123")
            .unwrap()
            .entry
            .name,
        "Bob Sample"
    );
    assert_eq!(
        &*local
            .lookup(&mirror.load(), acme, "011441632960123")
            .unwrap()
            .entry
            .name,
        "Bob Sample"
    );
    // An entry whose number will not normalize is still found by its suffix.
    let odd = local
        .lookup(&mirror.load(), acme, "+1 555 010 0042")
        .expect("found by suffix");
    assert_eq!((&*odd.entry.name, odd.by_suffix), ("Odd Format", true));
    // A caller sent without its area code matches a whole number by its
    // last digits, when only one entry has them.
    let local_caller = local
        .lookup(&mirror.load(), acme, "010-1299")
        .expect("found by suffix");
    assert_eq!(
        (&*local_caller.entry.name, local_caller.by_suffix),
        ("Alice Example", true)
    );
    // Tenant isolation: the British tenant's entry is not acme's.
    assert!(local
        .lookup(&mirror.load(), acme, "+441632960777")
        .is_none());
    assert_eq!(
        &*local
            .lookup(&mirror.load(), brit, "01632 960777")
            .unwrap()
            .entry
            .name,
        "Brit Only"
    );
    // Misses are misses; garbage is a miss, not an error.
    assert!(local.lookup(&mirror.load(), acme, "+15550109999").is_none());
    assert!(local.lookup(&mirror.load(), acme, "*)(uid=*").is_none());

    // An edit invalidates the tenant's index through the change stream.
    let mut events = mirror.subscribe();
    store
        .apply(
            &[entry("acme", "1", "Alice Renamed", &["+1 (555) 010-1234"])],
            &audit("setup"),
        )
        .await
        .unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    while let Ok(event) = events.try_recv() {
        local.invalidate(&event);
    }
    assert_eq!(
        &*local
            .lookup(&mirror.load(), acme, "5550101234")
            .unwrap()
            .entry
            .name,
        "Alice Renamed"
    );
    assert!(
        local.lookup(&mirror.load(), acme, "5550101299").is_none(),
        "the removed number still resolves"
    );

    // An index built from a state older than the edit (a lookup that
    // started before it) answers that lookup, and is never kept for later
    // ones, even with no change stream followed at all.
    let before = mirror.load();
    store
        .apply(
            &[entry("acme", "1", "Alice Again", &["+1 (555) 010-1234"])],
            &audit("setup"),
        )
        .await
        .unwrap();
    watcher::catch_up(&mirror, &*store).await.unwrap();
    assert_eq!(
        &*local
            .lookup(&before, acme, "5550101234")
            .unwrap()
            .entry
            .name,
        "Alice Renamed"
    );
    assert_eq!(
        &*local
            .lookup(&mirror.load(), acme, "5550101234")
            .unwrap()
            .entry
            .name,
        "Alice Again"
    );
}

#[tokio::test]
async fn ambiguous_suffixes_are_not_guessed() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    store
        .apply(
            &[
                tenant("acme", "US"),
                entry("acme", "1", "One", &["0101234"]),
                entry("acme", "2", "Two", &["99-0101234"]),
                entry("acme", "3", "Three", &["0109876"]),
                // Normalizes: found by its own number only, never by the
                // seven digits it shares with a caller across the ocean.
                entry("acme", "4", "Four", &["+44 20 7010 5555"]),
            ],
            &audit("setup"),
        )
        .await
        .unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let acme = mirror.load().tenant_by_slug("acme").unwrap().id;
    let local = LocalDirectory::new(mirror.clone(), 7, 100);
    // Two entries that do not normalize end in 0101234: no guess.
    assert!(local
        .lookup(&mirror.load(), acme, "+1 555 010 1234")
        .is_none());
    assert!(local
        .lookup(&mirror.load(), acme, "+1 555 010 5555")
        .is_none());
    let four = local
        .lookup(&mirror.load(), acme, "+44 20 7010 5555")
        .unwrap();
    assert_eq!((&*four.entry.name, four.by_suffix), ("Four", false));
    // One entry ends in 0109876: a suffix match, marked as such.
    let found = local
        .lookup(&mirror.load(), acme, "+1 555 010 9876")
        .unwrap();
    assert_eq!(&*found.entry.name, "Three");
    assert!(found.by_suffix);
}

/// A number several entries list: a name they share, else a company they
/// share (a switchboard on every contact of a CRM export), else nothing,
/// after edits as after a build.
#[tokio::test]
async fn a_number_several_entries_list_shows_what_they_share() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let at = |company: Option<&str>, m: Mutation| match m {
        Mutation::UpsertDirectoryEntry(mut d) => {
            d.company = company.map(Into::into);
            Mutation::UpsertDirectoryEntry(d)
        }
        other => other,
    };
    let acme = Some("Acme Inc");
    store
        .apply(
            &[
                tenant("t", "US"),
                at(acme, entry("t", "1", "Aaron Abbott", &["+1 555 010 1000"])),
                at(
                    Some("ACME INC"),
                    entry("t", "2", "Bea Brown", &["555-010-1000", "555 010 1002"]),
                ),
                entry("t", "3", "John Smith", &["555 010 2000"]),
                entry("t", "4", "Jane Smith", &["(555) 010-2000"]),
                entry("t", "5", "Cy Cole", &["555 010 3000"]),
                at(acme, entry("t", "6", "cy cole", &["+15550103000"])),
            ],
            &audit("setup"),
        )
        .await
        .unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    let t = mirror.load().tenant_by_slug("t").unwrap().id;
    let local = LocalDirectory::new(mirror.clone(), 7, 100);
    let name = |number: &str| {
        local
            .lookup(&mirror.load(), t, number)
            .map(|f| f.name.to_string())
    };
    assert_eq!(name("+15550101000").as_deref(), Some("Acme Inc"));
    assert_eq!(name("+15550101002").as_deref(), Some("Bea Brown"));
    assert_eq!(name("+15550102000"), None);
    assert_eq!(name("+15550103000").as_deref(), Some("Cy Cole"));

    // Jane moves to her own line: John's is his alone again.
    store
        .apply(
            &[entry("t", "4", "Jane Smith", &["555 010 2001"])],
            &audit("edit"),
        )
        .await
        .unwrap();
    watcher::full_load(&mirror, &*store).await.unwrap();
    assert_eq!(name("+15550102000").as_deref(), Some("John Smith"));
    assert_eq!(name("+15550102001").as_deref(), Some("Jane Smith"));
}

/// Tenants' index builds share the node's places: however many tenants
/// need one at once, no more run than there are places, and every lookup
/// still gets its answer once its turn comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_of_many_tenants_take_turns_for_the_nodes_places() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let slugs = ["t1", "t2", "t3", "t4", "t5", "t6"];
    let mut setup: Vec<Mutation> = slugs.iter().map(|s| tenant(s, "US")).collect();
    for slug in slugs {
        for n in 0..300 {
            setup.push(entry(
                slug,
                &n.to_string(),
                &format!("{slug} {n}"),
                &[&format!("+1 555 01{n:02} {n:04}")],
            ));
        }
    }
    store.apply(&setup, &audit("setup")).await.unwrap();
    let mirror = Arc::new(Mirror::new());
    watcher::full_load(&mirror, &*store).await.unwrap();
    for places in [1, 3] {
        let local = Arc::new(LocalDirectory::new(mirror.clone(), 7, 100).with_build_places(places));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let lookups: Vec<_> = slugs
            .iter()
            .map(|slug| {
                let state = mirror.load();
                let tenant = state.tenant_by_slug(slug).unwrap().id;
                let local = local.clone();
                tokio::spawn(async move {
                    local
                        .find(&state, tenant, "+1 555 0107 0007", deadline)
                        .await
                })
            })
            .collect();
        for (lookup, slug) in lookups.into_iter().zip(slugs) {
            let found = lookup.await.unwrap().unwrap().unwrap();
            assert_eq!(&*found.entry.name, format!("{slug} 7"));
        }
        // These directories are small: their builds may take the place
        // small work has besides the whole builds' `places`.
        assert!(
            (1..=places + 1).contains(&local.most_builds_at_once()),
            "{} builds at once with {places} places",
            local.most_builds_at_once()
        );
    }
}

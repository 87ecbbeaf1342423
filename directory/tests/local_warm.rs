//! A node's start builds the large directories' indexes before their first
//! lookups (`LocalDirectory::warm`): the largest first, as many as the index
//! cache keeps, none under `WARM_MIN_ENTRIES`.

use std::future::pending;

use dialtone_directory::local::{LocalDirectory, Warmed, WARM_MIN_ENTRIES};
use dialtone_sync::testing::build::{mirror_of, work_numbers};
use dialtone_sync::*;
use tokio::time::Instant;

/// Tenant `tenant`'s `n`-th number, unique across tenants.
fn number(tenant: Id, n: usize) -> String {
    format!(
        "+1 {} {:03} {:04}",
        200 + tenant,
        200 + n / 10_000,
        n % 10_000
    )
}

/// Tenants with these many directory entries, ids from 1.
fn mirror_with(sizes: &[usize]) -> std::sync::Arc<Mirror> {
    let mut data = Dataset::default();
    let mut next_entry: Id = 1;
    for (i, size) in sizes.iter().enumerate() {
        let tenant = i as Id + 1;
        data.tenants.push(Tenant {
            id: tenant,
            slug: format!("t{tenant}").into(),
            name: format!("Tenant {tenant}").into(),
            default_region: "US".into(),
            settings: "{}".into(),
            updated_at: 0,
        });
        for n in 0..*size {
            data.directory_entries.push(DirectoryEntry {
                id: next_entry,
                tenant_id: tenant,
                external_id: None,
                name: format!("T{tenant} E{n}").into(),
                company: None,
                numbers: work_numbers(&[number(tenant, n)]),
                updated_at: 0,
            });
            next_entry += 1;
        }
    }
    mirror_of(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_builds_the_largest_directories_the_cache_keeps() {
    let small = WARM_MIN_ENTRIES - 1;
    // Tenants 1..=4; the cache keeps two indexes.
    let mirror = mirror_with(&[3_000, 1_500, small, 2_000]);
    let local = LocalDirectory::new(mirror.clone(), 7, 2);

    let warmed = local.warm(pending()).await;
    assert_eq!(
        warmed,
        Warmed {
            tenants: 2,
            entries: 5_000,
            stopped: false
        },
        "tenants 1 and 4, the two largest"
    );
    assert_eq!(local.builds(), 2, "nothing else was built");

    // Built: answered at once, with a deadline already passed.
    let state = mirror.load();
    for (tenant, n) in [(1, 2_999), (4, 0)] {
        let found = local
            .find(&state, tenant, &number(tenant, n), Instant::now())
            .await
            .expect("built ahead of the lookup")
            .expect("in the directory");
        assert_eq!(&*found.entry.name, format!("T{tenant} E{n}"));
    }
    assert_eq!(local.builds(), 2, "the lookups built nothing");

    // A second warm finds them ready and builds nothing new.
    let again = local.warm(pending()).await;
    assert_eq!(again.tenants, 2);
    assert_eq!(local.updates(), 0);
}

#[tokio::test]
async fn a_directory_under_the_threshold_is_left_to_its_first_lookup() {
    let mirror = mirror_with(&[WARM_MIN_ENTRIES - 1, 10]);
    let local = LocalDirectory::new(mirror.clone(), 7, 100);
    assert_eq!(local.warm(pending()).await, Warmed::default());
    assert_eq!(local.builds(), 0);
}

#[tokio::test]
async fn shutdown_stops_it_before_the_next_tenant() {
    let mirror = mirror_with(&[WARM_MIN_ENTRIES, WARM_MIN_ENTRIES]);
    let local = LocalDirectory::new(mirror.clone(), 7, 100);
    let warmed = local.warm(std::future::ready(())).await;
    assert!(warmed.stopped);
    assert_eq!(warmed.tenants, 0);
    assert_eq!(local.builds(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_a_whole_build_under_way() {
    // Seconds of normalizing: far longer than the wait before the stop.
    let mirror = mirror_with(&[20_000]);
    let local = std::sync::Arc::new(LocalDirectory::new(mirror.clone(), 7, 100));
    let lookup = {
        let (local, state) = (local.clone(), mirror.load());
        tokio::spawn(async move {
            let deadline = Instant::now() + std::time::Duration::from_secs(600);
            local.find(&state, 1, &number(1, 0), deadline).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    local.stop_building();
    assert!(
        lookup.await.unwrap().is_err(),
        "the build ended without an index, so the lookup could not answer"
    );
    // And none starts whole after it.
    let warmed = local.warm(pending()).await;
    assert_eq!(warmed.tenants, 0);
}

use super::*;

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn bytes_held(shares: &TenantShares) -> HashMap<Id, u64> {
    let held = shares.held.lock().unwrap();
    held.iter().map(|(id, h)| (*id, h.bytes)).collect()
}

#[test]
fn a_lone_tenant_may_fill_the_cache_and_newcomers_shrink_its_share() {
    let shares = TenantShares::new(1000);
    for _ in 0..10 {
        assert!(shares.take(1, 100, false), "alone, the whole cache");
    }
    assert!(!shares.take(1, 1, false), "but no more");
    assert!(
        shares.take(2, 500, false),
        "a second tenant caches up to half, though the cache is full: moka evicts"
    );
    assert!(!shares.take(2, 1, false), "and no more than half");
    assert!(
        !shares.take(1, 1, false),
        "the first, past half now, caches nothing new"
    );
    assert!(
        shares.take(1, 10, true),
        "a refresh of an answer it holds is always counted"
    );
    assert!(shares.take(3, 250, false), "a third tenant: a third");
    assert!(shares.take(4, 250, false));
    assert!(!shares.take(5, 251, false), "five tenants: a quarter each");
    assert!(shares.take(5, 250, false));
}

#[test]
fn a_tenant_among_many_is_held_to_a_quarter_however_empty_the_cache() {
    let shares = TenantShares::new(1000);
    for tenant in 2..=4 {
        assert!(shares.take(tenant, 1, false));
    }
    for _ in 0..5 {
        assert!(shares.take(1, 50, false), "within its quarter");
    }
    assert!(
        !shares.take(1, 1, false),
        "past its quarter, with most of the cache empty"
    );
    shares.release(1, 250);
    assert!(
        shares.take(1, 250, false),
        "its answers dropped, room again"
    );
    shares.release(1, 250);
    for tenant in 2..=4 {
        shares.release(tenant, 1);
    }
    assert!(bytes_held(&shares).is_empty());
}

fn entry(name: Option<&str>, definitive: bool, ttl: Duration) -> Entry {
    Entry {
        resolved: Resolved {
            name: name.map(Into::into),
            source: Some("upstream".into()),
            definitive,
        },
        stored_at: Duration::from_secs(10),
        ttl,
        tag: Tag::default(),
    }
}

#[test]
fn a_not_found_lives_at_most_twice_its_ttl_and_a_name_the_whole_stale_window() {
    let not_found = entry(None, true, 5 * MINUTE);
    assert_eq!(not_found.lifetime(DAY), 10 * MINUTE);
    let stored = not_found.stored_at;
    let at = |entry: &Entry, age| entry.freshness(stored + age, DAY);
    assert_eq!(at(&not_found, 5 * MINUTE), Freshness::Stale);
    assert_eq!(at(&not_found, 10 * MINUTE), Freshness::Expired);

    // A stale window shorter than the TTL is kept.
    assert_eq!(not_found.lifetime(MINUTE), 6 * MINUTE);

    let found = entry(Some("Alice Example"), true, 60 * MINUTE);
    assert_eq!(found.lifetime(DAY), 60 * MINUTE + DAY);
    assert_eq!(at(&found, 60 * MINUTE + DAY / 2), Freshness::Stale);

    // What moka is told, for entries it holds.
    let expiry = Lifetime { max_stale: DAY };
    let key: Key = (1, "+15550101234".into());
    let expires = |entry: Entry| expiry.expire_after_create(&key, &Arc::new(entry), Instant::now());
    assert_eq!(expires(not_found.clone()), Some(10 * MINUTE));
    assert_eq!(expires(found.clone()), Some(60 * MINUTE + DAY));
}

#[test]
fn generations_invalidate_one_tenant_or_all() {
    let g = Generations::default();
    let (a0, b0) = (g.current(1), g.current(2));
    g.bump(1);
    assert_ne!(g.current(1), a0);
    assert_eq!(g.current(2), b0);
    let a1 = g.current(1);
    g.bump_all();
    assert_ne!(g.current(1), a1);
    assert_ne!(g.current(2), b0);
}

#[test]
fn freshness_windows() {
    let named = Entry {
        resolved: Resolved {
            name: Some("Alice Example".into()),
            source: Some("local".into()),
            definitive: true,
        },
        stored_at: Duration::from_secs(10),
        ttl: Duration::from_secs(60),
        tag: Tag::default(),
    };
    let stale = Duration::from_secs(30);
    let at = |entry: &Entry, s| entry.freshness(Duration::from_secs(s), stale);
    assert_eq!(at(&named, 69), Freshness::Fresh);
    assert_eq!(at(&named, 70), Freshness::Stale);
    assert_eq!(at(&named, 100), Freshness::Expired);
    assert_eq!(named.lifetime(stale), Duration::from_secs(90));

    let miss = Entry {
        resolved: Resolved {
            name: None,
            ..named.resolved.clone()
        },
        ..named.clone()
    };
    assert_eq!(at(&miss, 70), Freshness::Stale);

    // A failure has no stale window: past its TTL the source is asked again.
    let failed = Entry {
        resolved: Resolved::unavailable(),
        ..named.clone()
    };
    assert_eq!(at(&failed, 69), Freshness::Fresh);
    assert_eq!(at(&failed, 70), Freshness::Expired);
    assert_eq!(failed.lifetime(stale), Duration::from_secs(60));
}

/// Sweeps are registered once per generation, and seldom: each stays
/// pending in moka for every tenant's reads until the cache is scanned.
#[test]
fn sweeps_come_once_a_generation_and_seldom() {
    let shares = TenantShares::new(1 << 20);
    assert!(
        !shares.sweep_due(1, 1),
        "a tenant holding nothing has nothing to sweep"
    );
    assert!(shares.take(1, 100, false) && shares.take(2, 100, false));
    assert!(!shares.sweep_due(1, 0), "no generation since the start");
    assert!(shares.sweep_due(1, 1));
    assert!(!shares.sweep_due(1, 1), "that generation is swept");
    assert!(!shares.sweep_due(1, 2), "a tenant sweeps once a minute");
    assert!(
        !shares.sweep_due(2, 1),
        "the node sweeps once in five seconds"
    );
}

use super::*;

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn bytes_held(shares: &TenantShares) -> HashMap<Id, u64> {
    shares.held.lock().unwrap().clone()
}

#[test]
fn a_tenant_filling_an_empty_cache_is_refused_past_its_quarter() {
    // A cache of 1,000 bytes: shares of 250.
    let shares = TenantShares::new(1000);
    for _ in 0..5 {
        assert!(shares.take(1, 50, false), "within its quarter");
    }
    assert!(
        !shares.take(1, 1, false),
        "past its quarter, with three quarters of the cache empty"
    );
    assert!(
        shares.take(1, 10, true),
        "a refresh of an answer it holds is always counted"
    );
    assert_eq!(bytes_held(&shares), HashMap::from([(1, 260)]));
}

#[test]
fn a_later_tenant_still_caches_up_to_its_own_quarter() {
    let shares = TenantShares::new(1000);
    assert!(shares.take(1, 250, false));
    assert!(!shares.take(1, 1, false));
    assert!(
        shares.take(2, 250, false),
        "the first tenant left room for a whole share"
    );
    assert!(!shares.take(2, 1, false), "and no more than one");
    assert!(shares.take(3, 250, false));
    assert!(shares.take(4, 250, false));
    assert!(
        shares.take(5, 100, false),
        "a full cache still takes a tenant under its share; moka evicts"
    );
    shares.release(1, 250);
    assert!(
        shares.take(1, 250, false),
        "its answers dropped, room again"
    );
    for tenant in 1..=4 {
        shares.release(tenant, 250);
    }
    shares.release(5, 100);
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

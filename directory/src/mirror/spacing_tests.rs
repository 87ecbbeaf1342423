//! How a mirror's syncs are spaced: by their interval and their own
//! cost, behind one gate per tenant, one sync of a tenant's at a time.

use super::*;

/// A sync waits for its interval, and for twenty times the last one of its
/// kind took, whichever is later: a tenant's 10 s interval does not make a
/// 3 s read run every 10 s.
#[test]
fn syncs_are_spaced_by_their_own_cost() {
    use super::schedule::next_sync;
    let mut data = MirrorData {
        last_full_sync: Some(1_000_000),
        last_full_ms: Some(100),
        ..Default::default()
    };
    // Cheap: the interval rules. No watermark: full syncs only.
    assert_eq!(next_sync(&data, 10_000, 5_000), (true, 1_010_000));
    // A 3 s full read: next one a minute later, not 10 s.
    data.last_full_ms = Some(3_000);
    assert_eq!(next_sync(&data, 10_000, 5_000), (true, 1_060_000));
    // Incremental syncs are spaced by their own last duration.
    data.watermark = Some(Watermark::Usn(7));
    data.last_incremental_sync = Some(1_001_000);
    data.last_incremental_ms = Some(50);
    assert_eq!(next_sync(&data, 10_000, 5_000), (false, 1_006_000));
    data.last_incremental_ms = Some(2_000);
    assert_eq!(next_sync(&data, 10_000, 5_000), (false, 1_041_000));
    // An incremental read as slow as a full one waits past the full sync.
    data.last_incremental_ms = Some(4_000);
    assert_eq!(next_sync(&data, 10_000, 5_000), (true, 1_060_000));
    // Never synced: due at once.
    assert_eq!(next_sync(&MirrorData::default(), 10_000, 5_000), (true, 0));
}

/// Every sync of a tenant's, from whichever source, moves the tenant's gate
/// twenty times its duration on (nineteen after its end): a source whose
/// row changed starts afresh, but not sooner than that.
#[test]
fn a_tenants_syncs_share_one_gate() {
    let gates = super::gates::SyncGates::default();
    assert_eq!(gates.open_at(3), 0);
    gates.synced(3, 10_000, 100);
    assert_eq!(gates.open_at(3), 11_900);
    // Another source of the tenant, ending before the gate: it adds on.
    gates.synced(3, 11_000, 50);
    assert_eq!(gates.open_at(3), 12_850);
    // Long after: counted from its end.
    gates.synced(3, 100_000, 10);
    assert_eq!(gates.open_at(3), 100_190);
    assert_eq!(gates.open_at(4), 0, "another tenant's gate is its own");
}

/// One sync of a tenant's runs at a time: its other due sources wait for
/// it, and then for the spacing it moves the gate by; other tenants'
/// syncs are not held up. A turn ends however its sync does.
#[test]
fn a_tenant_syncs_one_source_at_a_time() {
    let gates = gates::SyncGates::default();
    let turn = gates.start(7, 1_000).unwrap();
    assert!(gates.start(7, 1_000).is_none(), "two syncs of one tenant");
    assert!(gates.start(8, 1_000).is_some(), "another tenant waited");
    assert!(gates.open_at(7) > 1_000);
    gates.synced(7, 2_000, 100);
    drop(turn);
    let open = gates.open_at(7);
    assert!(open > 2_000, "not spaced: {open}");
    assert!(gates.start(7, open - 1).is_none());
    let again = gates.start(7, open);
    assert!(again.is_some());
    drop(again);
    assert!(
        gates.start(7, open).is_some(),
        "a dropped turn held the gate"
    );
}

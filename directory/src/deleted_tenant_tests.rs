//! A deleted tenant leaves no generation behind, and what was cached for
//! it cannot be served to a tenant that gets its id.

use std::sync::Arc;

use dialtone_sync::*;
use tokio::sync::broadcast::Receiver;

use super::LookupService;
use crate::cache::Tag;
use crate::test_fixture::{apply, service_of_two_tenants, tenant};

/// What the change follower would do with the events so far.
fn follow(service: &LookupService, events: &mut Receiver<ChangeEvent>) {
    while let Ok(event) = events.try_recv() {
        service.apply_change(&event);
    }
}

fn setup() -> (Arc<Mirror>, LookupService, Receiver<ChangeEvent>) {
    let service = service_of_two_tenants();
    let mirror = service.mirror().clone();
    let events = mirror.subscribe();
    (mirror, service, events)
}

#[test]
fn a_deleted_tenants_generation_goes_and_another_tenants_stays() {
    let (mirror, service, mut events) = setup();
    let generations = &service.inner.generations;
    service.invalidate_tenant(1);
    service.invalidate_tenant(2);
    assert!(generations.holds(1) && generations.holds(2));

    apply(&mirror, (Entity::Tenant, 1, None));
    follow(&service, &mut events);
    assert!(
        !generations.holds(1),
        "a deleted tenant's generation stayed"
    );
    assert!(generations.holds(2));

    service.invalidate_tenant(1);
    assert!(
        !generations.holds(1),
        "a sync of the deleted tenant's that published late put it back"
    );

    let before = generations.current(2);
    service.invalidate_tenant(2);
    assert_ne!(generations.current(2), before, "tenant 2 still invalidates");
}

/// Ids are never reused (identity columns, AUTOINCREMENT), but were one,
/// the tenant's generation reads as it did before its first change again
/// once it is forgotten: the stamps must still tell its answers apart.
#[test]
fn an_answer_of_a_deleted_tenant_never_matches_a_tenant_given_its_id() {
    let (mirror, service, mut events) = setup();
    let cached = Tag::of(&service.inner.generations, &mirror.load(), 1);
    service.invalidate_tenant(1);
    apply(&mirror, (Entity::Tenant, 1, None));
    follow(&service, &mut events);

    // Recreated, and not yet seen by the follower: the window where only
    // the stamps guard the cache.
    apply(&mirror, (Entity::Tenant, 1, Some(Row::Tenant(tenant(1)))));
    let recreated = Tag::of(&service.inner.generations, &mirror.load(), 1);
    assert_eq!(recreated.generation, cached.generation);
    assert_ne!(recreated, cached);

    follow(&service, &mut events);
    assert!(service.inner.generations.holds(1), "a tenant that exists");
    assert_ne!(
        Tag::of(&service.inner.generations, &mirror.load(), 1),
        cached
    );
}

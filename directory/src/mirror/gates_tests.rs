//! A deleted tenant's sync gate goes with it; other tenants' stay.

use dialtone_sync::{Entity, Row};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::service::LookupService;
use crate::test_fixture::{apply, service_of_two_tenants, tenant};

fn reconcile(service: &LookupService) {
    service.reconcile(
        &mut HashMap::new(),
        &TaskTracker::new(),
        &CancellationToken::new(),
    );
}

/// A sync of `tenant`'s that took a minute, ended now.
fn sync_a_minute(gates: &SyncGates, tenant: Id) {
    let now = now_millis();
    drop(gates.start(tenant, now).expect("the gate is open"));
    gates.synced(tenant, now, 60_000);
}

fn gated(gates: &SyncGates) -> Vec<Id> {
    let mut tenants: Vec<Id> = gates.gates().keys().copied().collect();
    tenants.sort_unstable();
    tenants
}

#[tokio::test]
async fn a_deleted_tenants_gate_goes_and_another_tenants_still_holds() {
    let service = service_of_two_tenants();
    let gates = &service.inner.sync_gates;
    sync_a_minute(gates, 1);
    sync_a_minute(gates, 2);
    reconcile(&service);
    assert_eq!(gated(gates), [1, 2], "live tenants keep their gates");

    apply(service.mirror(), (Entity::Tenant, 1, None));
    reconcile(&service);
    assert_eq!(gated(gates), [2], "a deleted tenant's gate stayed");
    assert!(
        gates.start(2, now_millis()).is_none(),
        "tenant 2's spacing was lost"
    );

    // A sync of the deleted tenant's that ends after the delete was seen.
    gates.synced(1, now_millis(), 1);
    reconcile(&service);
    assert_eq!(gated(gates), [2]);

    apply(
        service.mirror(),
        (Entity::Tenant, 3, Some(Row::Tenant(tenant(3)))),
    );
    sync_a_minute(gates, 3);
    reconcile(&service);
    assert_eq!(gated(gates), [2, 3], "a new tenant syncs as any");
}

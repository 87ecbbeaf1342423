//! The share's arithmetic and its places under contention, without a
//! router (`database_share.rs`'s own tests, kept here for its length).

use std::time::Duration;

use super::{all_tenants, per_tenant, DatabaseShare, Scope};

#[test]
fn a_share_is_a_quarter_of_the_pool_and_never_none() {
    assert_eq!(per_tenant(8), 2);
    assert_eq!(per_tenant(20), 5);
    assert_eq!(per_tenant(3), 1);
    assert_eq!(per_tenant(1), 1);
}

#[test]
fn tenants_together_leave_a_reserve_but_are_never_shut_out() {
    let table = [(1, 1), (2, 1), (3, 2), (4, 3), (5, 4), (8, 6), (20, 15)];
    for (pool, tenants) in table {
        assert_eq!(all_tenants(pool), tenants, "pool of {pool}");
        assert!(per_tenant(pool) <= all_tenants(pool), "pool of {pool}");
    }
    assert_eq!(all_tenants(0), 1);
}

#[test]
fn the_tenants_part_runs_out_before_a_tenant_share_does() {
    // Pool 4: a share of 1, tenants together 3.
    let share = DatabaseShare::new(4);
    let held: Vec<_> = (1..=3).map(|t| share.admit(t).unwrap()).collect();
    assert_eq!(share.admit(1).err(), Some(Scope::Tenant));
    assert_eq!(share.admit(4).err(), Some(Scope::AllTenants));
    drop(held);
    // Tenant 4's refusal left no place of its own behind.
    let again: Vec<_> = (2..=4).map(|t| share.admit(t).unwrap()).collect();
    assert_eq!(again.len(), 3);
}

/// Three tenants at their shares of two fill the default pool's six
/// places. Once a fourth has been refused, a busy tenant's place that
/// ends goes to the fourth on its retry, not back to the busy tenant.
#[test]
fn a_refused_tenant_gets_the_next_place_before_busy_ones_get_a_second() {
    let share = DatabaseShare::with_window(8, Duration::from_secs(60));
    let mut held: Vec<_> = [1, 1, 2, 2, 3, 3]
        .into_iter()
        .map(|t| share.admit(t).unwrap())
        .collect();
    assert_eq!(share.admit(4).err(), Some(Scope::AllTenants));
    held.pop(); // One of tenant 3's requests ends.
    assert_eq!(share.admit(3).err(), Some(Scope::OthersWaiting));
    assert_eq!(share.admit(1).err(), Some(Scope::Tenant));
    let fourth = share
        .admit(4)
        .expect("the waiting tenant gets the freed place");
    // Its second waits like everyone's.
    held.pop();
    assert_eq!(share.admit(4).err(), Some(Scope::OthersWaiting));
    // A tenant's first place is never refused for others waiting.
    let fifth = share.admit(5).expect("a first place while one is free");
    drop((fourth, fifth));
}

#[test]
fn without_contention_each_tenant_keeps_its_full_share() {
    let share = DatabaseShare::with_window(8, Duration::from_millis(1));
    let held: Vec<_> = (1..=6).map(|i| share.admit(1 + i / 2).unwrap()).collect();
    assert_eq!(share.admit(9).err(), Some(Scope::AllTenants));
    drop(held);
    std::thread::sleep(Duration::from_millis(5));
    let again: Vec<_> = [1, 1, 2, 2].into_iter().map(|t| share.admit(t)).collect();
    assert!(again.iter().all(Result::is_ok), "the window passed");
}

/// Under contention from many threads at once, with the window
/// opening and closing as refusals come: never more admitted than the
/// tenants' part, nor more for one tenant than its share.
#[test]
fn concurrent_admissions_never_pass_either_bound() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let share = DatabaseShare::with_window(8, Duration::from_millis(2));
    let total = Arc::new(AtomicUsize::new(0));
    let per: Arc<Vec<AtomicUsize>> = Arc::new((0..5).map(|_| AtomicUsize::new(0)).collect());
    let (most, most_per) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let threads: Vec<_> = (0..10)
        .map(|thread| {
            let (share, total, per) = (share.clone(), total.clone(), per.clone());
            let (most, most_per) = (most.clone(), most_per.clone());
            std::thread::spawn(move || {
                let tenant = thread % 5;
                let mut admitted = 0;
                for _ in 0..2_000 {
                    let Ok(admission) = share.admit(tenant as i64 + 1) else {
                        continue;
                    };
                    // Counted after the admission and uncounted before
                    // its release: never more than truly hold places.
                    let now = total.fetch_add(1, Ordering::SeqCst) + 1;
                    let mine = per[tenant].fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    most_per.fetch_max(mine, Ordering::SeqCst);
                    std::thread::yield_now();
                    per[tenant].fetch_sub(1, Ordering::SeqCst);
                    total.fetch_sub(1, Ordering::SeqCst);
                    drop(admission);
                    admitted += 1;
                }
                admitted
            })
        })
        .collect();
    let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(admitted > 0);
    assert!(most.load(Ordering::SeqCst) <= all_tenants(8));
    assert!(most_per.load(Ordering::SeqCst) <= per_tenant(8));
    // Every place came back.
    let all: Vec<_> = (1..=6).map(|t| share.admit(t).unwrap()).collect();
    assert_eq!(all.len(), 6);
}

/// Sixteen tenants reading eight slow bodies each fill the node's 128
/// body places. Once a seventeenth has been refused, a place that frees
/// goes to a tenant reading none, not back to one reading seven.
#[test]
fn a_refused_tenant_reads_the_next_body_before_busy_ones_read_another() {
    let share = DatabaseShare::with_window(8, Duration::from_secs(60));
    let mut held: Vec<_> = (1..=16)
        .flat_map(|t| std::iter::repeat_n(t, 8))
        .map(|t| share.admit_body(t).expect("a body place"))
        .collect();
    assert!(share.admit_body(17).is_none());
    held.pop(); // One of tenant 16's bodies arrives.
    assert!(share.admit_body(16).is_none(), "it still reads seven");
    let first = share
        .admit_body(17)
        .expect("the refused tenant's first body");
    assert!(share.admit_body(18).is_none(), "no place left");
    drop(first);
    assert!(
        share.admit_body(18).is_some(),
        "a first body while one is free"
    );
}

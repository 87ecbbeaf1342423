//! Which cache misses may start a load: the node's `max_inflight` shared
//! between tenants so that no group of them can take every slot.
//!
//! A load holds its slot until its source answers or the deadline passes,
//! so a tenant whose source answers slowly but successfully (its breaker
//! never opens) keeps its slots full for as long as it keeps asking. A
//! fixed share of a quarter let four such tenants shed everyone else.
//! Shares therefore shrink as more tenants load at once, and a tenant that
//! holds almost nothing can still start a load when the slots are all
//! taken, from a reserve beyond them.

/// The largest part of `max_inflight` one tenant may hold, however quiet
/// the node is.
const TENANT_CAP_DIVISOR: usize = 4;
/// Loads a tenant may hold from the reserve.
const FLOOR: usize = 4;
/// The reserve beyond `max_inflight`, as a part of it.
const RESERVE_DIVISOR: usize = 4;

/// How many loads may run: the node's bound and the tenants' shares of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Admission {
    max: usize,
}

/// How a load got its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admitted {
    Slot,
    /// Every slot was taken; the load runs in the reserve beyond them.
    Reserve,
}

/// What the admission saw when it said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The tenant holds its share already.
    TenantShare,
    /// Every slot and the reserve are taken.
    Full,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::TenantShare => "tenant_share",
            Refusal::Full => "full",
        }
    }
}

impl Admission {
    pub(crate) fn new(max_inflight: usize) -> Admission {
        Admission {
            max: max_inflight.max(1),
        }
    }

    /// Most loads that can ever run at once: the bound plus the reserve.
    pub(crate) fn limit(self) -> usize {
        self.max + self.reserve()
    }

    fn reserve(self) -> usize {
        (self.max / RESERVE_DIVISOR).max(1)
    }

    fn tenant_cap(self) -> usize {
        (self.max / TENANT_CAP_DIVISOR).max(1)
    }

    fn floor(self) -> usize {
        FLOOR.min(self.tenant_cap())
    }

    /// Whether a tenant holding `own` loads may start one more, while
    /// `total` run on the node for `tenants` tenants (this one among them
    /// only if `own > 0`).
    ///
    /// - Nobody holds more than a quarter of `max`.
    /// - While at least half the slots are free, that cap is the only
    ///   limit: one busy tenant on a quiet node is not held back.
    /// - Past half, a tenant starts a load only while it holds less than
    ///   an equal share, `max` over the tenants loading (itself counted).
    ///   A tenant over its share keeps what it holds; as its loads end it
    ///   is not given them back, so the slots drift to the others within a
    ///   deadline.
    /// - With every slot taken, a tenant holding fewer than four may still
    ///   start one, within a reserve of a quarter of `max` beyond it.
    ///   Taking the reserve too would need dozens of tenants each at that
    ///   floor.
    pub(crate) fn admit(
        self,
        own: usize,
        total: usize,
        tenants: usize,
    ) -> Result<Admitted, Refusal> {
        if own >= self.tenant_cap() {
            return Err(Refusal::TenantShare);
        }
        if total >= self.max {
            return if own < self.floor() && total < self.limit() {
                Ok(Admitted::Reserve)
            } else {
                Err(Refusal::Full)
            };
        }
        if total < self.max / 2 {
            return Ok(Admitted::Slot);
        }
        let loading = tenants + usize::from(own == 0);
        let share = (self.max / loading.max(1)).max(1);
        if own < share {
            Ok(Admitted::Slot)
        } else {
            Err(Refusal::TenantShare)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs tenants that each keep asking, in turns, until nobody can start
    /// another load, and returns what each holds.
    fn fill(admission: Admission, mut held: Vec<usize>, asking: &[bool]) -> Vec<usize> {
        loop {
            let mut started = false;
            for tenant in 0..held.len() {
                if !asking[tenant] {
                    continue;
                }
                let total = held.iter().sum();
                let tenants = held.iter().filter(|&&n| n > 0).count();
                if admission.admit(held[tenant], total, tenants).is_ok() {
                    held[tenant] += 1;
                    started = true;
                }
            }
            if !started {
                return held;
            }
        }
    }

    #[test]
    fn one_tenant_on_a_quiet_node_takes_a_quarter() {
        let admission = Admission::new(1024);
        assert_eq!(fill(admission, vec![0], &[true]), vec![256]);
        assert_eq!(
            admission.admit(256, 256, 1),
            Err(Refusal::TenantShare),
            "the quarter is a cap"
        );
    }

    #[test]
    fn four_tenants_holding_everything_leave_room_for_a_fifth() {
        let admission = Admission::new(1024);
        let hostile = fill(admission, vec![0; 4], &[true; 4]);
        assert_eq!(hostile.iter().sum::<usize>(), 1024);
        // The old rule stopped here: every slot taken, everyone else shed.
        assert_eq!(admission.admit(0, 1024, 4), Ok(Admitted::Reserve));
        let mut held = hostile.clone();
        held.push(0);
        let with_victim = fill(admission, held, &[true, true, true, true, true]);
        assert_eq!(with_victim[4], FLOOR, "the reserve's floor");
        assert!(
            with_victim[..4] == hostile[..],
            "nobody over its share grew"
        );
    }

    #[test]
    fn shares_shrink_as_loads_end() {
        let admission = Admission::new(1024);
        // Four tenants at the cap and a fifth at the floor; each of the
        // four loses 100 loads to their deadline and asks again at once.
        let held = vec![156, 156, 156, 156, FLOOR];
        let after = fill(admission, held, &[true; 5]);
        for (tenant, &n) in after.iter().enumerate() {
            assert!(n <= 1024 / 5 + 1, "tenant {tenant} holds {n}: {after:?}");
        }
        assert!(
            after[4] >= 1024 / 5 - 1,
            "the fifth got its share: {after:?}"
        );
    }

    #[test]
    fn many_small_tenants_are_all_served() {
        let admission = Admission::new(1024);
        let held = fill(admission, vec![0; 300], &[true; 300]);
        assert!(held.iter().all(|&n| n >= 3), "{held:?}");
        assert!(held.iter().sum::<usize>() <= admission.limit());
    }

    #[test]
    fn the_reserve_is_bounded() {
        let admission = Admission::new(1024);
        let held = fill(admission, vec![0; 2000], &[true; 2000]);
        assert_eq!(held.iter().sum::<usize>(), admission.limit());
        assert_eq!(
            admission.admit(0, admission.limit(), 2000),
            Err(Refusal::Full)
        );
    }

    #[test]
    fn tiny_bounds_still_admit_one() {
        let one = Admission::new(1);
        assert_eq!(one.admit(0, 0, 0), Ok(Admitted::Slot));
        assert_eq!(one.admit(1, 1, 1), Err(Refusal::TenantShare));
        // Another tenant may use the reserve of one.
        assert_eq!(one.admit(0, 1, 1), Ok(Admitted::Reserve));
        assert_eq!(one.admit(0, 2, 2), Err(Refusal::Full));
        let zero = Admission::new(0);
        assert_eq!(zero.admit(0, 0, 0), Ok(Admitted::Slot));
    }
}

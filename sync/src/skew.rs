//! How far apart nodes' clocks may be, and what a stamp beyond that says.
//! History and unclaimed-device rows carry the wall time of the node that
//! wrote them; a node whose clock was stepped ahead and then put right
//! leaves rows stamped in the future, which every "newest" choice ranked
//! first until the real clock caught up with them (a year, after a year's
//! step).

use std::time::Duration;

use crate::model::Millis;

/// How far nodes' clocks may differ and still be taken as in step; the
/// provisioning server's Digest nonce check makes the same allowance.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The latest stamp a row may bear at `now` (this node's clock) and be
/// trusted as a time: ahead by no more than nodes' clocks may differ. A
/// row stamped further ahead is no evidence of when it happened: the clock
/// that stamped it was wrong, and taken at its word it outranked every
/// real row since.
pub fn trusted_until(now: Millis) -> Millis {
    now.saturating_add(MAX_CLOCK_SKEW.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusts_the_skew_ahead_and_saturates() {
        assert_eq!(trusted_until(1_000), 31_000);
        assert_eq!(trusted_until(Millis::MAX - 5), Millis::MAX);
    }
}

//! A hashed timer wheel: one per single-port listener, for all of its
//! transfers, instead of a timer each. Entries are lazy: a transfer keeps
//! its own deadline, and an entry that fires early is put back at the
//! transfer's current deadline. So an ACK that moves the deadline later
//! costs no timer work at all; one that moves it earlier (a window
//! waiting for its file's read) adds an entry, and the listener skips the
//! one it replaces when that fires (`single.rs`, `armed`). An entry costs
//! a push and a pop.

use std::time::{Duration, Instant};

/// 10 ms ticks: retransmission timeouts are whole seconds, so a tick late
/// is nothing; 1,024 slots reach 10 s ahead, and an entry further out is
/// parked at the horizon and put back when it fires there.
const TICK: Duration = Duration::from_millis(10);
const SLOTS: u64 = 1024;

pub(super) struct Wheel<K> {
    slots: Vec<Vec<K>>,
    origin: Instant,
    /// Ticks fully processed since `origin`.
    current: u64,
    len: usize,
    /// The earliest tick holding an entry, when known.
    next: Option<u64>,
}

impl<K> Wheel<K> {
    pub fn new(now: Instant) -> Wheel<K> {
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            origin: now,
            current: 0,
            len: 0,
            next: None,
        }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.origin).as_nanos() / TICK.as_nanos()) as u64
    }

    /// Fires `key` at the first tick at or after `deadline` (at the
    /// horizon if that is further).
    pub fn insert(&mut self, deadline: Instant, key: K) {
        // Round up, so an entry never fires before its deadline.
        let tick = self.tick_of(deadline + TICK - Duration::from_nanos(1));
        let tick = tick.clamp(self.current + 1, self.current + SLOTS - 1);
        self.slots[(tick % SLOTS) as usize].push(key);
        self.len += 1;
        self.next = Some(self.next.map_or(tick, |n| n.min(tick)));
    }

    /// Moves every entry due by `now` to `due`.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<K>) {
        let target = self.tick_of(now);
        if self.len == 0 || self.next.is_some_and(|next| next > target) {
            self.current = self.current.max(target);
            return;
        }
        while self.current < target && self.len > 0 {
            self.current += 1;
            let slot = &mut self.slots[(self.current % SLOTS) as usize];
            self.len -= slot.len();
            due.append(slot);
        }
        self.current = self.current.max(target);
        // One scan per expiry that did something, not per question.
        self.next = (self.len > 0).then(|| {
            (self.current + 1..self.current + SLOTS)
                .find(|t| !self.slots[(t % SLOTS) as usize].is_empty())
                .unwrap_or(self.current + 1)
        });
    }

    /// When `expire` next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        // In u64 nanoseconds: `TICK * tick as u32` wrapped after 2^32 ticks
        // (~497 days up), a wake in the past and a listener spinning on it.
        // Saturating only matters past ~584 years.
        self.next.map(|tick| {
            let nanos = (TICK.as_nanos() as u64).saturating_mul(tick);
            self.origin + Duration::from_nanos(nanos)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_at_their_tick_never_before() {
        let t0 = Instant::now();
        let mut wheel = Wheel::new(t0);
        wheel.insert(t0 + Duration::from_millis(25), 'a');
        wheel.insert(t0 + Duration::from_secs(60), 'z'); // past the horizon
        wheel.insert(t0 + Duration::from_millis(5), 'b');
        let mut due = Vec::new();
        wheel.expire(t0 + Duration::from_millis(9), &mut due);
        assert!(due.is_empty());
        assert_eq!(wheel.next_wake(), Some(t0 + Duration::from_millis(10)));
        wheel.expire(t0 + Duration::from_millis(10), &mut due);
        assert_eq!(due, ['b']);
        wheel.expire(t0 + Duration::from_millis(29), &mut due);
        assert_eq!(due, ['b']);
        wheel.expire(t0 + Duration::from_millis(30), &mut due);
        assert_eq!(due, ['b', 'a']);
        // The far one waits at the horizon, to be put back by its owner.
        due.clear();
        wheel.expire(t0 + Duration::from_secs(9), &mut due);
        assert!(due.is_empty());
        wheel.expire(t0 + Duration::from_secs(11), &mut due);
        assert_eq!(due, ['z']);
        assert_eq!(wheel.next_wake(), None);
    }

    #[test]
    fn wakes_stay_ahead_past_two_to_the_32_ticks() {
        let t0 = Instant::now();
        let mut wheel = Wheel::new(t0);
        // 2^32 + 5 ticks of 10 ms: about 497 days up.
        let now = t0 + TICK * 5 + Duration::from_millis(10 << 32);
        let mut due = Vec::new();
        wheel.expire(now, &mut due);
        wheel.insert(now + Duration::from_millis(25), 'a');
        let wake = wheel.next_wake().expect("an entry is waiting");
        assert!(
            wake > now,
            "wake {:?} behind now",
            now.saturating_duration_since(wake)
        );
        assert_eq!(wake, now + Duration::from_millis(30));
        wheel.expire(wake, &mut due);
        assert_eq!(due, ['a']);
    }
}

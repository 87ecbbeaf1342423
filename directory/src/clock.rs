//! Time as the cache and the breakers see it. Production reads the monotonic
//! clock; tests move a manual clock, so TTLs of minutes are tested in
//! microseconds and without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System(Instant),
    Manual(AtomicU64),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System(Instant::now())))
    }

    /// A clock that moves only when told to.
    pub fn manual() -> Clock {
        Clock(Arc::new(Source::Manual(AtomicU64::new(0))))
    }

    /// Time since the clock's origin.
    pub fn now(&self) -> Duration {
        match &*self.0 {
            Source::System(origin) => origin.elapsed(),
            Source::Manual(nanos) => Duration::from_nanos(nanos.load(Ordering::Acquire)),
        }
    }

    /// Moves a manual clock forward. Panics on the system clock: only tests call it.
    pub fn advance(&self, by: Duration) {
        match &*self.0 {
            Source::System(_) => panic!("the system clock cannot be advanced"),
            Source::Manual(nanos) => {
                nanos.fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
            }
        }
    }
}

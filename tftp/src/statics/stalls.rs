//! Tests' stand-in for a disk that stopped answering (a hard NFS mount
//! whose server is gone, a FUSE file system asleep in its read): an open
//! or read of a stalled path waits in `wait_while_stalled` until the test
//! lets it go, and the test can see how many threads wait there.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What a stall holds up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Op {
    Open,
    Read,
}

struct Stalled {
    path: PathBuf,
    op: Op,
    /// Threads waiting in it now.
    waiting: usize,
}

static STALLED: (Mutex<Vec<Stalled>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

fn lock() -> MutexGuard<'static, Vec<Stalled>> {
    STALLED.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Called before `op` on `path`: waits while that is stalled.
pub(crate) fn wait_while_stalled(path: &Path, op: Op) {
    let mut stalled = lock();
    let find = |all: &[Stalled]| all.iter().position(|s| s.path == path && s.op == op);
    let Some(at) = find(&stalled) else {
        return;
    };
    stalled[at].waiting += 1;
    // Its `Stall` gone, it is gone, count and all.
    while find(&stalled).is_some() {
        stalled = STALLED
            .1
            .wait(stalled)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// `op` on a path waits until this is dropped.
pub(crate) struct Stall {
    path: PathBuf,
    op: Op,
}

impl Stall {
    pub(crate) fn new(path: &Path, op: Op) -> Stall {
        lock().push(Stalled {
            path: path.to_path_buf(),
            op,
            waiting: 0,
        });
        Stall {
            path: path.to_path_buf(),
            op,
        }
    }

    /// Threads held in it now.
    pub(crate) fn waiting(&self) -> usize {
        lock()
            .iter()
            .find(|s| s.path == self.path && s.op == self.op)
            .map_or(0, |s| s.waiting)
    }

    /// Waits (5 s at most) until `count` threads are held in it.
    pub(crate) fn until_waiting(&self, count: usize) -> usize {
        let give_up = Instant::now() + Duration::from_secs(5);
        while self.waiting() < count && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.waiting()
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        lock().retain(|s| !(s.path == self.path && s.op == self.op));
        STALLED.1.notify_all();
    }
}

//! The threads static files are opened and read on, over TFTP and HTTP
//! alike, and the budget of reads in flight. A read can block for good (a
//! FIFO put in a file's place, a hard NFS mount whose server is gone, a
//! FUSE file system that stopped answering, a disk retrying EIO). On a
//! TFTP listener's thread it stopped every tenant's transfers; on tokio's
//! blocking pool, where HTTP reads once ran, each download of a hung file
//! kept a thread of the pool renders and other blocking work share, until
//! none was left for any tenant. Reads run here instead, and a slow disk
//! holds at most the budget's reads: past it a new TFTP transfer of a
//! static file is refused "busy", a new HTTP download waits a little for a
//! turn before its 503, and a running one waits for a turn within its own
//! deadline.
//!
//! Not tokio's blocking pool: dropping a runtime waits for its blocking
//! tasks without a limit, so one read stuck for good would keep the TFTP
//! thread from ever ending. These threads are detached and never joined.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

/// Reads in flight at once over all downloads. Each also holds a thread
/// while it runs, so this bounds the threads too. A read from the page
/// cache takes microseconds, so a healthy disk comes nowhere near it.
const MAX_READS: usize = 64;

/// Reads in flight at once for one source (an IPv4 address, an IPv6
/// /64; exempt networks have no cap): a quarter of the budget, so a
/// client stuck on a slow file cannot hold all of it.
const MAX_READS_PER_SOURCE: usize = MAX_READS / 4;

/// How long a thread with nothing to read stays for the next read.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A read reads into a buffer of its own and hands it back: a small stack.
const STACK_SIZE: usize = 256 << 10;

/// Reads in flight, in all and by source.
pub(crate) struct ReadBudget {
    total: usize,
    per_source: usize,
    taken: Mutex<Taken>,
}

#[derive(Default)]
struct Taken {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Which part of the budget had no read to spare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    /// Every read of the server's budget runs.
    All,
    /// The source's share runs.
    Source,
}

impl ReadBudget {
    pub(crate) fn new(total: usize, per_source: usize) -> ReadBudget {
        ReadBudget {
            total,
            per_source,
            taken: Mutex::new(Taken::default()),
        }
    }

    /// The server's budget.
    pub(crate) fn shared() -> &'static ReadBudget {
        static SHARED: OnceLock<ReadBudget> = OnceLock::new();
        SHARED.get_or_init(|| ReadBudget::new(MAX_READS, MAX_READS_PER_SOURCE))
    }

    /// A turn for one read, unless the budget (or `source`'s share of it)
    /// is taken; `source` is `None` for an exempt network.
    pub(crate) fn try_take(&'static self, source: Option<IpAddr>) -> Option<ReadPermit> {
        self.take(source).ok()
    }

    /// Like `try_take`, saying which share was taken.
    pub(crate) fn take(&'static self, source: Option<IpAddr>) -> Result<ReadPermit, Busy> {
        let mut taken = self.lock();
        if taken.total >= self.total {
            return Err(Busy::All);
        }
        if let Some(source) = source {
            let held = taken.by_source.entry(source).or_default();
            if *held >= self.per_source {
                return Err(Busy::Source);
            }
            *held += 1;
        }
        taken.total += 1;
        Ok(ReadPermit {
            budget: self,
            source,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Taken> {
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One read's turn, given back when the read ends: a read stuck for good
/// keeps it for good, which is what bounds a dead disk's pile of reads.
pub(crate) struct ReadPermit {
    budget: &'static ReadBudget,
    source: Option<IpAddr>,
}

impl Drop for ReadPermit {
    fn drop(&mut self) {
        let mut taken = self.budget.lock();
        taken.total -= 1;
        if let Some(source) = self.source {
            if let Some(held) = taken.by_source.get_mut(&source) {
                *held -= 1;
                if *held == 0 {
                    taken.by_source.remove(&source);
                }
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
}

struct PoolState {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState {
            jobs: VecDeque::new(),
            idle: 0,
            threads: 0,
        }),
        work: Condvar::new(),
    })
}

/// Runs `job` on a reader thread, starting one whenever none is idle, up
/// to the budget's number: a read's caller holds a `ReadPermit` for it,
/// so reads never outnumber the threads; only a close (`close_on_reader`)
/// may wait for one.
pub(crate) fn run(job: impl FnOnce() + Send + 'static) {
    let pool = pool();
    let mut state = pool.state.lock().unwrap_or_else(PoisonError::into_inner);
    state.jobs.push_back(Box::new(job));
    if state.jobs.len() > state.idle && state.threads < MAX_READS {
        let started = std::thread::Builder::new()
            .name("static-read".into())
            .stack_size(STACK_SIZE)
            .spawn(|| pool.serve());
        match started {
            Ok(_) => state.threads += 1,
            // The job waits for a thread that is running: if none is, its
            // read times out, as on a disk that does not answer.
            Err(e) => tracing::warn!(error = %e, "could not start a static-file read thread"),
        }
    }
    pool.work.notify_one();
}

/// Runs `read` on a reader thread under `permit`; its answer comes on
/// the channel. A caller gone before the read starts costs no read, and
/// one gone during it gets the permit back as soon as the read returns.
pub(crate) fn submit<T: Send + 'static>(
    permit: ReadPermit,
    read: impl FnOnce() -> T + Send + 'static,
) -> oneshot::Receiver<T> {
    let (answer, answered) = oneshot::channel();
    run(move || {
        if answer.is_closed() {
            return;
        }
        let read = read();
        // Given back before the answer, so the caller's next read finds
        // it free.
        drop(permit);
        let _ = answer.send(read);
    });
    answered
}

/// Closes `file` on a reader thread: a close flushes, and on a FUSE or NFS
/// mount that stopped answering it can wait like a read.
pub(crate) fn close_on_reader(file: std::fs::File) {
    run(move || drop(file));
}

impl Pool {
    fn serve(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                // A job's panic is its download's (its answer never comes),
                // not the thread's: the thread count stays right.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.idle += 1;
            let (woken, waited) = self
                .work
                .wait_timeout(state, KEEP_ALIVE)
                .unwrap_or_else(PoisonError::into_inner);
            state = woken;
            state.idle -= 1;
            if waited.timed_out() && state.jobs.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

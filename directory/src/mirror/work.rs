//! The node's places for mirror work: normalizing and merging what a sync
//! read, building a mirror's index, reading and writing its file. That
//! work is CPU (reading each number costs about 20 µs, 2.6 s of a
//! 96,000-entry sync), it runs on tokio's blocking threads, and those are
//! shared with name resolution and snapshot writes.
//!
//! Each source's syncs are spaced (`gates.rs`), but nothing else bounded
//! how many sources work at once: tenants' syncs falling due together, or
//! every mirror file read when a node starts, each took a blocking thread
//! (tokio starts up to 512) and all the cores between them. Here every job
//! first takes one of a fixed number of places, in the order they asked
//! (tokio's semaphore is fair), so mirror work takes at most that many
//! threads whatever the number of tenants, and a tenant's job waits behind
//! the jobs already queued, not behind its own later ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Jobs waiting for a place (a gauge, described by the binary).
const WAITING_METRIC: &str = "dialtone_directory_mirror_jobs_waiting";

pub(crate) struct MirrorWork {
    places: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl MirrorWork {
    /// `places` jobs run at once (at least one).
    pub(crate) fn new(places: usize) -> MirrorWork {
        MirrorWork {
            places: Arc::new(Semaphore::new(places.max(1))),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Runs `job` on a blocking thread once a place is free. The place is
    /// held until `job` returns, even when the caller stops waiting (a sync
    /// cancelled because its source changed): a blocking job cannot be
    /// stopped, and the thread is busy until it ends.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let waiting = Waiting::new(&self.waiting);
        // Never closed: the semaphore lives as long as `self`.
        let place = self.places.clone().acquire_owned().await.ok();
        drop(waiting);
        tokio::task::spawn_blocking(move || {
            let _place = place;
            job()
        })
        .await
    }

    /// Jobs waiting for a place now.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Counts a job (in the gauge too) while it waits, however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Waiting<'_> {
    fn new(count: &AtomicUsize) -> Waiting<'_> {
        count.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(WAITING_METRIC).increment(1.0);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(WAITING_METRIC).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Jobs at once, and the most seen at once.
    #[derive(Default)]
    struct Count {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_take_no_more_threads_than_places() {
        let work = Arc::new(MirrorWork::new(2));
        let count = Arc::new(Count::default());
        let jobs: Vec<_> = (0..8)
            .map(|_| {
                let (work, count) = (work.clone(), count.clone());
                tokio::spawn(async move {
                    work.run(move || {
                        let now = count.now.fetch_add(1, Ordering::SeqCst) + 1;
                        count.most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        count.now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        assert_eq!(count.most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_keeps_its_place_when_its_caller_stops_waiting() {
        let work = Arc::new(MirrorWork::new(1));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn({
            let work = work.clone();
            async move {
                work.run(move || {
                    let _ = started.send(());
                    let _ = released.recv_timeout(Duration::from_secs(30));
                })
                .await
            }
        });
        has_started.await.unwrap();
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());

        // The first job still runs: the second waits for its place.
        let second = tokio::spawn({
            let work = work.clone();
            async move { work.run(|| ()).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished(), "a second job ran beside the first");
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), second)
            .await
            .expect("the second job never ran")
            .unwrap()
            .unwrap();
    }

    /// Every blocking job of the sync tasks goes through a place, and their
    /// CPU work (reading numbers, indexing, the files) runs in those jobs,
    /// not on the task: a tenant switching its region back and forth had
    /// every mirrored entry renormalized on an async worker.
    #[test]
    fn the_sync_tasks_do_their_cpu_work_in_places() {
        let files = [
            ("tasks.rs", include_str!("tasks.rs")),
            ("source_task.rs", include_str!("source_task.rs")),
            ("one_sync.rs", include_str!("one_sync.rs")),
            ("publish.rs", include_str!("publish.rs")),
            ("gates.rs", include_str!("gates.rs")),
        ];
        for (name, text) in files {
            assert!(!text.contains(concat!("spawn", "_blocking")), "{name}");
        }
        let heavy = [
            ".renormalize(",
            "from_full(",
            "merge(&mut",
            ".index(",
            "store::read(",
            "store::write(",
        ];
        for call in heavy {
            let mut found = false;
            for (name, text) in files {
                let jobs = closures_after(text, ".run(move ||");
                for (at, _) in text.match_indices(call) {
                    found = true;
                    assert!(
                        jobs.iter().any(|job| job.contains(&at)),
                        "{call} at byte {at} of {name} runs outside a place"
                    );
                }
            }
            assert!(found, "{call} is no longer in the sync tasks");
        }
    }

    /// The byte ranges of the closures that follow each `opening`, up to
    /// the bracket that closes the call.
    fn closures_after(text: &str, opening: &str) -> Vec<std::ops::Range<usize>> {
        text.match_indices(opening)
            .map(|(start, _)| {
                let mut depth = 1;
                let body = start + opening.len();
                let end = text[body..]
                    .char_indices()
                    .find_map(|(i, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        (depth == 0).then_some(body + i)
                    })
                    .expect("a call that closes");
                body..end
            })
            .collect()
    }
}

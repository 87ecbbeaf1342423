//! Background tasks run under a supervisor: a task that panics or returns
//! early is logged, counted and restarted with exponential backoff, and the
//! process keeps serving. Every task selects on the shared cancellation
//! token, but for the writers of what the listeners record, which stop on
//! a token of their own once the listeners have drained (`spawn_until`).
//!
//! Intensity limit (as in Erlang/OTP): a task restarted more than
//! `max_restarts` times within `window` marks the node degraded. Serving
//! goes on; `/readyz` and `/metrics` say so until the window passes quietly.
//! A task that keeps failing stays degraded even once its backoff has grown
//! past the window: more than `max_restarts` failures in a row, none after
//! a healthy run, count until a run lasts `HEALTHY_RUN`.
//!
//! A task that stops because the database cannot be reached ([`Exit::Unreachable`])
//! is restarted the same way but not counted toward that limit: an outage
//! is the database's state, which the mirror reports as staleness, while
//! operators read `degraded` as "this node is broken".

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A task that ran this long without failing starts over at the shortest
/// backoff when it next fails.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub struct Intensity {
    pub max_restarts: usize,
    pub window: Duration,
}

/// How one run of a task ended, as far as the intensity limit cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Returned or failed on its own: counted.
    Failed,
    /// Could not reach the database: not counted.
    Unreachable,
    /// The database answers as a standby, which refuses what the task
    /// needs: not counted; the caller holds a condition that names it.
    Standby,
}

/// What a task's future returns: `()` (every return is a failure) or a
/// reason the supervisor can weigh.
pub trait TaskEnd: Send + 'static {
    fn exit(self) -> Exit;
}

impl TaskEnd for () {
    fn exit(self) -> Exit {
        Exit::Failed
    }
}

impl TaskEnd for Exit {
    fn exit(self) -> Exit {
        self
    }
}

impl TaskEnd for dialtone_sync::watcher::ListenEnd {
    fn exit(self) -> Exit {
        match self {
            dialtone_sync::watcher::ListenEnd::Unreachable => Exit::Unreachable,
            dialtone_sync::watcher::ListenEnd::Standby => Exit::Standby,
            _ => Exit::Failed,
        }
    }
}

#[derive(Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    cancel: CancellationToken,
    intensity: Intensity,
    restarts: Arc<Mutex<HashMap<&'static str, Restarts>>>,
    /// Conditions the node is degraded by while they last, named beside
    /// the tasks ([`Supervisor::hold`]).
    conditions: Arc<Mutex<std::collections::BTreeSet<&'static str>>>,
}

/// One task's restart history.
#[derive(Default)]
struct Restarts {
    /// Recent restart times, within the window.
    times: VecDeque<Instant>,
    /// Failures in a row, none after a run of `HEALTHY_RUN` or longer.
    streak: usize,
    /// When the current run started; `None` while the task waits out its
    /// backoff after a failure.
    running_since: Option<Instant>,
}

impl Supervisor {
    pub fn new(tracker: &TaskTracker, cancel: &CancellationToken, intensity: Intensity) -> Self {
        Supervisor {
            tracker: tracker.clone(),
            cancel: cancel.clone(),
            intensity,
            restarts: Arc::default(),
            conditions: Arc::default(),
        }
    }

    /// Marks the node degraded by `condition` (`on`) or no longer. For
    /// what no task's restarts show: a database that answers as a standby
    /// keeps every task running while admin writes are refused.
    /// Returns whether that changed anything.
    pub fn hold(&self, condition: &'static str, on: bool) -> bool {
        let mut conditions = self.conditions.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            conditions.insert(condition)
        } else {
            conditions.remove(condition)
        }
    }

    /// Tasks past their intensity limit right now, by name, and the
    /// conditions held ([`Supervisor::hold`]).
    pub fn degraded(&self) -> Vec<&'static str> {
        let now = Instant::now();
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        let max = self.intensity.max_restarts;
        let mut names: Vec<&'static str> = restarts
            .iter_mut()
            .filter_map(|(name, task)| {
                let times = &mut task.times;
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.intensity.window)
                {
                    times.pop_front();
                }
                let recovering = task
                    .running_since
                    .is_some_and(|t| now.duration_since(t) >= HEALTHY_RUN);
                let failing = task.streak > max && !recovering;
                (times.len() > max || failing).then_some(*name)
            })
            .collect();
        drop(restarts);
        let conditions = self.conditions.lock().unwrap_or_else(|e| e.into_inner());
        names.extend(conditions.iter().copied());
        names.sort_unstable();
        names.dedup();
        names
    }

    fn record_start(&self, name: &'static str) {
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        restarts.entry(name).or_default().running_since = Some(Instant::now());
    }

    /// A counted failure of a run that lasted `ran_for`.
    fn record_restart(&self, name: &'static str, ran_for: Duration) {
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        let task = restarts.entry(name).or_default();
        task.running_since = None;
        task.streak = if ran_for >= HEALTHY_RUN {
            1
        } else {
            task.streak.saturating_add(1)
        };
        let times = &mut task.times;
        times.push_back(Instant::now());
        // Bounded: only the window's worth matters.
        while times.len() > self.intensity.max_restarts + 1 {
            times.pop_front();
        }
        if times.len() > self.intensity.max_restarts {
            tracing::error!(
                task = name,
                restarts = times.len(),
                window_s = self.intensity.window.as_secs(),
                "background task past its restart intensity; node degraded"
            );
        }
    }

    /// Runs `make`'s task until the node's shutdown, restarting it.
    pub fn spawn<F, Fut>(&self, name: &'static str, make: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskEnd,
    {
        self.spawn_until(name, self.cancel.clone(), make)
    }

    /// Like [`Supervisor::spawn`], for a task that outlives the shutdown's
    /// start (the history and unclaimed-devices writers, stopped once the
    /// listeners have drained): it is restarted until `stop`, and a run
    /// that ends after `stop` is the shutdown, not a failure.
    pub fn spawn_until<F, Fut>(&self, name: &'static str, stop: CancellationToken, make: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskEnd,
    {
        let this = self.clone();
        // Zero until it first restarts, so the series exists from the start.
        metrics::counter!("dialtone_task_restarts_total", "task" => name).increment(0);
        metrics::counter!("dialtone_task_panics_total", "task" => name).increment(0);
        metrics::counter!("dialtone_task_unreachable_total", "task" => name).increment(0);
        self.tracker.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let started = Instant::now();
                this.record_start(name);
                let outcome = tokio::spawn(make()).await;
                if stop.is_cancelled() {
                    // No restart; but a panic on the way out (a final write,
                    // a drain) is still a panic, and still says so.
                    if let Err(e) = outcome {
                        if e.is_panic() {
                            let message = panic_message(&*e.into_panic());
                            metrics::counter!("dialtone_task_panics_total", "task" => name)
                                .increment(1);
                            tracing::error!(task = name, panic = %message, "background task panicked while stopping");
                        }
                    }
                    break;
                }
                let counted = match outcome.map(TaskEnd::exit) {
                    Ok(Exit::Standby) => {
                        // The condition the caller holds says it; neither a
                        // fault of the task's nor an outage.
                        tracing::debug!(task = name, "the database is a standby; restarting later");
                        false
                    }
                    Ok(Exit::Unreachable) => {
                        // The task logged the cause; the mirror reports the outage.
                        tracing::debug!(task = name, "database unreachable; restarting later");
                        metrics::counter!("dialtone_task_unreachable_total", "task" => name)
                            .increment(1);
                        false
                    }
                    Ok(Exit::Failed) => {
                        tracing::warn!(task = name, "background task stopped; restarting");
                        true
                    }
                    Err(e) if e.is_panic() => {
                        let message = panic_message(&*e.into_panic());
                        metrics::counter!("dialtone_task_panics_total", "task" => name).increment(1);
                        tracing::error!(task = name, panic = %message, "background task panicked; restarting");
                        true
                    }
                    Err(_) => {
                        tracing::warn!(task = name, "background task cancelled; restarting");
                        true
                    }
                };
                if counted {
                    metrics::counter!("dialtone_task_restarts_total", "task" => name).increment(1);
                    this.record_restart(name, started.elapsed());
                }
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = FIRST_BACKOFF;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }
}

/// A panic's text, as `panic!` gave it.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".into())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_stops_on_cancel() {
        let runs = Arc::new(AtomicU32::new(0));
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let supervisor = Supervisor::new(
            &tracker,
            &cancel,
            Intensity {
                max_restarts: 1,
                window: Duration::from_secs(60),
            },
        );
        let (counter, token) = (runs.clone(), cancel.clone());
        supervisor.spawn("flaky", move || {
            let (counter, token) = (counter.clone(), token.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("injected failure");
                }
                token.cancelled().await;
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "two panics, then a healthy run"
        );
        assert_eq!(
            supervisor.degraded(),
            ["flaky"],
            "two restarts in the window is past a limit of one"
        );
        cancel.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("supervisor stops on cancel");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "not restarted after cancel");
    }

    /// A writer runs on through the drain: after the node's cancel it is
    /// still restarted when it fails, and only its own stop ends it.
    #[tokio::test]
    async fn a_task_spawned_until_its_own_stop_outlives_the_cancel() {
        let runs = Arc::new(AtomicU32::new(0));
        let tracker = TaskTracker::new();
        let (cancel, stop) = (CancellationToken::new(), CancellationToken::new());
        let supervisor = Supervisor::new(
            &tracker,
            &cancel,
            Intensity {
                max_restarts: 5,
                window: Duration::from_secs(60),
            },
        );
        cancel.cancel();
        let (counter, token) = (runs.clone(), stop.clone());
        supervisor.spawn_until("writer", stop.clone(), move || {
            let (counter, token) = (counter.clone(), token.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("injected failure during the drain");
                }
                token.cancelled().await;
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted after the cancel");
        tracker.close();
        let waited = tokio::time::timeout(Duration::from_millis(200), tracker.wait());
        assert!(waited.await.is_err(), "still running until its own stop");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("ends on its own stop");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "not restarted after its stop"
        );
    }

    #[tokio::test]
    async fn stops_for_an_unreachable_database_are_restarted_but_not_counted() {
        let runs = Arc::new(AtomicU32::new(0));
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let supervisor = Supervisor::new(
            &tracker,
            &cancel,
            Intensity {
                max_restarts: 1,
                window: Duration::from_secs(60),
            },
        );
        let (counter, token) = (runs.clone(), cancel.clone());
        supervisor.spawn("listener", move || {
            let (counter, token) = (counter.clone(), token.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 3 {
                    return Exit::Unreachable;
                }
                token.cancelled().await;
                Exit::Failed
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 4 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 4, "restarted after each stop");
        assert!(
            supervisor.degraded().is_empty(),
            "three stops past a limit of one, none counted"
        );
        cancel.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("supervisor stops on cancel");
    }

    #[tokio::test]
    async fn restarts_outside_the_window_do_not_count() {
        let supervisor = Supervisor::new(
            &TaskTracker::new(),
            &CancellationToken::new(),
            Intensity {
                max_restarts: 2,
                window: Duration::from_millis(50),
            },
        );
        // Each after a healthy run: only the window counts them.
        for _ in 0..3 {
            supervisor.record_restart("watcher", HEALTHY_RUN);
        }
        assert_eq!(supervisor.degraded(), ["watcher"]);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(supervisor.degraded().is_empty());
    }

    #[test]
    fn a_condition_held_is_named_until_it_is_let_go() {
        let supervisor = Supervisor::new(
            &TaskTracker::new(),
            &CancellationToken::new(),
            Intensity {
                max_restarts: 0,
                window: Duration::from_secs(60),
            },
        );
        assert!(supervisor.hold("database-standby", true));
        assert!(!supervisor.hold("database-standby", true));
        supervisor.record_restart("watcher", Duration::ZERO);
        assert_eq!(supervisor.degraded(), ["database-standby", "watcher"]);
        assert!(supervisor.hold("database-standby", false));
        assert!(!supervisor.hold("database-standby", false));
        assert_eq!(supervisor.degraded(), ["watcher"]);
    }

    /// With the backoff doubling to 30 s, a task that fails at once every
    /// time soon restarts less often than the window counts: it must stay
    /// degraded all the same.
    #[tokio::test]
    async fn a_task_that_keeps_failing_stays_degraded_past_the_window() {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let supervisor = Supervisor::new(
            &tracker,
            &cancel,
            Intensity {
                max_restarts: 2,
                window: Duration::from_secs(1),
            },
        );
        supervisor.spawn("dead", || async {});
        // Restarts at about 0.1, 0.3, 0.7, 1.5 and 3.1 s: from about 2.5 s
        // on, no second of it holds more than one.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(supervisor.degraded(), ["dead"]);
        cancel.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("supervisor stops on cancel");
    }
}

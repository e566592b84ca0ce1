//! One supervisor for the instance's background tasks (the event sequencer, the event and
//! authorize-cache change streams, webhook delivery, the sweeper): each runs under a name,
//! is restarted with backoff when it ends or panics, and reports its state
//! ([`Supervisor::report`]: the operators' `GET /admin/v1/tasks` and `roster_task_*` in
//! `/metrics`). A task that needs the database connects under supervision too, so an instance
//! that could not reach the database at boot keeps trying instead of running without it.
//!
//! Restarts back off from 100 ms, doubling to 30 s; a task that ran for a minute before it
//! failed starts again from 100 ms (Garage's background workers and Erlang's supervisors work
//! the same way).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Getting what it needs (a database connection).
    Starting,
    /// Running.
    Running,
    /// Ended or failed; starting again after a pause.
    Restarting,
    /// Stopped with the instance.
    Stopped,
}

impl TaskState {
    /// The name operators see.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Restarting => "restarting",
            TaskState::Stopped => "stopped",
        }
    }
}

/// What the supervisor knows of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    /// Where it stands.
    pub state: TaskState,
    /// Times it was started again after it ended or failed.
    pub restarts: u64,
    /// Why it last ended or failed, if it did.
    pub last_error: Option<String>,
    /// When it entered its state (UTC).
    pub since: DateTime<Utc>,
}

/// The instance's supervisor; shared (`Arc`) by the threads that run background tasks.
#[derive(Debug, Default)]
pub struct Supervisor {
    tasks: Mutex<BTreeMap<String, TaskReport>>,
}

/// Shortest pause before a restart.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause before a restart.
const LONGEST_PAUSE: Duration = Duration::from_secs(30);
/// A task that ran this long before it failed starts again from the shortest pause.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

impl Supervisor {
    /// Every task's report, by name.
    pub fn report(&self) -> BTreeMap<String, TaskReport> {
        self.tasks.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn set(&self, name: &str, state: TaskState, error: Option<String>) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        let t = tasks.entry(name.to_owned()).or_insert(TaskReport {
            state,
            restarts: 0,
            last_error: None,
            since: Utc::now(),
        });
        if state == TaskState::Restarting {
            t.restarts += 1;
        }
        if error.is_some() {
            t.last_error = error;
        }
        t.state = state;
        t.since = Utc::now();
    }

    /// Waits `pause`, or returns `false` at once if `stop` is set (or its sender gone).
    async fn pause(pause: Duration, stop: &mut watch::Receiver<bool>) -> bool {
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => !*stop.borrow(),
            _ = stop.changed() => false,
        }
    }

    /// Gets what task `name` needs with `get` (e.g. a database connection), trying again
    /// with backoff until it succeeds (then `name` reports `running`); `None` if `stop` is set
    /// first.
    pub async fn acquire<T, E, F, Fut>(
        &self,
        name: &str,
        mut get: F,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<T>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut pauses = backoff();
        loop {
            self.set(name, TaskState::Starting, None);
            match get().await {
                Ok(v) => {
                    self.set(name, TaskState::Running, None);
                    return Some(v);
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    tracing::warn!(
                        task = name,
                        error,
                        "background task cannot start yet; retrying"
                    );
                    self.set(name, TaskState::Starting, Some(error));
                }
            }
            let pause = pauses.next().unwrap_or(LONGEST_PAUSE);
            if !Self::pause(pause, stop).await {
                self.set(name, TaskState::Stopped, None);
                return None;
            }
        }
    }

    /// Runs task `name` on the current thread's `LocalSet` until `stop` is set: `make()` makes
    /// the task's future; when it ends or panics it is made again after a pause (see the
    /// module docs). Returns once stopped.
    pub async fn run_local<F, Fut>(&self, name: &str, mut make: F, mut stop: watch::Receiver<bool>)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let mut pauses = backoff();
        loop {
            self.set(name, TaskState::Running, None);
            let started = tokio::time::Instant::now();
            let task = tokio::task::spawn_local(make());
            let abort = task.abort_handle();
            let error = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => {
                    abort.abort();
                    self.set(name, TaskState::Stopped, None);
                    return;
                }
                ended = task => match ended {
                    Ok(()) => "the task ended".to_owned(),
                    Err(e) if e.is_panic() => format!("the task panicked: {}", panic_text(e)),
                    Err(e) => format!("the task was cancelled: {e}"),
                },
            };
            tracing::error!(task = name, error, "background task failed; restarting it");
            self.set(name, TaskState::Restarting, Some(error));
            if started.elapsed() >= HEALTHY_RUN {
                pauses = backoff();
            }
            let pause = pauses.next().unwrap_or(LONGEST_PAUSE);
            if !Self::pause(pause, &mut stop).await {
                self.set(name, TaskState::Stopped, None);
                return;
            }
        }
    }
}

fn backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_PAUSE)
        .with_max_delay(LONGEST_PAUSE)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_task_that_panics_is_restarted_and_reported_until_stopped() {
        let sup = Arc::new(Supervisor::default());
        let (stop_tx, stop) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let local = tokio::task::LocalSet::new();
        let (s, r) = (sup.clone(), runs.clone());
        local.spawn_local(async move {
            s.run_local(
                "flaky",
                move || {
                    let r = r.clone();
                    async move {
                        if r.fetch_add(1, Ordering::SeqCst) < 3 {
                            panic!("boom");
                        }
                        std::future::pending::<()>().await;
                    }
                },
                stop,
            )
            .await;
        });
        local
            .run_until(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
            })
            .await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three failures, then it stays up"
        );
        let report = sup.report()["flaky"].clone();
        assert_eq!(report.state, TaskState::Running);
        assert_eq!(report.restarts, 3);
        assert!(
            report
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("boom"))
        );
        stop_tx.send(true).unwrap();
        local.run_until(tokio::task::yield_now()).await;
        local
            .run_until(tokio::time::sleep(Duration::from_millis(1)))
            .await;
        assert_eq!(sup.report()["flaky"].state, TaskState::Stopped);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn acquiring_retries_until_it_succeeds_or_is_stopped() {
        let sup = Supervisor::default();
        let (_keep, mut stop) = watch::channel(false);
        let tries = AtomicU32::new(0);
        let got = sup
            .acquire(
                "db",
                || async {
                    if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err("unreachable")
                    } else {
                        Ok(7)
                    }
                },
                &mut stop,
            )
            .await;
        assert_eq!(got, Some(7));
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        let (stop_tx, mut stopped) = watch::channel(false);
        stop_tx.send(true).unwrap();
        let never = sup
            .acquire("db2", || async { Err::<(), _>("no") }, &mut stopped)
            .await;
        assert_eq!(never, None);
        assert_eq!(sup.report()["db2"].state, TaskState::Stopped);
    }
}

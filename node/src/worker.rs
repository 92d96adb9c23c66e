//! Background work in one shape: a [`Worker`] does one unit of work per [`Worker::step`];
//! [`spawn`] runs it on the node's `JoinSet` until the cancellation token fires, waits when
//! it has nothing to do, backs off on errors, and publishes its [`JobStatus`] (read by
//! `GET /v1/jobs` and `cairn node jobs`) and metrics per job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use crate::metrics::{JobLabels, JobMetrics};

/// First wait after an error; doubled by each error in a row.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest wait after errors.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More work is ready: step again now.
    Busy,
    /// Nothing to do until `Duration` from now (or an earlier wake-up).
    Idle(Duration),
}

/// A background job.
pub trait Worker: Send + 'static {
    type Error: std::fmt::Display + Send;
    /// The job's name (stable: a metric label and the key in `/v1/jobs`).
    fn name(&self) -> &'static str;
    /// Do one unit of work.
    fn step(&mut self) -> impl std::future::Future<Output = Result<Step, Self::Error>> + Send;
    /// Progress for people, e.g. "pass 3: 1,200 of 5,000 shards".
    fn progress(&self) -> String;
    /// The first wait after an error (doubled by each error in a row, up to
    /// [`Worker::backoff_max`]).
    fn backoff_first(&self) -> Duration {
        BACKOFF_FIRST
    }
    /// The longest wait after errors in a row (a job with a deadline, the prover, keeps it
    /// short).
    fn backoff_max(&self) -> Duration {
        BACKOFF_MAX
    }
}

/// For jobs that work in rounds, one every `period`: idle until `period` after the round
/// that `started`, so a slow round delays the next one instead of bunching them.
pub fn next_round(started: Instant, period: Duration) -> Step {
    Step::Idle(period.saturating_sub(started.elapsed()))
}

/// What a job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Busy,
    Idle,
    BackingOff,
    Stopped,
}

/// A job's status as anyone may read it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub name: &'static str,
    pub state: JobState,
    pub progress: String,
    pub steps: u64,
    pub errors: u64,
    /// The last error and when (unix seconds), cleared by nothing: history for operators.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
}

/// The jobs of a node and their status. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Jobs {
    status: Arc<Mutex<BTreeMap<&'static str, JobStatus>>>,
    pub metrics: JobMetrics,
}

impl Jobs {
    /// No jobs yet; their metrics go to `metrics`.
    pub fn new(metrics: JobMetrics) -> Self {
        Self {
            status: Arc::default(),
            metrics,
        }
    }

    /// Every job's status, by name.
    pub fn list(&self) -> Vec<JobStatus> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, JobStatus>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, name: &'static str, f: impl FnOnce(&mut JobStatus)) {
        let mut map = self.lock();
        let s = map.entry(name).or_insert_with(|| JobStatus {
            name,
            state: JobState::Busy,
            progress: String::new(),
            steps: 0,
            errors: 0,
            last_error: None,
            last_error_at: None,
        });
        f(s);
    }
}

/// The wait after `errors` errors in a row, the first being `first`, never above `max`.
pub fn backoff(first: Duration, max: Duration, errors: u32) -> Duration {
    first
        .saturating_mul(1u32 << errors.saturating_sub(1).min(16))
        .min(max)
}

/// Run `worker` on `tasks` until `cancel` fires.
pub fn spawn<W: Worker>(
    tasks: &mut JoinSet<()>,
    jobs: &Jobs,
    mut worker: W,
    cancel: CancellationToken,
) {
    let jobs = jobs.clone();
    let name = worker.name();
    let label = JobLabels { job: name };
    let steps = jobs.metrics.steps.get_or_create(&label).clone();
    let errors = jobs.metrics.errors.get_or_create(&label).clone();
    jobs.update(name, |_| {});
    tasks.spawn(async move {
        let mut in_a_row = 0u32;
        loop {
            let result = tokio::select! {
                () = cancel.cancelled() => break,
                r = worker.step() => r,
            };
            steps.inc();
            let progress = worker.progress();
            let wait = match result {
                Ok(Step::Busy) => {
                    in_a_row = 0;
                    jobs.update(name, |s| {
                        s.state = JobState::Busy;
                        s.progress = progress;
                        s.steps += 1;
                    });
                    continue;
                }
                Ok(Step::Idle(d)) => {
                    in_a_row = 0;
                    jobs.update(name, |s| {
                        s.state = JobState::Idle;
                        s.progress = progress;
                        s.steps += 1;
                    });
                    d
                }
                Err(e) => {
                    in_a_row = in_a_row.saturating_add(1);
                    errors.inc();
                    let wait = backoff(worker.backoff_first(), worker.backoff_max(), in_a_row);
                    warn!(job = name, error = %e, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "job step failed");
                    let at = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    jobs.update(name, |s| {
                        s.state = JobState::BackingOff;
                        s.progress = progress;
                        s.steps += 1;
                        s.errors += 1;
                        s.last_error = Some(e.to_string());
                        s.last_error_at = Some(at);
                    });
                    wait
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        jobs.update(name, |s| s.state = JobState::Stopped);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails twice, then has two units of work, then is idle.
    struct Script {
        n: u32,
    }

    impl Worker for Script {
        type Error = String;
        fn name(&self) -> &'static str {
            "script"
        }
        async fn step(&mut self) -> Result<Step, String> {
            self.n += 1;
            match self.n {
                1 | 2 => Err(format!("failure {}", self.n)),
                3 | 4 => Ok(Step::Busy),
                _ => Ok(Step::Idle(Duration::from_secs(3600))),
            }
        }
        fn progress(&self) -> String {
            format!("step {}", self.n)
        }
        fn backoff_first(&self) -> Duration {
            Duration::from_millis(1)
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(BACKOFF_FIRST, BACKOFF_MAX, 1), BACKOFF_FIRST);
        assert_eq!(backoff(BACKOFF_FIRST, BACKOFF_MAX, 2), BACKOFF_FIRST * 2);
        assert_eq!(backoff(BACKOFF_FIRST, BACKOFF_MAX, 40), BACKOFF_MAX);
        let poll = Duration::from_millis(500);
        assert_eq!(backoff(poll, poll, 1), poll);
        assert_eq!(
            backoff(poll, poll, 5),
            poll,
            "a round job retries every round"
        );
    }

    #[test]
    fn a_slow_round_delays_the_next_instead_of_bunching() {
        let period = Duration::from_secs(10);
        let Step::Idle(wait) = next_round(Instant::now(), period) else {
            panic!("a round job idles between rounds");
        };
        assert!(wait > Duration::from_secs(9) && wait <= period, "{wait:?}");
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(30))
            .expect("the clock has run for 30 s");
        assert_eq!(next_round(long_ago, period), Step::Idle(Duration::ZERO));
    }

    #[tokio::test]
    async fn a_job_backs_off_works_and_idles_then_stops() {
        let jobs = Jobs::default();
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        spawn(&mut tasks, &jobs, Script { n: 0 }, cancel.clone());
        // Back-off waits are milliseconds here; the idle wait is an hour.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            let s = jobs.list().pop().expect("the job is listed");
            if s.state == JobState::Idle {
                break s;
            }
            assert!(tokio::time::Instant::now() < deadline, "never idle: {s:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert_eq!(status.steps, 5);
        assert_eq!(status.errors, 2);
        assert_eq!(status.last_error.as_deref(), Some("failure 2"));
        assert_eq!(status.progress, "step 5");
        assert_eq!(
            jobs.metrics
                .errors
                .get_or_create(&JobLabels { job: "script" })
                .get(),
            2
        );
        cancel.cancel();
        while tasks.join_next().await.is_some() {}
        assert_eq!(jobs.list()[0].state, JobState::Stopped);
    }
}

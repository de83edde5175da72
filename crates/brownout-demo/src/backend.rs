//! The simulated, capacity-limited backend every server calls.
//!
//! [`Backend`] has `workers` workers (a FIFO [`Semaphore`] of that many permits). A request
//! carries its own work (`x-work-ms`, drawn by the load generator so that every stack sees
//! the same requests); the backend sleeps that long, times a slowdown factor while a
//! slowdown is in force, holding one permit. The work runs in a task of its own: once a
//! request has reached the backend, it is done to the end even when its caller has gone, as
//! a database or a thread pool would — which is why a queue of abandoned work can make an
//! unprotected server useless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

/// The backend slows down by `factor` for work that starts in `[start, end)` after the run's
/// start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slowdown {
    /// When the slowdown begins, from the start of the run.
    pub start: Duration,
    /// When the backend is back to normal.
    pub end: Duration,
    /// The service-time multiplier while slow (`3.0`: three times slower).
    pub factor: f64,
}

/// What the backend did during one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackendStats {
    /// Jobs that got a worker.
    pub started: u64,
    /// Jobs finished after their caller had gone (work nobody used).
    pub abandoned: u64,
    /// Nominal worker time of started jobs (work × slowdown factor), in milliseconds.
    pub nominal_busy_ms: f64,
    /// Worker time actually measured (the timer's overshoot included), in milliseconds.
    pub measured_busy_ms: f64,
}

/// A capacity-limited backend: `workers` jobs at once, FIFO, uncancellable work.
#[derive(Debug, Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    workers: usize,
    permits: Arc<Semaphore>,
    start: OnceLock<Instant>,
    slowdown: Option<Slowdown>,
    started: AtomicU64,
    abandoned: AtomicU64,
    nominal_busy_us: AtomicU64,
    measured_busy_us: AtomicU64,
}

impl Backend {
    /// A backend of `workers` workers (at least 1) with an optional slowdown, timed from
    /// the instant given to [`set_start`](Backend::set_start).
    pub fn new(workers: usize, slowdown: Option<Slowdown>) -> Backend {
        let workers = workers.max(1);
        Backend {
            inner: Arc::new(Inner {
                workers,
                permits: Arc::new(Semaphore::new(workers)),
                start: OnceLock::new(),
                slowdown,
                started: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
                nominal_busy_us: AtomicU64::new(0),
                measured_busy_us: AtomicU64::new(0),
            }),
        }
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Sets the run's start, from which a slowdown is timed (the first call wins).
    pub fn set_start(&self, start: Instant) {
        let _ = self.inner.start.set(start);
    }

    /// The service-time multiplier for work starting at `now` (1 before the run's start is
    /// set).
    pub fn factor_at(&self, now: Instant) -> f64 {
        let Some(start) = self.inner.start.get() else {
            return 1.0;
        };
        let since = now.saturating_duration_since(*start);
        match self.inner.slowdown {
            Some(s) if since >= s.start && since < s.end => s.factor,
            _ => 1.0,
        }
    }

    /// Queues `work` for a worker and waits for it; returns the worker time it took as
    /// measured (work × slowdown factor, plus the timer's overshoot: tokio's timer has a
    /// 1 ms resolution), or `None` when the backend was closed first.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the answer, not the work: a job already queued still
    /// runs (and counts as abandoned), like a request a database already accepted.
    pub async fn call(&self, work: Duration) -> Option<Duration> {
        let (tx, rx) = oneshot::channel();
        let backend = self.clone();
        tokio::spawn(async move {
            let permits = backend.inner.permits.clone();
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let began = Instant::now();
            let nominal = work.mul_f64(backend.factor_at(began));
            backend.inner.started.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(nominal).await;
            let measured = began.elapsed();
            let inner = &backend.inner;
            inner
                .nominal_busy_us
                .fetch_add(micros(nominal), Ordering::Relaxed);
            inner
                .measured_busy_us
                .fetch_add(micros(measured), Ordering::Relaxed);
            if tx.send(measured).is_err() {
                inner.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        });
        rx.await.ok()
    }

    /// Refuses every job that has not got a worker yet (the end of a run); jobs running now
    /// finish.
    pub fn close(&self) {
        self.inner.permits.close();
    }

    /// What the backend did so far.
    pub fn stats(&self) -> BackendStats {
        let inner = &self.inner;
        BackendStats {
            started: inner.started.load(Ordering::Relaxed),
            abandoned: inner.abandoned.load(Ordering::Relaxed),
            nominal_busy_ms: inner.nominal_busy_us.load(Ordering::Relaxed) as f64 / 1000.0,
            measured_busy_ms: inner.measured_busy_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn workers_bound_concurrency_and_slowdown_scales_work() {
        let start = Instant::now();
        let backend = Backend::new(
            2,
            Some(Slowdown {
                start: Duration::from_millis(100),
                end: Duration::from_millis(200),
                factor: 3.0,
            }),
        );
        backend.set_start(start);
        // Three 50 ms jobs on two workers: the third starts at 50 ms.
        let jobs: Vec<_> = (0..3)
            .map(|_| {
                let b = backend.clone();
                tokio::spawn(async move { b.call(Duration::from_millis(50)).await })
            })
            .collect();
        for job in jobs {
            assert_eq!(job.await.unwrap(), Some(Duration::from_millis(50)));
        }
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // Now inside the slowdown: 50 ms of work takes 150 ms.
        assert_eq!(
            backend.call(Duration::from_millis(50)).await,
            Some(Duration::from_millis(150))
        );
        let stats = backend.stats();
        assert_eq!(stats.started, 4);
        assert_eq!(stats.abandoned, 0);
        assert!((stats.nominal_busy_ms - 300.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_work_still_runs_and_close_refuses_queued_jobs() {
        let backend = Backend::new(1, None);
        let first = {
            let b = backend.clone();
            tokio::spawn(async move { b.call(Duration::from_millis(40)).await })
        };
        tokio::task::yield_now().await;
        // The caller gives up after 10 ms; the worker keeps going.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            backend.call(Duration::from_millis(5)),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(first.await.unwrap(), Some(Duration::from_millis(40)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let stats = backend.stats();
        assert_eq!((stats.started, stats.abandoned), (2, 1));
        backend.close();
        assert_eq!(backend.call(Duration::from_millis(5)).await, None);
    }
}

//! [`LoadDriver`]: open-loop Poisson traffic with a class mix, driven into any service in
//! tokio time, and how each answer is judged ([`Judge`]).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use brownout_core::config::check;
use brownout_core::{
    BoxError, ConfigError, LoadLevel, LoadSignal, Priority, RejectReason, Rejected,
};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::backend::Served;
use crate::draw::Draw;
use crate::summary::{LevelChange, Outcome, Record, Summary};

/// One request of a planned run: when it is sent, its class, and what the planner drew for
/// it (see [`LoadDriver::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned<T> {
    /// When it is sent, from the start of the run (whole milliseconds).
    pub at: Duration,
    /// Its class.
    pub priority: Priority,
    /// What the planner drew for it.
    pub data: T,
}

/// The request being made, as the request factory of [`LoadDriver::run_plan`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Its position in the run (0-based, in sending order).
    pub index: usize,
    /// When it is sent, from the start of the run.
    pub at: Duration,
    /// Its class.
    pub priority: Priority,
    /// When the client gives up on it (sent + the driver's deadline): put it in the request
    /// as a [`Deadline`](brownout_core::Deadline) when the stack should know it.
    pub deadline: Instant,
}

/// How a request ended, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// Answered successfully.
    Ok,
    /// Refused by a brownout layer, for this reason (a [`Rejected`] in the error's source
    /// chain, or a brownout rejection response).
    Rejected(RejectReason),
    /// Refused by tower's `LoadShed` (`tower::load_shed::error::Overloaded`).
    Overloaded,
    /// Any other error or error response.
    Failed,
}

impl Verdict {
    /// The verdict for an error: [`Rejected::find`] in its source chain, then tower's
    /// `Overloaded`, else [`Verdict::Failed`].
    ///
    /// ```
    /// use brownout_core::{BoxError, LoadLevel, RejectReason, Rejected};
    /// use brownout_test::Verdict;
    ///
    /// let err: BoxError = Rejected::new(RejectReason::QueueFull, LoadLevel::High).into();
    /// assert_eq!(Verdict::of_error(&err), Verdict::Rejected(RejectReason::QueueFull));
    /// assert_eq!(Verdict::of_error(&BoxError::from("db down")), Verdict::Failed);
    /// ```
    pub fn of_error(err: &BoxError) -> Verdict {
        if let Some(rejected) = Rejected::find_in_box(&**err) {
            Verdict::Rejected(rejected.reason())
        } else if err.is::<tower::load_shed::error::Overloaded>() {
            Verdict::Overloaded
        } else {
            Verdict::Failed
        }
    }
}

/// A [`Verdict`] and, when the response says so, how long the backend worked on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// How the request ended.
    pub verdict: Verdict,
    /// The backend's service time (from a [`Served`] response extension), when known.
    pub service_time: Option<Duration>,
}

impl From<Verdict> for Judged {
    fn from(verdict: Verdict) -> Judged {
        Judged {
            verdict,
            service_time: None,
        }
    }
}

/// Decides how a request ended from what the service returned.
///
/// [`ByError`] (the default) for stacks that refuse with errors; [`HttpJudge`] for stacks
/// that answer rejections with responses (the `brownout` facade, axum routers);
/// [`JudgeFn`] wraps a closure.
pub trait Judge<Resp>: Send + Sync + 'static {
    /// Judges one answer (it may read the response body).
    fn judge(&self, result: Result<Resp, BoxError>) -> impl Future<Output = Judged> + Send;
}

/// Judges by the error alone: `Ok` is [`Verdict::Ok`], an error goes through
/// [`Verdict::of_error`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByError;

impl<Resp: Send + 'static> Judge<Resp> for ByError {
    fn judge(&self, result: Result<Resp, BoxError>) -> impl Future<Output = Judged> + Send {
        let verdict = match &result {
            Ok(_) => Verdict::Ok,
            Err(err) => Verdict::of_error(err),
        };
        std::future::ready(verdict.into())
    }
}

/// Judges `http::Response`s: a `429`, `503` or `504` whose body starts with a rejection
/// reason (`shed: …`, as the `brownout` facade answers) is [`Verdict::Rejected`], any other
/// `5xx` is [`Verdict::Failed`], the rest is [`Verdict::Ok`]; errors as [`ByError`]. Reads
/// the service time from a [`Served`] extension ([`HttpBackend`](crate::HttpBackend)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpJudge;

impl<B> Judge<http::Response<B>> for HttpJudge
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    async fn judge(&self, result: Result<http::Response<B>, BoxError>) -> Judged {
        let response = match result {
            Ok(response) => response,
            Err(err) => return Verdict::of_error(&err).into(),
        };
        let service_time = response
            .extensions()
            .get::<Served>()
            .map(|s| s.service_time);
        let status = response.status();
        let verdict = if matches!(status.as_u16(), 429 | 503 | 504) {
            match response.into_body().collect().await {
                Ok(body) => reason_in(&body.to_bytes()).map_or(Verdict::Failed, Verdict::Rejected),
                Err(_) => Verdict::Failed,
            }
        } else if status.is_server_error() {
            Verdict::Failed
        } else {
            Verdict::Ok
        };
        Judged {
            verdict,
            service_time,
        }
    }
}

/// The rejection reason a brownout rejection body starts with (`queue_full: …`).
fn reason_in(body: &[u8]) -> Option<RejectReason> {
    let name = body.split(|b| *b == b':').next()?;
    RejectReason::ALL
        .into_iter()
        .find(|r| r.as_str().as_bytes() == name)
}

/// A [`Judge`] from a closure.
///
/// ```
/// use brownout_test::{JudgeFn, Verdict};
///
/// // Count `None` answers as failures.
/// let judge = JudgeFn(|result: Result<Option<u32>, brownout_core::BoxError>| match result {
///     Ok(Some(_)) => Verdict::Ok,
///     Ok(None) => Verdict::Failed,
///     Err(err) => Verdict::of_error(&err),
/// });
/// # let _ = judge;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct JudgeFn<F>(pub F);

impl<Resp, F> Judge<Resp> for JudgeFn<F>
where
    F: Fn(Result<Resp, BoxError>) -> Verdict + Send + Sync + 'static,
{
    fn judge(&self, result: Result<Resp, BoxError>) -> impl Future<Output = Judged> + Send {
        std::future::ready((self.0)(result).into())
    }
}

/// Open-loop load in tokio time: Poisson arrivals at `rate` requests per second for
/// `duration`, classes drawn from a mix, every request given up by its client after
/// `deadline`. Built by [`LoadDriver::builder`].
///
/// Run it on a current-thread runtime with a paused clock
/// (`#[tokio::test(start_paused = true)]`): the runtime jumps from one timer to the next,
/// so ten virtual seconds of traffic take a fraction of a real one, and the outcome depends
/// only on the seed and the service. Open loop means arrivals do not wait for answers: a
/// slow service faces a growing crowd, as a real server does.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::Priority;
/// use brownout_test::{LoadDriver, MockBackend};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let backend = MockBackend::new(4, Duration::from_millis(10)); // 400 req/s
/// let driver = LoadDriver::builder()
///     .rate(0.5 * backend.capacity())
///     .duration(Duration::from_secs(2))
///     .seed(7)
///     .build()
///     .unwrap();
/// let summary = driver.run(backend, |_priority: Priority| ()).await;
/// assert!(summary.total().sent > 300);
/// assert_eq!(summary.total().success_rate(), 1.0);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LoadDriver<J = ByError> {
    rate: f64,
    duration: Duration,
    mix: [f64; Priority::COUNT],
    seed: u64,
    deadline: Duration,
    judge: Arc<J>,
    watch: Option<LoadSignal>,
}

impl LoadDriver {
    /// A builder: 100 req/s for 10 s, the default mix, seed 0, deadline 1 s, [`ByError`].
    pub fn builder() -> LoadDriverBuilder {
        LoadDriverBuilder::default()
    }
}

impl<J> LoadDriver<J> {
    /// The arrival rate, requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How long requests arrive.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The client deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The arrival timeline, with `draw` called once per request (after its class is
    /// drawn, from the same seeded stream) for anything else the request needs.
    ///
    /// Identical for every service given the same settings: plan once, then
    /// [`run_plan`](Self::run_plan) several stacks on the same requests. Arrival times are
    /// rounded up to whole milliseconds (tokio's timer resolution).
    pub fn plan<T>(&self, mut draw: impl FnMut(Priority, &mut Draw) -> T) -> Vec<Planned<T>> {
        let mut rng = Draw::seeded(self.seed);
        let rate_per_ms = self.rate / 1000.0;
        let total: f64 = self.mix.iter().sum();
        let end_ms = self.duration.as_secs_f64() * 1000.0;
        let mut out = Vec::with_capacity((rate_per_ms * end_ms * 1.05) as usize + 16);
        if rate_per_ms <= 0.0 || total <= 0.0 {
            return out;
        }
        let mut t = 0.0f64;
        loop {
            let u: f64 = 1.0 - rng.unit();
            t += -u.ln() / rate_per_ms;
            if t >= end_ms {
                break;
            }
            let mut pick = rng.unit() * total;
            let mut priority = Priority::Background;
            for (p, w) in Priority::ALL.into_iter().zip(self.mix) {
                if pick < w {
                    priority = p;
                    break;
                }
                pick -= w;
            }
            let data = draw(priority, &mut rng);
            // The clock ticks in whole milliseconds: a request due at 3.4 ms leaves at 4 ms.
            out.push(Planned {
                at: Duration::from_millis(t.ceil() as u64),
                priority,
                data,
            });
        }
        out
    }

    /// Drives `service` with the planned traffic, making each request with `make(class)`.
    ///
    /// Returns once every request has ended: answered, refused, or given up at its
    /// deadline (`duration + deadline` after the start, plus 1 ms).
    pub async fn run<S, Req, F>(&self, service: S, mut make: F) -> Summary
    where
        S: tower_service::Service<Req> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        Req: Send + 'static,
        F: FnMut(Priority) -> Req,
        J: Judge<S::Response>,
    {
        let plan = self.plan(|_, _| ());
        self.run_plan(service, &plan, |arrival, _| make(arrival.priority))
            .await
    }

    /// Drives `service` with `plan` (from [`plan`](Self::plan), or written by hand),
    /// making each request with `make(arrival, data)`.
    ///
    /// Each request is sent at its time from a task of its own, which waits for
    /// `poll_ready`, calls, and drops the response future at the deadline (the client
    /// gives up); the answer is then judged by the driver's [`Judge`].
    pub async fn run_plan<S, Req, T, F>(
        &self,
        service: S,
        plan: &[Planned<T>],
        mut make: F,
    ) -> Summary
    where
        S: tower_service::Service<Req> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        Req: Send + 'static,
        F: FnMut(&Arrival, &T) -> Req,
        J: Judge<S::Response>,
    {
        let origin = Instant::now();
        let end = origin + self.duration + self.deadline + Duration::from_millis(1);
        let levels = Arc::new(Mutex::new(Vec::new()));
        let watcher = self.watch.clone().map(|mut signal| {
            let levels = levels.clone();
            tokio::spawn(async move {
                while let Some(level) = signal.changed().await {
                    lock(&levels).push(LevelChange {
                        at: origin.elapsed(),
                        level,
                    });
                }
            })
        });
        let records = Arc::new(Mutex::new(
            plan.iter()
                .map(|p| Record {
                    at: p.at,
                    priority: p.priority,
                    outcome: Outcome::Unfinished,
                })
                .collect::<Vec<_>>(),
        ));
        for (index, planned) in plan.iter().enumerate() {
            let at = origin + planned.at;
            if Instant::now() < at {
                tokio::time::sleep_until(at).await;
            }
            let deadline = at + self.deadline;
            let arrival = Arrival {
                index,
                at: planned.at,
                priority: planned.priority,
                deadline,
            };
            let req = make(&arrival, &planned.data);
            let mut svc = service.clone();
            let judge = self.judge.clone();
            let slot = Slot {
                records: records.clone(),
                index,
            };
            tokio::spawn(async move {
                let answer = tokio::time::timeout_at(deadline, async {
                    svc.ready().await.map_err(Into::into)?;
                    svc.call(req).await.map_err(Into::into)
                })
                .await;
                let latency = at.elapsed();
                let outcome = match answer {
                    Ok(result) => {
                        let judged = judge.judge(result).await;
                        Outcome::from_verdict(judged, latency)
                    }
                    Err(_) => Outcome::TimedOut,
                };
                slot.set(outcome);
            });
        }
        // Every request ends by its deadline.
        tokio::time::sleep_until(end).await;
        drop(service);
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        let records = lock(&records).clone();
        let levels = lock(&levels).clone();
        Summary::new(records, levels, self.duration, self.deadline)
    }
}

/// Where one request's outcome goes; marks it [`Outcome::Panicked`] when its task unwinds.
struct Slot {
    records: Arc<Mutex<Vec<Record>>>,
    index: usize,
}

impl Slot {
    fn set(self, outcome: Outcome) {
        lock(&self.records)[self.index].outcome = outcome;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.records)[self.index].outcome = Outcome::Panicked;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Configures a [`LoadDriver`]; [`build`](LoadDriverBuilder::build) validates.
#[derive(Debug, Clone)]
pub struct LoadDriverBuilder<J = ByError> {
    rate: f64,
    duration: Duration,
    mix: [f64; Priority::COUNT],
    seed: u64,
    deadline: Duration,
    judge: J,
    watch: Option<LoadSignal>,
}

impl Default for LoadDriverBuilder {
    fn default() -> Self {
        LoadDriverBuilder {
            rate: 100.0,
            duration: Duration::from_secs(10),
            mix: LoadDriverBuilder::DEFAULT_MIX,
            seed: 0,
            deadline: Duration::from_secs(1),
            judge: ByError,
            watch: None,
        }
    }
}

impl LoadDriverBuilder {
    /// The default class mix: 10 / 30 / 30 / 20 / 10 % from Critical to Background.
    pub const DEFAULT_MIX: [f64; Priority::COUNT] = [0.10, 0.30, 0.30, 0.20, 0.10];
}

impl<J> LoadDriverBuilder<J> {
    /// Mean arrivals per second (Poisson). Use a multiple of the backend's capacity
    /// ([`MockBackend::capacity`](crate::MockBackend::capacity)) for "4× load".
    #[must_use]
    pub fn rate(mut self, per_second: f64) -> Self {
        self.rate = per_second;
        self
    }

    /// How long requests arrive (virtual time).
    #[must_use]
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// The share of each class, Critical first (weights; normalized when drawn).
    #[must_use]
    pub fn mix(mut self, mix: [f64; Priority::COUNT]) -> Self {
        self.mix = mix;
        self
    }

    /// Only these classes, in equal shares.
    #[must_use]
    pub fn classes(mut self, classes: &[Priority]) -> Self {
        self.mix = [0.0; Priority::COUNT];
        for class in classes {
            self.mix[class.index()] = 1.0;
        }
        self
    }

    /// The seed of the arrival times and classes.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How long a client waits for an answer before it drops the response future.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Records every level `signal` publishes during a run ([`Summary::levels`]).
    #[must_use]
    pub fn watch(mut self, signal: LoadSignal) -> Self {
        self.watch = Some(signal);
        self
    }

    /// How answers are judged ([`ByError`] by default; [`HttpJudge`] for http stacks that
    /// answer rejections with responses).
    #[must_use]
    pub fn judge<K>(self, judge: K) -> LoadDriverBuilder<K> {
        LoadDriverBuilder {
            rate: self.rate,
            duration: self.duration,
            mix: self.mix,
            seed: self.seed,
            deadline: self.deadline,
            judge,
            watch: self.watch,
        }
    }

    /// Builds the driver.
    ///
    /// # Errors
    ///
    /// A rate that is negative, NaN or infinite, or a mix weight that is, naming the field
    /// (`mix[low]`).
    pub fn build(self) -> Result<LoadDriver<J>, ConfigError> {
        check::at_least_f64("rate", self.rate, 0.0)?;
        for (p, w) in Priority::ALL.into_iter().zip(self.mix) {
            check::at_least_f64(&format!("mix[{p}]"), w, 0.0)?;
        }
        Ok(LoadDriver {
            rate: self.rate,
            duration: self.duration,
            mix: self.mix,
            seed: self.seed,
            deadline: self.deadline,
            judge: Arc::new(self.judge),
            watch: self.watch,
        })
    }
}

/// Drives `service` at `rate` requests per second for `duration` with the default mix,
/// seed 0 and a 1 s client deadline, judging answers by their errors ([`ByError`]): the
/// short form of [`LoadDriver::builder`] … [`run`](LoadDriver::run).
///
/// # Panics
///
/// When `rate` is negative, NaN or infinite.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::Priority;
/// use brownout_test::{MockBackend, drive};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let backend = MockBackend::new(1, Duration::from_millis(10)); // 100 req/s
/// let summary = drive(backend, 300.0, Duration::from_secs(2), |_: Priority| ()).await;
/// // Three times the capacity with no protection: the queue grows past the deadline.
/// assert!(summary.total().timed_out > summary.total().ok);
/// # }
/// ```
pub async fn drive<S, Req, F>(service: S, rate: f64, duration: Duration, make: F) -> Summary
where
    S: tower_service::Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
    F: FnMut(Priority) -> Req,
{
    LoadDriver::builder()
        .rate(rate)
        .duration(duration)
        .build()
        .expect("a finite, non-negative rate")
        .run(service, make)
        .await
}

/// The highest level a summary's watched signal published (Normal when none).
pub(crate) fn max_level(levels: &[LevelChange]) -> LoadLevel {
    levels
        .iter()
        .map(|c| c.level)
        .max()
        .unwrap_or(LoadLevel::Normal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChaosLayer, Faults, MockBackend};
    use proptest::prelude::*;
    use std::convert::Infallible;
    use tower::{Layer, service_fn};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn driver(rate: f64, secs: u64) -> LoadDriverBuilder {
        LoadDriver::builder()
            .rate(rate)
            .duration(Duration::from_secs(secs))
            .deadline(ms(500))
    }

    #[test]
    fn plan_is_seeded_and_follows_the_rate_and_mix() {
        let d = driver(1000.0, 20).seed(3).build().unwrap();
        let plan = d.plan(|_, _| ());
        assert_eq!(plan, d.plan(|_, _| ()));
        let expected = 20_000.0;
        assert!(
            (plan.len() as f64 - expected).abs() < expected * 0.03,
            "{}",
            plan.len()
        );
        let high = plan.iter().filter(|p| p.priority == Priority::High).count() as f64;
        assert!((high / plan.len() as f64 - 0.30).abs() < 0.01);
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(plan.iter().all(|p| p.at.subsec_nanos() % 1_000_000 == 0));
        let other = driver(1000.0, 20).seed(4).build().unwrap().plan(|_, _| ());
        assert_ne!(plan, other);
        let only = driver(100.0, 10)
            .classes(&[Priority::Critical, Priority::Low])
            .build()
            .unwrap()
            .plan(|_, _| ());
        assert!(
            only.iter()
                .all(|p| matches!(p.priority, Priority::Critical | Priority::Low))
        );
        assert!(driver(0.0, 10).build().unwrap().plan(|_, _| ()).is_empty());
    }

    #[test]
    fn planner_draws_from_the_same_stream_after_the_class() {
        let d = driver(50.0, 4).seed(9).build().unwrap();
        let with_data = d.plan(|p, draw| (p, draw.unit()));
        assert!(with_data.iter().all(|p| p.data.0 == p.priority));
        // Drawing more per request shifts the later arrivals: one stream, as documented.
        let without = d.plan(|_, _| ());
        assert_eq!(with_data[0].at, without[0].at);
        assert_ne!(
            with_data.iter().map(|p| p.at).collect::<Vec<_>>(),
            without.iter().map(|p| p.at).collect::<Vec<_>>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn below_capacity_everything_is_answered_with_its_latency() {
        let backend = MockBackend::new(4, ms(10));
        let d = driver(0.5 * backend.capacity(), 4).build().unwrap();
        let summary = d.run(backend.clone(), |_| ()).await;
        let total = summary.total();
        assert!(total.sent > 600, "{summary}");
        assert_eq!(total.ok, total.sent, "{summary}");
        assert!(total.p50 >= ms(10) && total.max < ms(60), "{summary}");
        assert_eq!(backend.stats().calls, total.sent);
        assert_eq!(summary.records().len() as u64, total.sent);
    }

    #[tokio::test(start_paused = true)]
    async fn hangs_time_out_failures_fail_panics_are_recorded() {
        let backend = MockBackend::builder()
            .workers(16)
            .hang_rate(0.2)
            .failure_rate(0.2)
            .panic_rate(0.1)
            .seed(5)
            .build()
            .unwrap();
        let summary = driver(200.0, 2)
            .build()
            .unwrap()
            .run(backend.clone(), |_| ())
            .await;
        let t = summary.total();
        let stats = backend.stats();
        assert_eq!(t.timed_out, stats.hung, "{summary}");
        assert_eq!(t.failed, stats.failed, "{summary}");
        assert_eq!(t.panicked, stats.panicked, "{summary}");
        assert_eq!(t.ok, stats.served, "{summary}");
        assert!(
            t.timed_out > 0 && t.failed > 0 && t.panicked > 0,
            "{summary}"
        );
        assert_eq!(t.sent, t.ok + t.failed + t.timed_out + t.panicked);
    }

    #[tokio::test(start_paused = true)]
    async fn rejections_are_counted_by_reason_and_overloaded_apart() {
        let refuse = service_fn(|class: Priority| async move {
            match class {
                Priority::Low => {
                    Err::<(), BoxError>(Rejected::new(RejectReason::Shed, LoadLevel::High).into())
                }
                Priority::Background => Err(tower::load_shed::error::Overloaded::new().into()),
                _ => Ok(()),
            }
        });
        let summary = driver(500.0, 2).build().unwrap().run(refuse, |p| p).await;
        let low = summary.class(Priority::Low);
        assert_eq!(low.rejected(RejectReason::Shed), low.sent);
        assert_eq!(low.success_rate(), 0.0);
        let bg = summary.class(Priority::Background);
        assert_eq!((bg.overloaded, bg.rejected_total()), (bg.sent, 0));
        assert_eq!(summary.class(Priority::High).success_rate(), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn http_judge_reads_rejection_bodies_and_statuses() {
        let answer = |status: u16, body: &'static str| {
            let mut r = http::Response::new(body.to_owned());
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, BoxError>(r)
        };
        let judge = HttpJudge;
        let verdict = |r| async move {
            Judge::<http::Response<String>>::judge(&judge, r)
                .await
                .verdict
        };
        assert_eq!(
            verdict(answer(503, "queue_full: the admission queue is full\n")).await,
            Verdict::Rejected(RejectReason::QueueFull)
        );
        assert_eq!(
            verdict(answer(429, "rate_limited: slow down\n")).await,
            Verdict::Rejected(RejectReason::RateLimited)
        );
        assert_eq!(verdict(answer(503, "maintenance")).await, Verdict::Failed);
        assert_eq!(verdict(answer(500, "shed: no")).await, Verdict::Failed);
        assert_eq!(verdict(answer(404, "")).await, Verdict::Ok);
        assert_eq!(verdict(Err("boom".into())).await, Verdict::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn watched_levels_are_recorded_with_their_time() {
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        let svc = service_fn(|_: ()| async { Ok::<_, Infallible>(()) });
        let d = driver(10.0, 2).watch(signal).build().unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(ms(500)).await;
            publisher.publish(LoadLevel::High);
            tokio::time::sleep(ms(500)).await;
            publisher.publish(LoadLevel::Elevated);
        });
        let summary = d.run(svc, |_| ()).await;
        assert_eq!(
            summary.levels(),
            &[
                LevelChange {
                    at: ms(500),
                    level: LoadLevel::High
                },
                LevelChange {
                    at: ms(1000),
                    level: LoadLevel::Elevated
                },
            ]
        );
        assert_eq!(summary.max_level(), LoadLevel::High);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_are_deterministic_with_chaos_in_the_stack() {
        let run = || async {
            let backend = MockBackend::builder()
                .workers(4)
                .latency(crate::Latency::Exponential { mean: ms(10) })
                .seed(2)
                .build()
                .unwrap();
            let stack = ChaosLayer::builder()
                .seed(3)
                .all(
                    Faults::none()
                        .error_rate(0.1)
                        .delay(0.2, crate::Latency::Fixed(ms(30))),
                )
                .build()
                .unwrap()
                .layer(backend);
            driver(600.0, 3)
                .seed(4)
                .build()
                .unwrap()
                .run(stack, |_| ())
                .await
        };
        let a = run().await;
        assert_eq!(a, run().await);
        assert!(a.total().failed > 0 && a.total().ok > 0, "{a}");
    }

    proptest! {
        #[test]
        fn rel_10_rate_and_mix_must_be_finite_and_non_negative(x in proptest::num::f64::ANY, i in 0usize..5) {
            let valid = x.is_finite() && x >= 0.0;
            prop_assert_eq!(LoadDriver::builder().rate(x).build().is_ok(), valid);
            let mut mix = LoadDriverBuilder::DEFAULT_MIX;
            mix[i] = x;
            let built = LoadDriver::builder().mix(mix).build();
            prop_assert_eq!(built.is_ok(), valid);
            if let Err(err) = built {
                prop_assert_eq!(err.field(), format!("mix[{}]", Priority::ALL[i]));
            }
        }
    }
}

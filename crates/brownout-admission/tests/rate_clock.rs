//! The rate limit under a flood, on a paused clock: refusals decided without a clock read
//! (see `GlobalRate` in `src/rate.rs`) never admit above the rate, release each token on
//! time while the flood is steady, and keep the per-level and per-key limits exact.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_admission::{BoxError, NoDeadline, PriorityAdmissionLayer, RateLimit, Rejected};
use brownout_core::{Fixed, LoadLevel, LoadSignal, Priority, RejectReason};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// At most this many refusals in a row are decided without a clock read (`MAX_UNREAD`).
const MAX_UNREAD: u64 = 16;

#[derive(Debug, Clone, Copy)]
struct Req {
    tenant: u8,
}

/// Answers at once.
#[derive(Debug, Clone, Copy)]
struct Echo;

impl Service<Req> for Echo {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Self::Future {
        ready(Ok(()))
    }
}

/// The GCRA the layer must agree with, on exact virtual nanoseconds.
struct Reference {
    t: u64,
    tau: u64,
    tat: Option<u64>,
}

impl Reference {
    fn new(per_second: u64, burst: u64) -> Reference {
        // governor's period: 1 s / rate, rounded to the nanosecond.
        let t = (1_000_000_000 + per_second / 2) / per_second;
        Reference {
            t,
            tau: t * (burst - 1),
            tat: None,
        }
    }

    /// `Err(wait)` when a request at `now` does not conform.
    fn check(&mut self, now: u64) -> Result<(), u64> {
        let tat = self.tat.unwrap_or(now);
        let earliest = tat.saturating_sub(self.tau);
        if now < earliest {
            return Err(earliest - now);
        }
        self.tat = Some(tat.max(now) + self.t);
        Ok(())
    }
}

fn ns(origin: Instant) -> u64 {
    Instant::now().duration_since(origin).as_nanos() as u64
}

/// `Ok(())` if admitted, else the refusal's `retry_after` in nanoseconds.
async fn send<S>(svc: &mut S, req: Req) -> Result<(), u64>
where
    S: Service<Req, Response = (), Error = BoxError>,
{
    match svc.ready().await.unwrap().call(req).await {
        Ok(()) => Ok(()),
        Err(err) => {
            let r = err.downcast_ref::<Rejected>().expect("a Rejected");
            assert_eq!(r.reason(), RejectReason::RateLimited);
            Err(r.retry_after().expect("a retry_after").as_nanos() as u64)
        }
    }
}

/// Compares one decision with the reference: same outcome; a refusal's `retry_after` never
/// earlier than the reference's wait and later by at most the unread arrivals.
fn agree(got: Result<(), u64>, want: Result<(), u64>, step: Duration, at: u64) -> bool {
    match (got, want) {
        (Ok(()), Ok(())) => true,
        (Err(retry), Err(wait)) => {
            let slack = MAX_UNREAD * step.as_nanos() as u64;
            assert!(
                retry >= wait && retry <= wait + slack,
                "at {at} ns: retry_after {retry}, reference wait {wait}"
            );
            false
        }
        (got, want) => panic!("at {at} ns: got {got:?}, reference {want:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn flood_is_admitted_exactly_on_the_gcra_schedule_never_above() {
    let layer = PriorityAdmissionLayer::builder()
        .rate_limit(RateLimit::per_second(100.0).burst(5))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let origin = Instant::now();
    let mut svc = layer.layer(Echo);
    let mut reference = Reference::new(100, 5);
    let step = Duration::from_micros(4);
    let (mut sent, mut admitted) = (0u64, 0u64);
    while Instant::now() < origin + Duration::from_millis(300) {
        let at = ns(origin);
        let got = send(&mut svc, Req { tenant: 0 }).await;
        admitted += u64::from(agree(got, reference.check(at), step, at));
        sent += 1;
        tokio::time::advance(step).await;
    }
    // The burst of 5, then one per 10 ms: 29 more before 300 ms.
    assert_eq!(admitted, 5 + 29);
    let stats = layer.handle().stats();
    assert_eq!(stats.rejected_rate_limited, sent - admitted);
}

#[tokio::test(start_paused = true)]
async fn flood_keeps_each_levels_scaled_rate() {
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let layer = PriorityAdmissionLayer::builder()
        .rate_limit(RateLimit::per_second(100.0).burst(1))
        .signal(signal)
        .classifier(Fixed(Priority::Critical))
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let mut svc = layer.layer(Echo);
    let step = Duration::from_micros(8);
    // Default rate table: 100 / 80 / 60 / 40 / 20 %; over 400 ms, one at 0 then one per
    // period.
    for (level, per_second, expected) in [
        (LoadLevel::Normal, 100, 40),
        (LoadLevel::Elevated, 80, 32),
        (LoadLevel::High, 60, 24),
        (LoadLevel::Critical, 40, 16),
        (LoadLevel::Emergency, 20, 8),
    ] {
        publisher.publish(level);
        let origin = Instant::now();
        let mut reference = Reference::new(per_second, 1);
        let mut admitted = 0;
        while Instant::now() < origin + Duration::from_millis(400) {
            let at = ns(origin);
            let got = send(&mut svc, Req { tenant: 0 }).await;
            admitted += u64::from(agree(got, reference.check(at), step, at));
            tokio::time::advance(step).await;
        }
        assert_eq!(admitted, expected, "{level:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn one_tenants_flood_does_not_refuse_another_tenant() {
    let layer = PriorityAdmissionLayer::builder()
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .keyed_rate_limit(
            |r: &Req| Some(r.tenant),
            RateLimit::per_second(10.0).burst(2),
        )
        .build()
        .unwrap();
    let origin = Instant::now();
    let mut svc = layer.layer(Echo);
    let (mut flood, mut quiet) = (Reference::new(10, 2), Reference::new(10, 2));
    let step = Duration::from_micros(4);
    let (mut flood_admitted, mut quiet_admitted) = (0, 0);
    let mut i = 0u64;
    while Instant::now() < origin + Duration::from_millis(500) {
        let at = ns(origin);
        let got = send(&mut svc, Req { tenant: 1 }).await;
        flood_admitted += u64::from(agree(got, flood.check(at), step, at));
        // Tenant 2 asks once per 20 ms, and gets its own 10/s.
        if i.is_multiple_of(5_000) {
            let got = send(&mut svc, Req { tenant: 2 }).await;
            quiet_admitted += u64::from(agree(got, quiet.check(at), step, at));
        }
        i += 1;
        tokio::time::advance(step).await;
    }
    // Each: a burst of 2, then one per 100 ms (at 100, 200, 300, 400 ms).
    assert_eq!(flood_admitted, 2 + 4);
    assert_eq!(quiet_admitted, 2 + 4);
}

#[tokio::test(start_paused = true)]
async fn requests_after_a_pause_past_the_token_are_admitted_once_the_credit_is_spent() {
    let layer = PriorityAdmissionLayer::builder()
        .rate_limit(RateLimit::per_second(10.0).burst(1))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let mut svc = layer.layer(Echo);
    let origin = Instant::now();
    assert_eq!(send(&mut svc, Req { tenant: 0 }).await, Ok(()));
    while Instant::now() < origin + Duration::from_millis(10) {
        tokio::time::advance(Duration::from_micros(1)).await;
        assert!(send(&mut svc, Req { tenant: 0 }).await.is_err());
    }
    // The flood stops; the next requests come 1 s later, long after the token at 100 ms.
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut late = 0;
    while send(&mut svc, Req { tenant: 0 }).await.is_err() {
        late += 1;
    }
    assert!(
        late <= MAX_UNREAD,
        "{late} refused after the token was free"
    );
    // And the admission was governor's: the next one is refused for a full period.
    assert_eq!(
        send(&mut svc, Req { tenant: 0 }).await,
        Err(100_000_000),
        "retry_after from a fresh reading"
    );
}

/// Real clock, four threads flooding one limit: whatever the interleaving, the admissions
/// over the run stay within the GCRA bound `burst + elapsed × rate` (only an upper bound is
/// asserted; how many are admitted below it depends on scheduling).
#[test]
fn four_threads_flooding_on_the_real_clock_never_exceed_the_rate() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::Waker;

    const RATE: f64 = 2_000.0;
    const BURST: u32 = 5;
    let layer = PriorityAdmissionLayer::builder()
        .rate_limit(RateLimit::per_second(RATE).burst(BURST))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let admitted = AtomicU64::new(0);
    let start = std::time::Instant::now();
    let run_for = Duration::from_millis(100);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let mut svc = layer.layer(Echo);
            let admitted = &admitted;
            scope.spawn(move || {
                let mut cx = Context::from_waker(Waker::noop());
                // At least 10 requests per thread, however late the thread starts.
                let mut sent = 0;
                while sent < 10 || start.elapsed() < run_for {
                    sent += 1;
                    assert!(svc.poll_ready(&mut cx).is_ready());
                    let fut = std::pin::pin!(svc.call(Req { tenant: 0 }));
                    match fut.poll(&mut cx) {
                        Poll::Ready(Ok(())) => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Poll::Ready(Err(err)) => {
                            let r = err.downcast_ref::<Rejected>().expect("a Rejected");
                            assert_eq!(r.reason(), RejectReason::RateLimited);
                        }
                        Poll::Pending => panic!("Echo answers at once"),
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = admitted.into_inner();
    let bound = f64::from(BURST) + elapsed * RATE + 1.0;
    assert!(
        (admitted as f64) <= bound,
        "{admitted} admitted in {elapsed:.3} s, bound {bound:.0}"
    );
    // The bucket starts full: the first BURST of the 40+ requests conform.
    assert!(admitted >= u64::from(BURST), "the burst at least");
    let stats = layer.handle().stats();
    assert_eq!(stats.admitted, admitted);
}

//! Property: for any arrivals, durations, cancellations, trigger time, readiness delay and
//! drain timeout, every request ends exactly as the timeline says, none is lost, and the
//! counts add up. Times sit on offset grids so no two events ever tie.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::{RejectReason, Rejected};
use brownout_shutdown::{Aborted, Shutdown, ShutdownGuard};
use proptest::prelude::*;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tower::{Service, ServiceExt};

#[derive(Clone, Copy)]
struct Sleeper;

impl Service<Duration> for Sleeper {
    type Response = Duration;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Duration, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, d: Duration) -> Self::Future {
        Box::pin(async move {
            sleep(d).await;
            Ok(d)
        })
    }
}

#[derive(Debug, Clone)]
struct Req {
    /// ms; arrivals end in 1
    arrival: u64,
    /// ms; completions end in 1
    duration: u64,
    /// ms after arrival; cancellations end in 4
    cancel_after: Option<u64>,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum End {
    Ok,
    Rejected,
    Aborted,
    Cancelled,
}

fn req() -> impl Strategy<Value = Req> {
    (
        0u64..300,
        0u64..300,
        proptest::option::weighted(0.2, 0u64..300),
    )
        .prop_map(|(a, d, c)| Req {
            arrival: a * 10 + 1,
            duration: d * 10,
            cancel_after: c.map(|c| c * 10 + 3),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_request_ends_as_the_timeline_says_and_counts_add_up(
        reqs in proptest::collection::vec(req(), 0..40),
        trigger in 0u64..300,
        delay in 0u64..50,
        drain in 1u64..200,
    ) {
        // Trigger and deadlines end in 5.
        let trigger_at = trigger * 10 + 5;
        let refuse_at = trigger_at + delay * 10;
        let deadline = refuse_at + drain * 10;
        let expected: Vec<End> = reqs
            .iter()
            .map(|r| {
                if r.arrival > refuse_at {
                    return End::Rejected;
                }
                let done = r.arrival + r.duration;
                let cancel = r.cancel_after.map(|c| r.arrival + c);
                let end = done.min(cancel.unwrap_or(u64::MAX));
                if end > deadline {
                    End::Aborted
                } else if cancel.is_some_and(|c| c < done) {
                    End::Cancelled
                } else {
                    End::Ok
                }
            })
            .collect();

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (ends, report, counts) = runtime.block_on(async {
            let shutdown = Shutdown::builder()
                .readiness_delay(Duration::from_millis(delay * 10))
                .drain_timeout(Duration::from_millis(drain * 10))
                .build()
                .unwrap();
            let svc = ShutdownGuard::new(Sleeper, &shutdown);
            let start = Instant::now();
            let tasks: Vec<_> = reqs
                .iter()
                .cloned()
                .map(|r| {
                    let svc = svc.clone();
                    tokio::spawn(async move {
                        let at = start + Duration::from_millis(r.arrival);
                        sleep_until(at).await;
                        let call = svc.oneshot(Duration::from_millis(r.duration));
                        let result = match r.cancel_after {
                            Some(c) => match timeout_at(at + Duration::from_millis(c), call).await {
                                Ok(result) => result,
                                Err(_) => return End::Cancelled,
                            },
                            None => call.await,
                        };
                        match result {
                            Ok(_) => End::Ok,
                            Err(err) if err.downcast_ref::<Aborted>().is_some() => End::Aborted,
                            Err(err) => {
                                assert_eq!(
                                    Rejected::find(&*err).map(Rejected::reason),
                                    Some(RejectReason::ShuttingDown)
                                );
                                End::Rejected
                            }
                        }
                    })
                })
                .collect();
            let trigger = {
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    sleep_until(start + Duration::from_millis(trigger_at)).await;
                    shutdown.trigger();
                })
            };
            let report = shutdown.wait().await;
            assert!(start.elapsed() <= Duration::from_millis(deadline), "done by the deadline");
            trigger.await.unwrap();
            let mut ends = Vec::new();
            for task in tasks {
                ends.push(task.await.unwrap());
            }
            (ends, report, shutdown.counts())
        });

        prop_assert_eq!(&ends, &expected);
        let count = |e: End| ends.iter().filter(|x| **x == e).count() as u64;
        prop_assert_eq!(counts.completed, count(End::Ok));
        prop_assert_eq!(counts.rejected, count(End::Rejected));
        prop_assert_eq!(counts.aborted, count(End::Aborted));
        prop_assert_eq!(counts.cancelled, count(End::Cancelled));
        prop_assert_eq!(counts.in_flight, 0);
        prop_assert_eq!(counts.sent(), reqs.len() as u64);
        // The report was written at termination: later arrivals only add rejections.
        prop_assert_eq!(report.completed, counts.completed);
        prop_assert_eq!(report.aborted, counts.aborted);
        prop_assert_eq!(report.unfinished, 0);
        prop_assert_eq!(report.drained, count(End::Aborted) == 0);
        prop_assert_eq!(
            report.completed + report.rejected + report.aborted + report.cancelled,
            report.sent()
        );
    }
}

//! One outcome classifier, brownout-core's `ClassifyOutcome`, configures both layers that
//! learn from results: the monitor (error rate) and the circuit breaker (failure window).
#![cfg(feature = "monitor")]

use brownout::monitor::Monitor;
use brownout::outcome::any_error_outcome;
use brownout::{BoxError, ClassifyOutcome, LoadLevel, Outcome, RejectReason, Rejected};
use brownout_breaker::{BreakerState, CircuitBreakConfig, CircuitBreakLayer};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn breaker_config() -> CircuitBreakConfig {
    CircuitBreakConfig::builder()
        .consecutive_failures(3)
        .build()
        .unwrap()
}

fn manual_monitor() -> Monitor {
    Monitor::builder()
        .min_error_samples(1)
        .manual_ticks()
        .build()
        .unwrap()
}

/// Asks `svc` for `req`, returning whatever it answers.
async fn ask<S, Req>(svc: &mut S, req: Req) -> Result<S::Response, BoxError>
where
    S: Service<Req, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn one_closure_configures_a_monitor_and_a_circuit_breaker() {
    // Status codes: 5xx fails, the rest succeeds; errors are judged as the default does.
    let classify = |result: &Result<u16, BoxError>| match result {
        Ok(status) if *status >= 500 => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(error) => any_error_outcome(error),
    };
    let monitor = manual_monitor();
    let breaker = CircuitBreakLayer::new(breaker_config()).with_classifier(classify);
    let handle = breaker.handle();
    // Request 0 is refused by a brownout layer further in (as a shed layer would).
    let dependency = service_fn(|status: u16| async move {
        if status == 0 {
            Err::<u16, BoxError>(Rejected::new(RejectReason::Shed, LoadLevel::High).into())
        } else {
            Ok(status)
        }
    });
    let mut svc = ServiceBuilder::new()
        .layer(monitor.layer().with_classifier(classify))
        .layer(breaker)
        .service(dependency);

    for status in [200, 404] {
        assert_eq!(ask(&mut svc, status).await.unwrap(), status);
    }
    // Refusals: not failures for either layer (the breaker's run of failures stays empty).
    for _ in 0..5 {
        assert!(ask(&mut svc, 0).await.is_err());
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    for _ in 0..3 {
        assert_eq!(ask(&mut svc, 500).await.unwrap(), 500);
    }
    assert_eq!(handle.state(), BreakerState::Open);
    // The open breaker's own refusal is, for the monitor outside it, a refusal too.
    let err = ask(&mut svc, 200).await.unwrap_err();
    assert_eq!(
        Rejected::find(&*err).map(Rejected::reason),
        Some(RejectReason::CircuitOpen)
    );
    monitor.tick_now();
    let snapshot = monitor.snapshot();
    assert_eq!((snapshot.completed, snapshot.failures), (5, 3));
}

/// Drives one classifier through a monitor over a circuit breaker: the dependency answers
/// `answer(0)` (a success), `answer(1)` (a brownout refusal answer) and `answer(2)` (its own
/// failure, the level stamped on it). Refusals trip neither layer, three failures open the
/// breaker, whose own refusal the monitor does not count. Returns the answers to `2`.
async fn one_classifier_configures_both<C, B>(
    classify: C,
    answer: fn(u8) -> http::Response<B>,
) -> Vec<http::Response<B>>
where
    C: ClassifyOutcome<http::Response<B>, BoxError> + Clone + Send + Sync + 'static,
    B: Send + 'static,
{
    let dependency = service_fn(move |n: u8| async move { Ok::<_, BoxError>(answer(n)) });
    let monitor = manual_monitor();
    let breaker = CircuitBreakLayer::new(breaker_config()).with_classifier(classify.clone());
    let handle = breaker.handle();
    let mut svc = ServiceBuilder::new()
        .layer(monitor.layer().with_classifier(classify))
        .layer(breaker)
        .service(dependency);

    for n in [0, 1, 1, 1, 1, 0] {
        ask(&mut svc, n).await.unwrap();
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    let mut failures = Vec::new();
    for _ in 0..3 {
        failures.push(ask(&mut svc, 2).await.unwrap());
    }
    assert_eq!(handle.state(), BreakerState::Open);
    // Refused by the open breaker: a refusal for the monitor, not a failure.
    assert!(ask(&mut svc, 0).await.is_err());
    monitor.tick_now();
    let snapshot = monitor.snapshot();
    assert_eq!((snapshot.completed, snapshot.failures), (5, 3));
    failures
}

#[tokio::test(start_paused = true)]
async fn one_http_outcome_configures_a_monitor_and_a_circuit_breaker() {
    use brownout::HttpOutcome;
    use brownout::http::rejection_response;

    // 0 ok, 1 a brownout refusal answer, 2 the dependency's own 503 with the level stamped.
    let failures = one_classifier_configures_both(HttpOutcome, |n| match n {
        0 => http::Response::new(String::new()),
        1 => rejection_response(&Rejected::new(RejectReason::Shed, LoadLevel::High)),
        _ => http::Response::builder()
            .status(503)
            .header("x-load-level", "high")
            .body(String::new())
            .unwrap(),
    })
    .await;
    assert!(failures.iter().all(|r| r.status() == 503));
}

#[cfg(feature = "grpc")]
#[tokio::test(start_paused = true)]
async fn one_grpc_outcome_configures_a_monitor_and_a_circuit_breaker() {
    use brownout::grpc::{GrpcOutcome, rejection_response};

    // 0 OK, 1 a brownout refusal answered as UNAVAILABLE, 2 the handler's own UNAVAILABLE
    // with the level stamped on it.
    one_classifier_configures_both(GrpcOutcome, |n| -> http::Response<()> {
        match n {
            0 => http::Response::builder()
                .header("grpc-status", "0")
                .body(())
                .unwrap(),
            1 => rejection_response(&Rejected::new(RejectReason::QueueFull, LoadLevel::High)),
            _ => http::Response::builder()
                .header("grpc-status", "14")
                .header("x-load-level", "high")
                .body(())
                .unwrap(),
        }
    })
    .await;
}

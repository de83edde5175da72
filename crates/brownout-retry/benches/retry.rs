//! The success path (first attempt ok) of `Retry`, `Hedge` and `AdaptiveThrottle`, against
//! tower's `Retry` with a trivial policy and the bare service, in the same groups.
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brownout_core::BoxError;
use brownout_retry::hedge::{HedgeConfig, HedgeLayer};
use brownout_retry::throttle::{AdaptiveThrottleConfig, AdaptiveThrottleLayer};
use brownout_retry::{RetryBudget, RetryConfig, RetryLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::Layer;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};
use tower_service::Service;

/// An always-ready service answering at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// tower's `Retry` with a policy that clones requests and never retries successes.
#[derive(Clone, Copy)]
struct Trivial;

impl Policy<u64, u64, BoxError> for Trivial {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, BoxError>) -> Option<Ready<()>> {
        result.is_err().then(|| ready(()))
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// tower's `Retry` with its own `TpsBudget`: a deposit per request, a withdrawal per retry.
#[derive(Clone)]
struct TpsPolicy(Arc<TpsBudget>);

impl Policy<u64, u64, BoxError> for TpsPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, BoxError>) -> Option<Ready<()>> {
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// Calls `svc` once and polls the (immediately ready) future to completion.
fn call_once<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, req: u64) {
    assert!(svc.poll_ready(cx).is_ready());
    let fut = pin!(svc.call(req));
    match fut.poll(cx) {
        Poll::Ready(Ok(res)) => {
            black_box(res);
        }
        _ => panic!("the bench services answer at once"),
    }
}

fn success_path(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("retry_success_path");
    let mut bare = Echo;
    group.bench_function("bare_service", |b| {
        b.iter(|| call_once(&mut bare, &mut cx, black_box(1)))
    });
    let mut tower_retry = tower::retry::Retry::new(Trivial, Echo);
    group.bench_function("tower_retry_trivial_policy", |b| {
        b.iter(|| call_once(&mut tower_retry, &mut cx, black_box(1)))
    });
    let mut tower_budget = tower::retry::Retry::new(
        TpsPolicy(Arc::new(TpsBudget::new(Duration::from_secs(10), 1, 0.1))),
        Echo,
    );
    group.bench_function("tower_retry_tps_budget", |b| {
        b.iter(|| call_once(&mut tower_budget, &mut cx, black_box(1)))
    });
    let mut ours = RetryLayer::new(RetryConfig::builder().seed(1).build().unwrap()).layer(Echo);
    group.bench_function("brownout_retry_with_budget", |b| {
        b.iter(|| call_once(&mut ours, &mut cx, black_box(1)))
    });
    let mut unlimited = RetryLayer::new(
        RetryConfig::builder()
            .seed(1)
            .unlimited_budget()
            .build()
            .unwrap(),
    )
    .layer(Echo);
    group.bench_function("brownout_retry_no_budget", |b| {
        b.iter(|| call_once(&mut unlimited, &mut cx, black_box(1)))
    });
    let mut hedge = HedgeLayer::new(HedgeConfig::builder().build().unwrap()).layer(Echo);
    group.bench_function("brownout_hedge_p95", |b| {
        b.iter(|| call_once(&mut hedge, &mut cx, black_box(1)))
    });
    let mut throttle =
        AdaptiveThrottleLayer::new(AdaptiveThrottleConfig::builder().seed(1).build().unwrap())
            .layer(Echo);
    group.bench_function("brownout_adaptive_throttle", |b| {
        b.iter(|| call_once(&mut throttle, &mut cx, black_box(1)))
    });
    group.finish();
}

/// One deposit into each budget, next to the clock read both pay for.
fn budget_deposit(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget_deposit");
    group.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    let tower_budget = TpsBudget::new(Duration::from_secs(10), 1, 0.1);
    group.bench_function("tower_tps_budget", |b| {
        b.iter(|| black_box(&tower_budget).deposit())
    });
    let ours = RetryBudget::new(Duration::from_secs(10), 1.0, 0.1).unwrap();
    group.bench_function("brownout_retry_budget", |b| {
        b.iter(|| black_box(&ours).deposit())
    });
    group.finish();
}

criterion_group!(benches, success_path, budget_deposit);
criterion_main!(benches);

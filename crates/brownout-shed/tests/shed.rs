//! Behaviour of `LoadShed`: the default and custom tables, smooth mode, not-ready mode,
//! classification fallbacks and configuration validation.

use std::convert::Infallible;
use std::time::Duration;

use brownout_core::{
    BoxError, FromExtensions, LevelTable, LoadLevel, LoadSignal, Policy, Priority, PrioritySet,
    RejectReason, Rejected,
};
use brownout_shed::{DEFAULT_RETRY_AFTER, LoadShed, LoadShedConfig, LoadShedLayer};
use proptest::prelude::*;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};

type Echo =
    tower::util::ServiceFn<fn(Priority) -> std::future::Ready<Result<Priority, Infallible>>>;

fn echo() -> Echo {
    service_fn(|p: Priority| std::future::ready(Ok(p)))
}

fn by_request(p: &Priority) -> Priority {
    *p
}

fn shed_service(
    config: LoadShedConfig,
    signal: LoadSignal,
) -> LoadShed<Echo, fn(&Priority) -> Priority> {
    LoadShedLayer::new(config)
        .with_signal(signal)
        .classifier(by_request as fn(&Priority) -> Priority)
        .layer(echo())
}

async fn send<S>(svc: &mut S, req: Priority) -> Result<Priority, BoxError>
where
    S: Service<Priority, Response = Priority, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn rejection(err: &BoxError) -> Rejected {
    *Rejected::find(&**err).expect("a Rejected error")
}

#[tokio::test(start_paused = true)]
async fn every_level_and_class_follows_the_default_table() {
    let table = LevelTable::default_shed();
    for level in LoadLevel::ALL {
        let mut svc = shed_service(LoadShedConfig::default(), LoadSignal::fixed(level));
        for class in Priority::ALL {
            let result = send(&mut svc, class).await;
            if table[level].contains(class) {
                let rejected = rejection(&result.unwrap_err());
                assert_eq!(rejected.reason(), RejectReason::Shed);
                assert_eq!(rejected.level(), level);
                assert_eq!(rejected.priority(), Some(class));
                assert_eq!(rejected.retry_after(), Some(DEFAULT_RETRY_AFTER));
            } else {
                assert_eq!(result.unwrap(), class, "{level} must serve {class}");
            }
        }
    }
    // Spot checks of the design table.
    assert!(!table[LoadLevel::Normal].contains(Priority::Background));
    assert!(table[LoadLevel::Elevated].contains(Priority::Background));
    assert!(!table[LoadLevel::Elevated].contains(Priority::Low));
    assert!(!table[LoadLevel::Emergency].contains(Priority::Critical));
}

#[tokio::test(start_paused = true)]
async fn level_changes_take_effect_on_the_next_request() {
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let mut svc = shed_service(LoadShedConfig::default(), signal);
    assert!(send(&mut svc, Priority::Low).await.is_ok());
    publisher.publish(LoadLevel::High);
    assert_eq!(svc.level(), LoadLevel::High);
    assert!(send(&mut svc, Priority::Low).await.is_err());
    assert!(send(&mut svc, Priority::Medium).await.is_ok());
    publisher.publish(LoadLevel::Normal);
    assert!(send(&mut svc, Priority::Low).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn custom_table_and_retry_after() {
    // A stricter table: Elevated already sheds Low and below; High sheds Medium and below.
    let table = LevelTable::new([
        PrioritySet::EMPTY,
        PrioritySet::at_or_below(Priority::Low),
        PrioritySet::at_or_below(Priority::Medium),
        PrioritySet::at_or_below(Priority::Medium),
        PrioritySet::below(Priority::Critical),
    ]);
    let config = LoadShedConfig::builder()
        .shed_table(table)
        .retry_after(Duration::from_millis(250))
        .build()
        .unwrap();
    assert_eq!(
        config.shed_at(LoadLevel::Elevated),
        table[LoadLevel::Elevated]
    );
    for level in LoadLevel::ALL {
        let mut svc = shed_service(config, LoadSignal::fixed(level));
        for class in Priority::ALL {
            let result = send(&mut svc, class).await;
            assert_eq!(
                result.is_err(),
                table[level].contains(class),
                "{level} {class}"
            );
            if let Err(err) = result {
                assert_eq!(
                    rejection(&err).retry_after(),
                    Some(Duration::from_millis(250))
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn policy_builder_takes_the_shed_table() {
    let policy = Policy {
        shed: LevelTable::default_shed().with(LoadLevel::Elevated, PrioritySet::EMPTY),
        ..Policy::default()
    };
    let config = LoadShedConfig::builder().policy(&policy).build().unwrap();
    let mut svc = shed_service(config, LoadSignal::fixed(LoadLevel::Elevated));
    assert!(send(&mut svc, Priority::Background).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn http_default_classifier_reads_extensions_and_falls_back_to_medium() {
    let inner = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(()) });
    let mut svc = LoadShedLayer::default()
        .with_signal(LoadSignal::fixed(LoadLevel::Critical))
        .layer(inner);

    // No class stored: the default class (Medium) is shed at Critical.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(rejection(&err).priority(), Some(Priority::Medium));

    let mut req = http::Request::new(());
    req.extensions_mut().insert(Priority::High);
    assert!(svc.ready().await.unwrap().call(req).await.is_ok());

    // A different fallback class.
    let mut svc = LoadShed::new(inner, LoadShedConfig::default())
        .with_signal(LoadSignal::fixed(LoadLevel::Critical))
        .classifier(FromExtensions::with_default(Priority::High));
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .is_ok()
    );
}

/// Reads an `x-priority` header, falling back to Medium on anything malformed.
fn header_class(req: &http::Request<()>) -> Priority {
    req.headers()
        .get("x-priority")
        .and_then(|v| v.to_str().ok())
        .map_or(Priority::Medium, Priority::parse_or_default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// RELIABILITY #25: malformed class headers fall back to the default class; no panic.
    #[test]
    fn rel_25_malformed_priority_header_falls_back_to_default(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let inner = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(()) });
            let mut svc = LoadShedLayer::default()
                .with_signal(LoadSignal::fixed(LoadLevel::High))
                .classifier(header_class)
                .layer(inner);
            let mut req = http::Request::new(());
            let expected = match http::HeaderValue::from_bytes(&bytes) {
                Ok(value) => {
                    req.headers_mut().insert("x-priority", value);
                    header_class(&req)
                }
                Err(_) => Priority::Medium,
            };
            let result = svc.ready().await.unwrap().call(req).await;
            // High sheds Low and Background only.
            let shed = matches!(expected, Priority::Low | Priority::Background);
            prop_assert_eq!(result.is_err(), shed);
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn inner_errors_are_boxed_not_rejections() {
    let inner =
        service_fn(|_: Priority| async { Err::<Priority, _>(std::io::Error::other("boom")) });
    let mut svc = LoadShedLayer::default()
        .classifier(by_request as fn(&Priority) -> Priority)
        .layer(inner);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Priority::High)
        .await
        .unwrap_err();
    assert!(Rejected::find(&*err).is_none());
    assert_eq!(err.to_string(), "boom");
}

/// Sends `n` requests of `class` and returns the fraction shed.
async fn shed_share<S>(svc: &mut S, class: Priority, n: u32) -> f64
where
    S: Service<Priority, Response = Priority, Error = BoxError>,
{
    let mut shed = 0;
    for _ in 0..n {
        if send(svc, class).await.is_err() {
            shed += 1;
        }
    }
    f64::from(shed) / f64::from(n)
}

#[tokio::test(start_paused = true)]
async fn smooth_mode_ramps_monotonically_and_sheds_nothing_above_the_boundary() {
    let ramp = Duration::from_secs(10);
    let config = LoadShedConfig::builder()
        .smooth(ramp)
        .seed(42)
        .build()
        .unwrap();
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let mut svc = shed_service(config, signal);
    assert_eq!(shed_share(&mut svc, Priority::Low, 100).await, 0.0);

    publisher.publish(LoadLevel::High); // boundary: Low; below it: Background
    let mut last_share = -1.0;
    let mut last_fraction = -1.0;
    for second in 0..=12u32 {
        let share = shed_share(&mut svc, Priority::Low, 2000).await;
        let fraction = svc.boundary_fraction();
        let expected = (f64::from(second) / 10.0).min(1.0);
        assert!(
            (fraction - expected).abs() < 1e-9,
            "t={second}s fraction {fraction}"
        );
        assert!(
            (share - expected).abs() < 0.05,
            "t={second}s: shed {share}, expected about {expected}"
        );
        assert!(fraction >= last_fraction, "fraction must never fall");
        assert!(
            share >= last_share - 0.02,
            "share must not fall (t={second}s)"
        );
        last_share = share;
        last_fraction = fraction;
        // Below the boundary: always shed. Above: never.
        assert_eq!(shed_share(&mut svc, Priority::Background, 50).await, 1.0);
        for class in [Priority::Medium, Priority::High, Priority::Critical] {
            assert_eq!(shed_share(&mut svc, class, 50).await, 0.0, "{class}");
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(shed_share(&mut svc, Priority::Low, 500).await, 1.0);
}

#[tokio::test(start_paused = true)]
async fn smooth_mode_fine_grained_fraction_never_decreases() {
    let config = LoadShedConfig::builder()
        .smooth(Duration::from_millis(1000))
        .build()
        .unwrap();
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let mut svc = shed_service(config, signal);
    let _ = send(&mut svc, Priority::Medium).await;
    publisher.publish(LoadLevel::Critical);
    let _ = send(&mut svc, Priority::Medium).await;
    let mut last = svc.boundary_fraction();
    assert_eq!(last, 0.0);
    for _ in 0..1200 {
        tokio::time::advance(Duration::from_millis(1)).await;
        let now = svc.boundary_fraction();
        assert!(now >= last && now <= 1.0);
        last = now;
    }
    assert_eq!(last, 1.0);
}

#[tokio::test(start_paused = true)]
async fn smooth_mode_falling_level_keeps_the_new_boundary_fully_shed() {
    let config = LoadShedConfig::builder()
        .smooth(Duration::from_secs(10))
        .build()
        .unwrap();
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let mut svc = shed_service(config, signal);
    let _ = send(&mut svc, Priority::High).await;
    publisher.publish(LoadLevel::Critical); // boundary Medium, ramping
    assert!(shed_share(&mut svc, Priority::Medium, 200).await < 0.1);
    assert_eq!(shed_share(&mut svc, Priority::Low, 200).await, 1.0);
    publisher.publish(LoadLevel::High); // boundary Low: was fully shed at Critical
    assert_eq!(shed_share(&mut svc, Priority::Low, 200).await, 1.0);
    assert_eq!(shed_share(&mut svc, Priority::Medium, 200).await, 0.0);
}

#[tokio::test(start_paused = true)]
async fn smooth_mode_same_boundary_keeps_its_ramp_and_clones_share_it() {
    // Critical and Emergency shed the same classes here: moving between them keeps the ramp.
    let table = LevelTable::default_shed().with(
        LoadLevel::Emergency,
        PrioritySet::at_or_below(Priority::Medium),
    );
    let config = LoadShedConfig::builder()
        .shed_table(table)
        .smooth(Duration::from_secs(10))
        .build()
        .unwrap();
    let (publisher, signal) = LoadSignal::channel(LoadLevel::High);
    let mut svc = shed_service(config, signal);
    let mut clone = svc.clone();
    let _ = send(&mut svc, Priority::High).await;
    publisher.publish(LoadLevel::Critical);
    let _ = send(&mut svc, Priority::High).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    publisher.publish(LoadLevel::Emergency);
    let _ = send(&mut clone, Priority::High).await;
    assert!((clone.boundary_fraction() - 0.5).abs() < 1e-9);
    assert!((svc.boundary_fraction() - 0.5).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn smooth_mode_first_level_seen_is_shed_as_configured() {
    let config = LoadShedConfig::builder()
        .smooth(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut svc = shed_service(config, LoadSignal::fixed(LoadLevel::High));
    assert_eq!(shed_share(&mut svc, Priority::Low, 100).await, 1.0);
}

#[tokio::test(start_paused = true)]
async fn smooth_mode_is_reproducible_for_a_seed() {
    async fn trace(seed: u64) -> Vec<bool> {
        let config = LoadShedConfig::builder()
            .smooth(Duration::from_secs(10))
            .seed(seed)
            .build()
            .unwrap();
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        let mut svc = shed_service(config, signal);
        let _ = send(&mut svc, Priority::High).await;
        publisher.publish(LoadLevel::High);
        let _ = send(&mut svc, Priority::High).await; // the layer sees the new level
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut out = Vec::new();
        for _ in 0..64 {
            out.push(send(&mut svc, Priority::Low).await.is_err());
        }
        out
    }
    assert_eq!(trace(1).await, trace(1).await);
    assert_ne!(trace(1).await, trace(2).await);
}

fn not_ready_config() -> LoadShedConfig {
    LoadShedConfig::builder()
        .shed_when_not_ready(true)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn not_ready_mode_sheds_when_the_inner_service_is_not_ready() {
    let (inner, mut handle) = tower_test::mock::pair::<Priority, Priority>();
    let mut svc = LoadShedLayer::new(not_ready_config())
        .classifier(by_request as fn(&Priority) -> Priority)
        .layer(inner);
    let mut task = tokio_test::task::spawn(());

    handle.allow(0);
    // Always ready, like tower's LoadShed...
    task.enter(|cx, _| assert_ready_ok!(svc.poll_ready(cx)));
    // ...but the request is shed because the inner service was not.
    let err = svc.call(Priority::Critical).await.unwrap_err();
    let rejected = rejection(&err);
    assert_eq!(rejected.reason(), RejectReason::Shed);
    assert_eq!(rejected.priority(), Some(Priority::Critical));

    handle.allow(1);
    task.enter(|cx, _| assert_ready_ok!(svc.poll_ready(cx)));
    let fut = svc.call(Priority::High);
    let (req, send_response) = handle.next_request().await.unwrap();
    assert_eq!(req, Priority::High);
    send_response.send_response(Priority::High);
    assert_eq!(fut.await.unwrap(), Priority::High);

    // Readiness is consumed by the call: a call without a fresh poll_ready is shed.
    assert!(svc.call(Priority::High).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn not_ready_mode_returns_inner_poll_ready_errors() {
    let (inner, mut handle) = tower_test::mock::pair::<Priority, Priority>();
    let mut svc = LoadShedLayer::new(not_ready_config())
        .classifier(by_request as fn(&Priority) -> Priority)
        .layer(inner);
    handle.send_error(std::io::Error::other("broken"));
    let mut task = tokio_test::task::spawn(());
    task.enter(|cx, _| {
        let err = match svc.poll_ready(cx) {
            std::task::Poll::Ready(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        };
        assert_eq!(err.to_string(), "broken");
    });
}

#[tokio::test(start_paused = true)]
async fn default_mode_forwards_inner_readiness() {
    let (inner, mut handle) = tower_test::mock::pair::<Priority, Priority>();
    let mut svc = LoadShedLayer::default()
        .classifier(by_request as fn(&Priority) -> Priority)
        .layer(inner);
    let mut task = tokio_test::task::spawn(());
    handle.allow(0);
    task.enter(|cx, _| assert_pending!(svc.poll_ready(cx)));
    handle.allow(1);
    assert!(task.is_woken());
    task.enter(|cx, _| assert_ready_ok!(svc.poll_ready(cx)));
}

#[tokio::test(start_paused = true)]
async fn rel_01_poll_ready_without_call_holds_nothing() {
    for config in [LoadShedConfig::default(), not_ready_config()] {
        let (inner, mut handle) = tower_test::mock::pair::<Priority, Priority>();
        let mut idle = LoadShedLayer::new(config)
            .classifier(by_request as fn(&Priority) -> Priority)
            .layer(inner);
        let mut busy = idle.clone();
        handle.allow(1);
        let mut task = tokio_test::task::spawn(());
        // An idle keep-alive connection: ready, never called.
        task.enter(|cx, _| assert_ready_ok!(idle.poll_ready(cx)));
        // The next connection's request is admitted.
        task.enter(|cx, _| assert_ready_ok!(busy.poll_ready(cx)));
        let fut = busy.call(Priority::Low);
        let (_, send_response) = handle.next_request().await.unwrap();
        send_response.send_response(Priority::Low);
        assert_eq!(fut.await.unwrap(), Priority::Low);
        drop(idle);
    }
}

#[tokio::test(start_paused = true)]
async fn clones_do_not_inherit_readiness_in_not_ready_mode() {
    let (inner, mut handle) = tower_test::mock::pair::<Priority, Priority>();
    let mut svc = LoadShedLayer::new(not_ready_config())
        .classifier(by_request as fn(&Priority) -> Priority)
        .layer(inner);
    handle.allow(1);
    let mut task = tokio_test::task::spawn(());
    task.enter(|cx, _| assert_ready_ok!(svc.poll_ready(cx)));
    let mut clone = svc.clone();
    // The clone never polled readiness: its request is shed, and the mock is never called.
    assert!(clone.call(Priority::High).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn rel_02_dropping_the_future_drops_the_inner_future() {
    let (inner, mut handle) = tower_test::mock::pair::<Priority, Priority>();
    let mut svc = LoadShedLayer::default()
        .classifier(by_request as fn(&Priority) -> Priority)
        .layer(inner);
    handle.allow(1);
    let fut = svc.ready().await.unwrap().call(Priority::High);
    let (_, send_response) = handle.next_request().await.unwrap();
    drop(fut);
    // The receiving end is gone with the dropped future.
    send_response.send_response(Priority::High);
    // A shed future holds nothing either.
    let mut svc = LoadShedLayer::default()
        .with_signal(LoadSignal::fixed(LoadLevel::Emergency))
        .classifier(by_request as fn(&Priority) -> Priority)
        .layer(echo());
    // The shed future is dropped unpolled at the end of this statement.
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Priority::Low)
            .rejection()
            .is_some()
    );
    assert_eq!(
        send(&mut svc, Priority::Critical).await.unwrap(),
        Priority::Critical
    );
}

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let err = LoadShedConfig::builder()
        .shed_table(LevelTable::default_shed().with(LoadLevel::Critical, PrioritySet::EMPTY))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "shed[critical]");

    let err = LoadShedConfig::builder()
        .shed_table(LevelTable::default_shed().with(LoadLevel::Emergency, PrioritySet::ALL))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "shed[emergency]");

    let err = LoadShedConfig::builder()
        .retry_after(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "retry_after");

    let err = LoadShedConfig::builder()
        .smooth(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "smooth_ramp");
    assert!(err.to_string().contains("smooth_ramp"));

    assert!(LoadShedConfig::builder().build().is_ok());
    LoadShedConfig::default().validate().unwrap();
}

proptest! {
    /// Any table is accepted exactly when each level sheds a superset of the level below
    /// and no level sheds every class; a refusal names the offending `shed[level]` entry.
    #[test]
    fn shed_table_validation(masks in proptest::array::uniform5(0u8..32)) {
        let sets = masks.map(|m| Priority::ALL.into_iter().filter(|p| m & (1 << p.rank()) != 0).collect::<PrioritySet>());
        let table = LevelTable::new(sets);
        let monotone = sets.windows(2).all(|w| w[0].is_subset(w[1]));
        let never_all = sets.iter().all(|s| *s != PrioritySet::ALL);
        let result = LoadShedConfig::builder().shed_table(table).build();
        prop_assert_eq!(result.is_ok(), monotone && never_all);
        if let Err(err) = result {
            let named = LoadLevel::ALL.iter().any(|l| err.field() == format!("shed[{l}]"));
            prop_assert!(named, "{}", err.field());
        }
    }
}

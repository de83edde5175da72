//! `Brownout::builder()`: a layer's own settings win over the stack-wide policy, in
//! whichever order they are given, and repeated calls to a layer's configurator add up.

use std::convert::Infallible;

use brownout::{Brownout, BrownoutBuilder, LevelTable, LoadLevel, Policy, Priority, PrioritySet};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A shed table that sheds nothing, below every level of the default policy.
fn never_shed() -> LevelTable<PrioritySet> {
    LevelTable::from_fn(|_| PrioritySet::EMPTY)
}

/// Builds the stack, forces `level` and returns the status a `class` request gets.
async fn status_at(builder: BrownoutBuilder, level: LoadLevel, class: &str) -> u16 {
    let brownout = builder.without_admission().build().unwrap();
    let mut svc = brownout
        .layer()
        .layer(service_fn(|_req: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(String::new()))
        }));
    brownout.publisher().force(level);
    let request = http::Request::get("/")
        .header("x-priority", class)
        .body(())
        .unwrap();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    response.status().as_u16()
}

#[tokio::test(start_paused = true)]
async fn the_default_policy_sheds_background_at_elevated() {
    let status = status_at(Brownout::builder(), LoadLevel::Elevated, "background").await;
    assert_eq!(status, 503);
}

#[tokio::test(start_paused = true)]
async fn a_shed_table_given_after_the_policy_wins() {
    let builder = Brownout::builder()
        .policy(Policy::default())
        .shed(|s| s.shed_table(never_shed()));
    assert_eq!(
        status_at(builder, LoadLevel::Emergency, "background").await,
        200
    );
}

#[tokio::test(start_paused = true)]
async fn a_shed_table_given_before_the_policy_still_wins() {
    let builder = Brownout::builder()
        .shed(|s| s.shed_table(never_shed()))
        .policy(Policy::default());
    assert_eq!(
        status_at(builder, LoadLevel::Emergency, "background").await,
        200
    );
}

#[tokio::test(start_paused = true)]
async fn the_policy_still_applies_where_the_layer_sets_nothing() {
    let policy = Policy {
        shed: LevelTable::from_fn(|level| {
            if level >= LoadLevel::Elevated {
                PrioritySet::only(Priority::Low)
            } else {
                PrioritySet::EMPTY
            }
        }),
        ..Policy::default()
    };
    let builder = Brownout::builder()
        .shed(|s| s.retry_after(std::time::Duration::from_secs(2)))
        .policy(policy);
    assert_eq!(status_at(builder, LoadLevel::Elevated, "low").await, 503);
}

#[tokio::test(start_paused = true)]
async fn shed_configurators_add_up_the_later_winning() {
    let builder = Brownout::builder()
        .shed(|s| s.shed_table(LevelTable::from_fn(|_| PrioritySet::ALL)))
        .shed(|s| s.retry_after(std::time::Duration::from_secs(3)))
        .shed(|s| s.shed_table(never_shed()));
    assert_eq!(status_at(builder, LoadLevel::Emergency, "low").await, 200);
}

//! The reliability suite: every case of `RELIABILITY.md`, integrated.
//!
//! The unit tests inside each crate check one layer against a `tower_test` mock. The tests
//! here check the same failure where users meet it: through the facade's stack
//! (`Brownout::builder()` / `Brownout::grpc_builder()`), or the layers stacked as a user
//! would (a retry and a breaker inside a handler, the shutdown body guard outside the
//! facade, a per-client rate limit beside it). They are deterministic: tokio's paused
//! clock, seeded RNGs, proptest with fixed case counts. Two tests use real sockets and real
//! time: the shutdown of an axum server under load (here) and the soak (`tests/soak.rs`).
//!
//! Each test is named after its case (`rel_NN_…`) and its doc comment says what it proves.
//!
//! | # | case | this suite | unit tests elsewhere |
//! |---|---|---|---|
//! | 1 | `poll_ready` without `call` | [`admission::rel_01_poll_ready_without_call_holds_nothing`] | admission, monitor, shed, shutdown `rel_01_*`; breaker `rel_01_poll_ready_takes_no_probe`; retry `rel_01_*` |
//! | 2 | dropped while queued, running, in back-off, probing | [`admission::rel_02_dropped_futures_return_permits_slots_budget_and_probes`], proptest [`queue_prop`] | admission `rel_02_*` (3); retry `rel_02_cancel_during_backoff_returns_the_budget`, budget `rel_02_dropped_token_returns_the_retry`, hedge; timeout, shed, monitor, shutdown `rel_02_*` |
//! | 3 | 1000 racing clones | [`admission::rel_03_thousand_clones_racing_respect_the_limit_together`] | admission `concurrency.rs`; shutdown, retry `rel_03_*` |
//! | 4 | handler panics | [`admission::rel_04_handler_panic_answers_500_and_releases_everything`] | admission, monitor, shutdown `rel_04_*`; breaker `rel_04_panicking_probe_gives_its_slot_back` |
//! | 5 | streaming body | [`admission::rel_05_streaming_body_permit_released_at_head_and_drain_waits_for_the_body`] | shutdown `body.rs` `rel_05_*` (documented choice: admission frees at the head, the body guard holds until the end) |
//! | 6 | overload behind an axum `Router` | [`admission::rel_06_overload_behind_axum_router_is_shed_not_queued_without_bound`] | admission `http.rs` |
//! | 7 | overload in a tonic server | [`grpc::rel_07_grpc_overload_answers_unavailable_or_resource_exhausted_with_pushback`] | brownout `grpc/status.rs`, `grpc/tests.rs` `rel_07_*`; examples/tonic-greeter `tests/serve.rs` (real tonic client) |
//! | 8 | priority queue full, starvation | [`admission::rel_08_full_queue_evicts_lowest_class_and_low_is_not_starved`] | admission `rel_08_*` (3) |
//! | 9 | adaptive limit under errors / latency | [`admission::rel_09_adaptive_limits_stay_at_least_min_under_errors_and_latency`] | admission `limit.rs` `rel_09_*` (2) |
//! | 10 | invalid configuration | [`config::rel_10_bad_configuration_refused_at_build_naming_the_field`] | `rel_10_*` in admission, monitor, retry (5), shutdown (2) |
//! | 11 | back-off at attempt 64 / 1000 | [`dependencies::rel_11_backoff_monotone_saturating_never_zero_through_70_attempts`] | retry `backoff.rs` `rel_11_*` (2, one proptest) |
//! | 12 | non-cloneable body, empty budget | [`dependencies::rel_12_uncopyable_body_or_empty_budget_means_one_attempt_and_the_original_error`] | retry `rel_12_*` (2) |
//! | 13 | retry at level High | [`dependencies::rel_13_retries_suppressed_while_the_stack_level_is_high`] | retry `rel_13_*`, hedge `rel_13_no_hedge_at_high_level` |
//! | 14 | exactly N half-open probes | [`dependencies::rel_14_exactly_n_half_open_probes_through_the_stack_rest_fail_fast`] | breaker `rel_14_*` (2) |
//! | 15 | probe dropped or hung | [`dependencies::rel_15_dropped_or_hung_probe_never_leaves_the_breaker_half_open`] | breaker `rel_15_*` (3) |
//! | 16 | ready at the deadline instant | [`timeouts::rel_16_response_ready_at_the_deadline_wins_deterministically`] | timeout `rel_16_response_ready_at_the_deadline_wins` |
//! | 17 | timeout 0 / `MAX`, past deadline | [`timeouts::rel_17_past_deadline_refused_at_once_and_duration_max_means_no_timer`] | timeout `rel_17_*` (3), admission `rel_17_*`, shutdown `rel_17_*` |
//! | 18 | adaptive timeout: no samples, outlier | [`timeouts::rel_18_no_samples_use_the_initial_timeout_and_an_outlier_stays_within_bounds`] | timeout `rel_18_*` (4) |
//! | 19 | publisher dropped | [`config::rel_19_publisher_dropped_readers_keep_the_last_level_without_busy_loop`] | monitor `rel_19_*`; core `signal.rs` |
//! | 20 | shutdown with in-flight, queued, idle, SSE | [`shutdown::rel_20_shutdown_with_in_flight_queued_idle_and_streaming`], [`shutdown::rel_20_hung_request_and_endless_stream_aborted_at_the_drain_deadline`], [`shutdown::shutdown_under_load_every_request_answered_and_counted`] (real server), [`shutdown::rel_20_requests_during_the_readiness_delay_are_served`] | shutdown `rel_20_*` (6), admission `rel_20_*` |
//! | 21 | trigger twice / before serving | [`shutdown::rel_21_trigger_before_serving_and_twice_is_idempotent`] | shutdown `rel_21_*` (4) |
//! | 22 | loom interleavings | — (model checking lives with the code) | core `tests/loom.rs`, admission `tests/loom.rs` `rel_22_*` (5); run with `scripts/loom.sh` |
//! | 23 | latency knee at K | [`overload::rel_23_gradient_limit_of_the_stack_settles_near_the_backend_knee`] | admission `adaptive.rs` `rel_23_*` (2); brownout-sim `targets.rs` `rel_23_adaptive_limit_settles_near_the_backend_knee` |
//! | 24 | woken once, no self-wake | [`admission::rel_24_waiting_request_woken_once_without_self_wake`] | admission `rel_24_waiter_woken_once_without_self_wake` |
//! | 25 | malformed headers | [`headers::rel_25_malformed_headers_default_or_ignored_never_a_panic`] (proptest) | brownout `classify.rs`, `keys.rs`; shed; timeout; retry `pushback.rs` `rel_25_*` |
//! | 26 | 10× overload, sustained | [`overload::rel_26_ten_times_overload_for_30s_bounded_and_every_request_answered`] (simulated); `tests/soak.rs` `rel_26_soak_ten_times_capacity_on_loopback_bounded_and_answered` (real sockets) | admission `rel_26_burst_of_100x_capacity_keeps_queue_bounded` |

mod admission;
#[path = "../common/mod.rs"]
mod common;
mod config;
mod dependencies;
mod grpc;
mod headers;
mod overload;
mod queue_prop;
mod shutdown;
mod support;
mod timeouts;

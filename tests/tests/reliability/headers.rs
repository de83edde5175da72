//! Malformed request headers through the whole stack: case 25 (proptest).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use brownout::admission::{PriorityAdmissionLayer, RateLimit};
use brownout::http::ClientIp;
use brownout::{Brownout, Deadline, LoadLevel, Priority, parse_grpc_timeout};
use proptest::prelude::*;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// What the stack should make of the priority headers: `x-priority` first, then RFC 9218
/// `priority`, else the default class (Medium).
fn expected_class(x_priority: &[u8], priority: &[u8]) -> Priority {
    let text = |bytes: &[u8]| {
        http::HeaderValue::from_bytes(bytes)
            .ok()
            .and_then(|v| v.to_str().ok().map(str::to_owned))
    };
    text(x_priority)
        .and_then(|v| v.parse::<Priority>().ok())
        .or_else(|| text(priority).and_then(|v| Priority::from_rfc9218(&v)))
        .unwrap_or(Priority::Medium)
}

fn insert(req: &mut http::Request<String>, name: &'static str, bytes: &[u8]) {
    // Bytes a server could not have received as a header value are not sent.
    if let Ok(value) = http::HeaderValue::from_bytes(bytes) {
        req.headers_mut().insert(name, value);
    }
}

fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "[ -~]{0,24}".prop_map(String::into_bytes),
        prop::sample::select(vec![
            "high",
            "LOW",
            " 0 ",
            "4",
            "5",
            "u=0",
            "u=7, i",
            "u=-1",
            "u=99999999999",
            "10m",
            "0n",
            "999999999H",
            "1.5S",
            "-3m",
            "10.0.0.9, 203.0.113.7",
            ",,,",
            "::1, x",
            "255.255.255.255.1",
            "\u{7f}",
        ])
        .prop_map(|s: &str| s.as_bytes().to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// RELIABILITY #25: arbitrary `x-priority`, `priority`, `grpc-timeout` and
    /// `x-forwarded-for` values through the whole stack (with a per-client-IP rate limit
    /// trusting a proxy network, so `x-forwarded-for` is parsed) never panic and never answer
    /// 500: a malformed class header means the default class, a malformed `grpc-timeout`
    /// means no caller deadline, a malformed `x-forwarded-for` means the peer address.
    #[test]
    fn rel_25_malformed_headers_default_or_ignored_never_a_panic(
        x_priority in header_bytes(),
        priority in header_bytes(),
        grpc_timeout in header_bytes(),
        forwarded in header_bytes(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let brownout = Brownout::builder()
                .monitor(|m| m.interval(Duration::from_secs(3600)))
                .without_timeout()
                .build()
                .unwrap();
            brownout.publisher().force(LoadLevel::Normal);
            let client_ip = ClientIp::trusting(["10.0.0.0/8"]).unwrap();
            let per_client = PriorityAdmissionLayer::builder()
                .keyed_rate_limit(
                    move |req: &http::Request<String>| client_ip.key(req),
                    RateLimit::per_second(1000.0),
                )
                .build()
                .unwrap();
            let echo = service_fn(|req: http::Request<String>| async move {
                let class = req.extensions().get::<Priority>().copied();
                let deadline = Deadline::of(req.extensions()).is_some();
                Ok::<_, Infallible>(http::Response::new(format!("{class:?} {deadline}")))
            });
            let svc = ServiceBuilder::new()
                .layer(brownout.layer())
                .layer(per_client)
                .service(echo);

            let mut req = http::Request::get("/").body(String::new()).unwrap();
            req.extensions_mut().insert("10.1.2.3:443".parse::<SocketAddr>().unwrap());
            insert(&mut req, "x-priority", &x_priority);
            insert(&mut req, "priority", &priority);
            insert(&mut req, "grpc-timeout", &grpc_timeout);
            insert(&mut req, "x-forwarded-for", &forwarded);
            let sent_timeout = req.headers().get("grpc-timeout").map(|v| v.as_bytes().to_vec());

            let response = svc.oneshot(req).await.unwrap();
            let status = response.status().as_u16();
            prop_assert!(status == 200 || status == 503 || status == 504, "{response:?}");
            if status == 200 {
                let class = expected_class(&x_priority, &priority);
                let deadline = sent_timeout
                    .as_deref()
                    .and_then(parse_grpc_timeout)
                    .is_some();
                prop_assert_eq!(
                    response.body(),
                    &format!("{:?} {deadline}", Some(class))
                );
            } else {
                // Only an already-expired caller deadline is refused.
                let parsed = sent_timeout.as_deref().and_then(parse_grpc_timeout);
                prop_assert!(parsed.is_some_and(|d| d < Duration::from_millis(1)), "{response:?}");
            }
            Ok(())
        })?;
    }
}

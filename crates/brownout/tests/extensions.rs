//! What `Brownout::builder()`'s stack puts in a request's extensions, whether the request
//! arrives with extensions of its own or with none.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use brownout::http::Degradation;
use brownout::{Brownout, Deadline, LoadLevel, Priority};
use tower::{Layer, Service, ServiceExt, service_fn};

/// What the handler found in the extensions.
#[derive(Debug, PartialEq)]
struct Seen {
    priority: Option<Priority>,
    deadline: bool,
    level: Option<LoadLevel>,
    degradation_level: Option<LoadLevel>,
    peer: Option<SocketAddr>,
    count: usize,
}

async fn seen(peer: Option<SocketAddr>) -> Seen {
    let brownout = Brownout::builder().build().unwrap();
    brownout.publisher().force(LoadLevel::Elevated);
    let record = Arc::new(Mutex::new(None));
    let recorder = record.clone();
    let mut svc = brownout
        .layer()
        .layer(service_fn(move |req: http::Request<()>| {
            let e = req.extensions();
            *recorder.lock().unwrap() = Some(Seen {
                priority: e.get::<Priority>().copied(),
                deadline: Deadline::of(e).is_some(),
                level: e.get::<LoadLevel>().copied(),
                degradation_level: e.get::<Degradation>().map(Degradation::level),
                peer: e.get::<SocketAddr>().copied(),
                count: e.len(),
            });
            async { Ok::<_, Infallible>(http::Response::new(String::new())) }
        }));
    let mut request = http::Request::get("/")
        .header("x-priority", "high")
        .body(())
        .unwrap();
    if let Some(peer) = peer {
        request.extensions_mut().insert(peer);
    }
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), 200);
    record.lock().unwrap().take().expect("the handler ran")
}

#[tokio::test(start_paused = true)]
async fn a_request_without_extensions_gets_the_stacks_four() {
    let expected = Seen {
        priority: Some(Priority::High),
        deadline: true,
        level: Some(LoadLevel::Elevated),
        degradation_level: Some(LoadLevel::Elevated),
        peer: None,
        count: 4,
    };
    assert_eq!(seen(None).await, expected);
}

#[tokio::test(start_paused = true)]
async fn a_request_with_extensions_keeps_them_and_gets_the_stacks_four() {
    let addr: SocketAddr = "10.0.0.1:443".parse().unwrap();
    let expected = Seen {
        priority: Some(Priority::High),
        deadline: true,
        level: Some(LoadLevel::Elevated),
        degradation_level: Some(LoadLevel::Elevated),
        peer: Some(addr),
        count: 5,
    };
    assert_eq!(seen(Some(addr)).await, expected);
}

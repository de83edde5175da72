//! The open-loop load generator: Poisson arrivals on an absolute timeline, sent over h2c
//! keep-alive connections, timed from the moment each request was *meant* to leave.
//!
//! - [`arrivals`] draws the timeline once per phase from a seeded RNG (inter-arrival times,
//!   classes, work), so the three stacks see the same requests.
//! - [`drive`] sends each request at `t0 + at` (never waiting for earlier answers: open
//!   loop), on one of a fixed set of HTTP/2 connections opened before the run; a request is
//!   never held back by an answer that has not come. Latency runs from the intended send
//!   time, so a late send counts against the stack — no coordinated omission — and how late
//!   each send was is recorded ([`Record::lateness`]) to check that the generator kept its
//!   schedule.
//! - The client gives up at its deadline (`intended + deadline`): the stream is reset, the
//!   server sees the cancellation, and the request counts as failed. The server learns the
//!   deadline from a `grpc-timeout` header (`DeadlineLayer` reads it) holding what is left.
//!
//! HTTP/2 rather than HTTP/1.1: a client that gives up on an HTTP/1.1 request must close the
//! connection, so a collapsing server would churn thousands of connections per second; on
//! HTTP/2 giving up resets one stream, which the server sees exactly as a disconnect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brownout::{LoadLevel, Priority};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::servers::{PING_PATH, WORK_HEADER, WORK_PATH, WORKED_HEADER};

/// The class mix: share of arrivals per class, Critical first (10 / 30 / 30 / 20 / 10 %).
pub const MIX: [f64; Priority::COUNT] = [0.10, 0.30, 0.30, 0.20, 0.10];

/// One request of a phase's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When it is meant to be sent, from the start of the run.
    pub at: Duration,
    /// Its class (sent as `x-priority`).
    pub class: Priority,
    /// Its work on an idle backend worker, in whole milliseconds (sent as `x-work-ms`).
    pub work_ms: u32,
}

/// Draws Poisson arrivals at `rate` per second for `duration`, classes from `mix`, and work
/// exponentially distributed with mean `mean_work` (in whole milliseconds, at least 1: a
/// geometric draw on 1, 2, 3 … ms whose mean is the mean), all from `seed`.
pub fn arrivals(
    rate: f64,
    duration: Duration,
    mix: &[f64; Priority::COUNT],
    mean_work: Duration,
    seed: u64,
) -> Vec<Arrival> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let total: f64 = mix.iter().map(|w| w.max(0.0)).sum();
    let end = duration.as_secs_f64();
    let mut out = Vec::with_capacity((rate * end * 1.1) as usize + 16);
    if !(rate.is_finite() && rate > 0.0 && total > 0.0) {
        return out;
    }
    let mean_ms = mean_work.as_secs_f64() * 1000.0;
    let mut t = 0.0f64;
    loop {
        let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        t += -u.ln() / rate;
        if t >= end {
            break;
        }
        let mut pick = rng.random::<f64>() * total;
        let mut class = Priority::Background;
        for (p, w) in Priority::ALL.into_iter().zip(mix) {
            let w = w.max(0.0);
            if pick < w {
                class = p;
                break;
            }
            pick -= w;
        }
        let work_ms = if mean_ms <= 1.0 {
            1.0
        } else {
            let p = 1.0 / mean_ms;
            let u: f64 = 1.0 - rng.random::<f64>();
            (u.ln() / (1.0 - p).ln()).ceil().clamp(1.0, 60_000.0)
        };
        out.push(Arrival {
            at: Duration::from_secs_f64(t),
            class,
            work_ms: work_ms as u32,
        });
    }
    out
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer within the deadline, with the nominal worker time it used.
    Ok {
        /// Worker time the backend spent on it (work × slowdown factor, as measured).
        worked: Duration,
    },
    /// A refusal within the deadline: 503 / 429 / 504 with the reason from the body.
    Rejected {
        /// The status code.
        status: u16,
        /// The reason (`shed`, `queue_timeout`, `overloaded`, …: the body up to its `:`).
        reason: String,
    },
    /// No usable answer.
    Failed(Failure),
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// The client gave up at its deadline.
    GaveUp,
    /// The connection or stream failed.
    Connection,
    /// Another status (e.g. 500).
    Status(u16),
}

impl Failure {
    /// A short label for tables and JSON.
    pub fn label(self) -> String {
        match self {
            Failure::GaveUp => "gave_up".to_owned(),
            Failure::Connection => "connection".to_owned(),
            Failure::Status(code) => format!("status_{code}"),
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its class.
    pub class: Priority,
    /// When it was meant to leave, from the start of the run.
    pub at: Duration,
    /// How late it actually left (the generator's schedule check).
    pub lateness: Duration,
    /// From the intended send time to the answer (or to giving up).
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// The server's `x-load-level`, when it sent one.
    pub level: Option<LoadLevel>,
}

/// A set of HTTP/2 (h2c) connections to one server, used round-robin.
#[derive(Debug)]
pub struct Client {
    senders: Vec<SendRequest<Empty<Bytes>>>,
    next: AtomicUsize,
    work: Uri,
}

/// Errors while connecting.
pub type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl Client {
    /// Opens `connections` (at least 1) h2c connections to `addr` and sends one ping on each.
    ///
    /// # Errors
    ///
    /// When a connection or its ping fails.
    pub async fn connect(addr: SocketAddr, connections: usize) -> Result<Client, ConnectError> {
        let mut senders = Vec::with_capacity(connections.max(1));
        let ping: Uri = format!("http://{addr}{PING_PATH}").parse()?;
        for _ in 0..connections.max(1) {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .handshake(TokioIo::new(stream))
                    .await?;
            tokio::spawn(connection);
            sender.ready().await?;
            let mut req = Request::new(Empty::<Bytes>::new());
            *req.uri_mut() = ping.clone();
            let response = sender.send_request(req).await?;
            response.into_body().collect().await?;
            senders.push(sender);
        }
        Ok(Client {
            senders,
            next: AtomicUsize::new(0),
            work: format!("http://{addr}{WORK_PATH}").parse()?,
        })
    }

    fn pick(&self) -> SendRequest<Empty<Bytes>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        self.senders[i].clone()
    }
}

const PRIORITY_HEADER: HeaderName = HeaderName::from_static("x-priority");
const TIMEOUT_HEADER: HeaderName = HeaderName::from_static("grpc-timeout");
const LEVEL_HEADER: HeaderName = HeaderName::from_static("x-load-level");

/// Sends `arrivals` through `client`, each at `t0 + at`, each given up at `t0 + at +
/// deadline`; returns one record per arrival (in completion order). `on_sent` is called
/// with the number sent so far after each send.
///
/// Bounded: every request ends by its deadline, so the call returns at most `deadline`
/// after the last intended send time (plus the generator's own lateness).
pub async fn drive(
    client: &Client,
    arrivals: &[Arrival],
    t0: Instant,
    deadline: Duration,
    on_sent: &(dyn Fn(usize) + Sync),
) -> Vec<Record> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (n, arrival) in arrivals.iter().copied().enumerate() {
        let intended = t0 + arrival.at;
        if Instant::now() < intended {
            tokio::time::sleep_until(intended).await;
        }
        let sender = client.pick();
        let uri = client.work.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let record = one(sender, uri, arrival, intended, deadline).await;
            let _ = tx.send(record);
        });
        on_sent(n + 1);
    }
    drop(tx);
    let mut records = Vec::with_capacity(arrivals.len());
    while let Some(record) = rx.recv().await {
        records.push(record);
    }
    records
}

async fn one(
    mut sender: SendRequest<Empty<Bytes>>,
    uri: Uri,
    arrival: Arrival,
    intended: Instant,
    deadline: Duration,
) -> Record {
    let sent = Instant::now();
    let lateness = sent.saturating_duration_since(intended);
    let remaining = deadline.saturating_sub(lateness);
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(
        PRIORITY_HEADER,
        HeaderValue::from_static(arrival.class.as_str()),
    );
    headers.insert(WORK_HEADER, HeaderValue::from(arrival.work_ms));
    let millis = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
    // grpc-timeout: at most 8 digits and a unit ("m": milliseconds).
    let timeout = HeaderValue::from_str(&format!("{}m", millis.min(99_999_999)))
        .unwrap_or(HeaderValue::from_static("0m"));
    headers.insert(TIMEOUT_HEADER, timeout);

    let exchange = async move {
        sender.ready().await?;
        let response = sender.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, hyper::Error>((parts, body))
    };
    let answered = tokio::time::timeout_at(intended + deadline, exchange).await;
    let latency = Instant::now().saturating_duration_since(intended);
    let (outcome, level) = match answered {
        Err(_) => (Outcome::Failed(Failure::GaveUp), None),
        Ok(Err(_)) => (Outcome::Failed(Failure::Connection), None),
        Ok(Ok((parts, body))) => {
            let level = parts
                .headers
                .get(LEVEL_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_level);
            let status = parts.status.as_u16();
            let outcome = if parts.status.is_success() {
                let worked = parts
                    .headers
                    .get(WORKED_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(Duration::ZERO, Duration::from_micros);
                Outcome::Ok { worked }
            } else if matches!(status, 429 | 503 | 504) {
                Outcome::Rejected {
                    status,
                    reason: reason_of(&body, status),
                }
            } else {
                Outcome::Failed(Failure::Status(status))
            };
            (outcome, level)
        }
    };
    Record {
        class: arrival.class,
        at: arrival.at,
        lateness,
        latency,
        outcome,
        level,
    }
}

/// The reason of a refusal: its body up to the first `:` (brownout writes `shed: …`,
/// `queue_timeout: …`; the demo's tower error handler `overloaded: …`, `timeout: …`), or
/// `status_NNN` for an empty body.
pub fn reason_of(body: &[u8], status: u16) -> String {
    let text = String::from_utf8_lossy(body);
    let head = text.split([':', '\n']).next().unwrap_or("").trim();
    if head.is_empty() || head.len() > 40 || head.contains(' ') {
        format!("status_{status}")
    } else {
        head.to_owned()
    }
}

/// Parses an `x-load-level` value.
pub fn parse_level(value: &str) -> Option<LoadLevel> {
    LoadLevel::ALL
        .into_iter()
        .find(|l| l.as_str().eq_ignore_ascii_case(value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_seeded_sorted_and_follow_rate_mix_and_mean() {
        let a = arrivals(
            400.0,
            Duration::from_secs(20),
            &MIX,
            Duration::from_millis(40),
            7,
        );
        assert_eq!(
            a,
            arrivals(
                400.0,
                Duration::from_secs(20),
                &MIX,
                Duration::from_millis(40),
                7
            )
        );
        assert_ne!(
            a,
            arrivals(
                400.0,
                Duration::from_secs(20),
                &MIX,
                Duration::from_millis(40),
                8
            )
        );
        let n = a.len() as f64;
        assert!((n / 20.0 - 400.0).abs() < 20.0, "rate {}", n / 20.0);
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        let critical = a.iter().filter(|x| x.class == Priority::Critical).count() as f64;
        assert!((critical / n - 0.10).abs() < 0.01);
        let mean = a.iter().map(|x| f64::from(x.work_ms)).sum::<f64>() / n;
        assert!((mean - 40.0).abs() < 1.5, "mean work {mean}");
        assert!(
            arrivals(
                0.0,
                Duration::from_secs(1),
                &MIX,
                Duration::from_millis(40),
                1
            )
            .is_empty()
        );
        assert!(
            arrivals(
                f64::NAN,
                Duration::from_secs(1),
                &MIX,
                Duration::from_millis(40),
                1
            )
            .is_empty()
        );
    }

    #[test]
    fn reasons_and_levels_parse() {
        assert_eq!(reason_of(b"shed: the server is overloaded", 503), "shed");
        assert_eq!(
            reason_of(b"overloaded: every worker is busy\n", 503),
            "overloaded"
        );
        assert_eq!(reason_of(b"", 504), "status_504");
        assert_eq!(reason_of(b"some html page with spaces", 503), "status_503");
        assert_eq!(parse_level("high"), Some(LoadLevel::High));
        assert_eq!(parse_level("nope"), None);
    }
}

//! Loopback plumbing shared by the real-server tests (the shutdown-under-load test of the
//! reliability suite and the soak test): an HTTP/1.1 keep-alive client on hyper, a listener
//! that counts accepted connections and says when it is closed, and the process's RSS.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The reason word a brownout rejection body starts with (`shed`, `queue_full`, …).
    pub fn reason(&self) -> &str {
        std::str::from_utf8(&self.body)
            .unwrap_or_default()
            .split(':')
            .next()
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the server said it will close the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// A brownout rejection: a status it uses, the `x-load-level` header, and a body that
    /// names a reason.
    pub fn is_typed_rejection(&self) -> bool {
        matches!(self.status, 429 | 503 | 504)
            && self.header("x-load-level").is_some()
            && matches!(
                self.reason(),
                "shed"
                    | "queue_full"
                    | "queue_timeout"
                    | "rate_limited"
                    | "circuit_open"
                    | "timeout"
                    | "shutting_down"
                    | "budget_exhausted"
            )
    }
}

/// How a request ended on the client side.
#[derive(Debug)]
pub enum Sent {
    /// The server answered.
    Answered(Answer),
    /// The connection failed before an answer.
    Failed(hyper::Error),
}

impl Conn {
    /// Opens a connection to `addr`; `Err` is the connect error (e.g. refused).
    pub async fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    /// Whether the connection can take another request.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends `GET path` with `x-priority: priority` and reads the whole answer.
    pub async fn get(&mut self, path: &str, priority: &str) -> Sent {
        if let Err(err) = self.sender.ready().await {
            return Sent::Failed(err);
        }
        let req = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .header("x-priority", priority)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = match self.sender.send_request(req).await {
            Ok(response) => response,
            Err(err) => return Sent::Failed(err),
        };
        let (parts, body) = response.into_parts();
        match body.collect().await {
            Ok(body) => Sent::Answered(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: body.to_bytes(),
            }),
            Err(err) => Sent::Failed(err),
        }
    }
}

/// A TCP listener for `axum::serve` that counts accepted connections and records when it
/// is dropped (the server stopped accepting: new connections are refused from then on).
pub struct TrackedListener {
    /// `None` only inside `drop`, which closes the socket before it says so.
    inner: Option<TcpListener>,
    pub state: Arc<ListenerState>,
}

#[derive(Default)]
pub struct ListenerState {
    pub accepted: AtomicU64,
    closed: AtomicBool,
    on_close: Notify,
}

impl ListenerState {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until the listener is closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.on_close.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl TrackedListener {
    pub async fn bind() -> (TrackedListener, SocketAddr) {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let listener = TrackedListener {
            inner: Some(inner),
            state: Arc::default(),
        };
        (listener, addr)
    }
}

impl Drop for TrackedListener {
    fn drop(&mut self) {
        drop(self.inner.take()); // closed first: from the flag on, connects are refused
        self.state.closed.store(true, Ordering::SeqCst);
        self.state.on_close.notify_waiters();
    }
}

impl axum::serve::Listener for TrackedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        let inner = self.inner.as_ref().expect("open until dropped");
        loop {
            match inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    self.state.accepted.fetch_add(1, Ordering::SeqCst);
                    return (stream, addr);
                }
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner
            .as_ref()
            .expect("open until dropped")
            .local_addr()
    }
}

/// The resident set size of this process in KiB (Linux `VmRSS`), `None` elsewhere.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

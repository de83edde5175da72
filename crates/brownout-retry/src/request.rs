//! What the retry layer needs to know about a request: can it be sent again (idempotent),
//! can it be copied, and by when does the caller need the answer.

use brownout_core::Deadline;

/// Copies a request for the next attempt, or returns `None` when it cannot be copied
/// (a streaming body): the request is then sent once and never retried.
///
/// Implemented for [`ByClone`] (`Req: Clone`), [`HttpClone`] (`http::Request<B>` whose body
/// is [`TryCloneBody`], e.g. a [`Buffered`](crate::body::Buffered) body), [`NoClone`] and
/// closures `Fn(&Req) -> Option<Req>`.
pub trait CloneRequest<Req> {
    /// A copy of `req` for another attempt.
    fn clone_request(&self, req: &Req) -> Option<Req>;
}

impl<Req, F> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    #[inline]
    fn clone_request(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}

/// Copies requests with `Clone`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByClone;

impl<Req: Clone> CloneRequest<Req> for ByClone {
    #[inline]
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Never copies: every request is sent once (useful to disable retries for a route while
/// keeping hedging statistics, or for request types that cannot be cloned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoClone;

impl<Req> CloneRequest<Req> for NoClone {
    #[inline]
    fn clone_request(&self, _: &Req) -> Option<Req> {
        None
    }
}

/// A request body that may be copied.
///
/// Implemented for every `Clone` body (`String`, `Bytes`, `()`, `http_body_util::Full`, …)
/// and for [`Buffered`](crate::body::Buffered), which is copyable only when it was
/// buffered whole.
pub trait TryCloneBody: Sized {
    /// A copy of the body, or `None` when it streams.
    fn try_clone_body(&self) -> Option<Self>;
}

impl<B: Clone> TryCloneBody for B {
    #[inline]
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

/// Copies `http::Request<B>` (method, URI, version, headers, extensions) when its body can be
/// copied ([`TryCloneBody`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpClone;

impl<B: TryCloneBody> CloneRequest<http::Request<B>> for HttpClone {
    fn clone_request(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
        let body = req.body().try_clone_body()?;
        let mut copy = http::Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// Per-request facts: whether the request may be sent more than once, and the caller's
/// deadline (a retry never backs off past it).
///
/// Implemented for [`AnyRequest`] (every request idempotent, no deadline), for
/// [`HttpRequests`] and for closures `Fn(&Req) -> bool` (idempotency only).
pub trait RequestInfo<Req> {
    /// Whether `req` may be sent again after a failure.
    fn is_idempotent(&self, req: &Req) -> bool;

    /// The caller's deadline, if known.
    fn deadline(&self, _req: &Req) -> Option<Deadline> {
        None
    }
}

impl<Req, F> RequestInfo<Req> for F
where
    F: Fn(&Req) -> bool,
{
    #[inline]
    fn is_idempotent(&self, req: &Req) -> bool {
        self(req)
    }
}

/// Every request may be retried; no deadline. The default for non-http services, where the
/// caller knows what it sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnyRequest;

impl<Req> RequestInfo<Req> for AnyRequest {
    #[inline]
    fn is_idempotent(&self, _: &Req) -> bool {
        true
    }
}

/// Marks an `http::Request` as idempotent (`Idempotent(true)`, e.g. a POST with an
/// idempotency key) or not (`Idempotent(false)`, e.g. a GET with side effects), overriding
/// the method rule of [`HttpRequests`].
///
/// ```
/// use brownout_retry::{HttpRequests, Idempotent, RequestInfo};
///
/// let mut post = http::Request::post("/orders").body(()).unwrap();
/// assert!(!HttpRequests.is_idempotent(&post));
/// post.extensions_mut().insert(Idempotent(true));
/// assert!(HttpRequests.is_idempotent(&post));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Idempotent(pub bool);

/// The rules for `http::Request`s: GET, HEAD, OPTIONS, PUT, DELETE and TRACE are idempotent
/// (RFC 9110 §9.2.2), other methods are not, and an [`Idempotent`] extension overrides both;
/// the deadline is the [`Deadline`] extension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpRequests;

impl<B> RequestInfo<http::Request<B>> for HttpRequests {
    fn is_idempotent(&self, req: &http::Request<B>) -> bool {
        if let Some(Idempotent(marked)) = req.extensions().get::<Idempotent>() {
            return *marked;
        }
        idempotent_method(req.method())
    }

    fn deadline(&self, req: &http::Request<B>) -> Option<Deadline> {
        Deadline::of(req.extensions())
    }
}

/// Whether `method` is idempotent by RFC 9110 (GET, HEAD, OPTIONS, PUT, DELETE, TRACE).
pub fn idempotent_method(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_methods_and_marker() {
        for (method, idem) in [
            ("GET", true),
            ("HEAD", true),
            ("OPTIONS", true),
            ("PUT", true),
            ("DELETE", true),
            ("TRACE", true),
            ("POST", false),
            ("PATCH", false),
            ("CONNECT", false),
        ] {
            let req = http::Request::builder().method(method).body(()).unwrap();
            assert_eq!(HttpRequests.is_idempotent(&req), idem, "{method}");
        }
        let mut get = http::Request::get("/").body(()).unwrap();
        get.extensions_mut().insert(Idempotent(false));
        assert!(!HttpRequests.is_idempotent(&get));
    }

    #[test]
    fn http_clone_copies_everything_but_streams() {
        let mut req = http::Request::put("/x")
            .header("a", "b")
            .body(String::from("body"))
            .unwrap();
        req.extensions_mut().insert(Idempotent(true));
        let copy = HttpClone.clone_request(&req).unwrap();
        assert_eq!(copy.method(), "PUT");
        assert_eq!(copy.uri(), "/x");
        assert_eq!(copy.headers()["a"], "b");
        assert_eq!(copy.body(), "body");
        assert_eq!(
            copy.extensions().get::<Idempotent>(),
            Some(&Idempotent(true))
        );
        assert_eq!(NoClone.clone_request(&req).map(|_| ()), None);
    }
}

//! One service that answers a stack's errors and panics with responses, so its error type is
//! `Infallible`; the response format (http status codes, gRPC statuses) is a type parameter.

use std::any::Any;
use std::convert::Infallible;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use brownout_core::headers::level_value;
use brownout_core::{BoxError, LoadLevel, LoadSignal};
use http::Response;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::LOAD_LEVEL_HEADER;

/// How a protocol answers an error or a panic with a response of body `B`.
///
/// Implemented by [`HttpAnswer`] (503/429/504 with `Retry-After`, opaque 500) and, with the
/// `grpc` feature, by `brownout::grpc::GrpcAnswer` (trailers-only gRPC statuses).
pub trait Answer<B> {
    /// The answer to a panic, for the log line (`500`, `INTERNAL`).
    const PANIC_ANSWER: &'static str;

    /// The response for an error of the inner stack.
    fn error(error: &(dyn Error + Send + Sync + 'static)) -> Response<B>;

    /// The response for a panic of the inner stack (nothing about the panic leaks).
    fn panic() -> Response<B>;
}

/// The http answers: a rejection's own response (see [`rejection_response`](super::rejection_response)),
/// and an opaque 500 for any other error or a panic.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpAnswer;

impl<B: From<String>> Answer<B> for HttpAnswer {
    const PANIC_ANSWER: &'static str = "500";

    fn error(error: &(dyn Error + Send + Sync + 'static)) -> Response<B> {
        super::error_response(error)
    }

    fn panic() -> Response<B> {
        super::response::internal_error()
    }
}

/// The layer of [`Answering`]: answers errors and panics with `A`'s responses, and
/// optionally stamps `x-load-level` on every response.
#[derive(Clone, Debug, Default)]
pub struct AnsweringLayer<A> {
    signal: Option<LoadSignal>,
    answer: A,
}

impl<A: Default> AnsweringLayer<A> {
    /// A layer that answers errors and panics, without the level header on successes.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<A> AnsweringLayer<A> {
    /// Also stamps `x-load-level` from `signal` on every response that lacks one: the level
    /// when the request arrived (a rejection carries the level it was refused at).
    #[must_use]
    pub fn with_level_header(mut self, signal: LoadSignal) -> Self {
        self.signal = Some(signal);
        self
    }
}

impl<S, A: Clone> Layer<S> for AnsweringLayer<A> {
    type Service = Answering<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        Answering {
            inner,
            signal: self.signal.clone(),
            answer: self.answer.clone(),
        }
    }
}

/// Answers every error of the inner stack and every panic with a response of format `A`,
/// so its error type is `Infallible` (what axum's `Router::layer` and tonic's server need).
#[derive(Clone)]
pub struct Answering<S, A> {
    inner: S,
    signal: Option<LoadSignal>,
    answer: A,
}

brownout_core::impl_inner_access!(Answering<S, A>);

impl<S: fmt::Debug, A: fmt::Debug> fmt::Debug for Answering<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answering")
            .field("inner", &self.inner)
            .field("signal", &self.signal)
            .field("answer", &self.answer)
            .finish()
    }
}

impl<S, Req, B, A> Service<Req> for Answering<S, A>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    A: Answer<B> + Clone,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = AnswerFuture<S::Future, A>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // An inner readiness error (e.g. a broken dependency) is answered per request in
        // `call`, where it can become a response; report ready so the connection proceeds.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The level is read here (one atomic load) rather than when the response is ready:
        // keeping a `LoadSignal` clone in every future would cost shared reference-count
        // updates per request, which contend when many threads serve.
        let level = self.signal.as_ref().map(LoadSignal::level);
        // The whole future is built inside `catch_unwind`, from an inner `call` kept out of
        // line: inside `catch_unwind` every call may unwind to the catch, which keeps LLVM
        // from writing a callee's future straight into its caller's, so the layers below
        // build theirs in the out-of-line call and the result is copied once (returning the
        // bare inner future through `catch_unwind`'s `Result` and into `State` and then
        // `AnswerFuture` copied it, hundreds of bytes, several times per request).
        let inner = &mut self.inner;
        let answer = &self.answer;
        match catch_unwind(AssertUnwindSafe(move || AnswerFuture {
            state: State::Running {
                future: crate::optional::call_out_of_line(inner, req),
            },
            level,
            answer: answer.clone(),
        })) {
            Ok(future) => future,
            Err(panic) => {
                log_panic(&*panic, A::PANIC_ANSWER);
                AnswerFuture {
                    state: State::Panicked,
                    level,
                    answer: self.answer.clone(),
                }
            }
        }
    }
}

fn log_panic(panic: &(dyn Any + Send), answer: &str) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic>");
    tracing::error!(
        panic = message,
        answer,
        "handler panicked; answering with an error"
    );
}

pin_project! {
    /// The response future of [`Answering`]: the inner response, or `A`'s answer to its
    /// error or panic.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner future, which releases whatever the inner layers hold.
    pub struct AnswerFuture<F, A> {
        #[pin]
        state: State<F>,
        level: Option<LoadLevel>,
        answer: A,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: F },
        Panicked,
    }
}

impl<F, A> fmt::Debug for AnswerFuture<F, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerFuture").finish_non_exhaustive()
    }
}

impl<F, B, E, A> Future for AnswerFuture<F, A>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    A: Answer<B>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.state.project() {
            StateProj::Panicked => A::panic(),
            StateProj::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => response,
                    Ok(Poll::Ready(Err(error))) => A::error(&*error.into()),
                    Err(panic) => {
                        log_panic(&*panic, A::PANIC_ANSWER);
                        A::panic()
                    }
                }
            }
        };
        if let Some(level) = *this.level {
            response
                .headers_mut()
                .entry(LOAD_LEVEL_HEADER)
                .or_insert_with(|| level_value(level));
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::future::{Ready, ready};

    use brownout_core::LoadLevel;

    use super::*;

    /// Panics in `call` on odd requests, answers 200 on even ones.
    #[derive(Clone)]
    struct PanicOnOdd;

    impl Service<u32> for PanicOnOdd {
        type Response = Response<String>;
        type Error = BoxError;
        type Future = Ready<Result<Response<String>, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: u32) -> Self::Future {
            assert!(req.is_multiple_of(2), "bug in call with secret abc123");
            ready(Ok(Response::new(String::from("ok"))))
        }
    }

    #[tokio::test]
    async fn panic_in_call_answers_500_with_the_level_then_serves_again() {
        let mut svc = AnsweringLayer::<HttpAnswer>::new()
            .with_level_header(LoadSignal::fixed(LoadLevel::High))
            .layer(PanicOnOdd);
        for (req, status) in [(1, 500), (2, 200), (3, 500), (4, 200)] {
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            let response = svc.call(req).await.unwrap();
            assert_eq!(response.status(), status, "request {req}");
            assert_eq!(response.headers()[LOAD_LEVEL_HEADER], "high");
            assert!(!response.body().contains("abc123"));
        }
    }
}

//! The bounded-FIFO-wait baseline: a bulkhead of permits with a maximum wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::{BoxError, LoadLevel, RejectReason, Rejected};
use tokio::sync::Semaphore;

/// A bulkhead like `tower-resilience`'s: at most `permits` requests run at once; a request
/// that finds none free waits in FIFO order for at most `max_wait`, then is refused with
/// [`RejectReason::QueueTimeout`]. It is blind to priorities: the baseline that shows what
/// a bounded queue alone achieves.
///
/// Dropping the response future gives the permit (or the place in line) back.
#[derive(Debug, Clone)]
pub struct Bulkhead<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max_wait: Duration,
}

impl<S> Bulkhead<S> {
    /// Wraps `inner` with `permits` permits and a maximum wait of `max_wait`.
    pub fn new(inner: S, permits: usize, max_wait: Duration) -> Bulkhead<S> {
        Bulkhead {
            inner,
            permits: Arc::new(Semaphore::new(permits.max(1))),
            max_wait,
        }
    }
}

impl<S, Req> tower_service::Service<Req> for Bulkhead<S>
where
    S: tower_service::Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Like an always-ready router: the decision is made in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permits = self.permits.clone();
        let max_wait = self.max_wait;
        // Take the clone that was driven to readiness, leave a fresh one behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => tokio::time::timeout(max_wait, permits.acquire_owned())
                    .await
                    .map_err(|_| {
                        Rejected::new(RejectReason::QueueTimeout, LoadLevel::Normal)
                            .with_retry_after(max_wait)
                    })?
                    .map_err(|closed| -> BoxError { closed.into() })?,
            };
            tower::ServiceExt::ready(&mut inner)
                .await
                .map_err(Into::into)?;
            let response = inner.call(req).await.map_err(Into::into);
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scenario, SimRequest, Work, backend_for};
    use tokio::time::Instant;
    use tower::ServiceExt;

    fn req(ms: u64) -> SimRequest {
        let mut r = SimRequest::new(());
        r.extensions_mut().insert(Work(Duration::from_millis(ms)));
        r
    }

    #[tokio::test(start_paused = true)]
    async fn waits_at_most_max_wait_then_rejects() {
        let origin = Instant::now();
        let backend = backend_for(&Scenario::default());
        let bulkhead = Bulkhead::new(backend, 1, Duration::from_millis(100));
        let first = tokio::spawn(bulkhead.clone().oneshot(req(150)));
        tokio::task::yield_now().await;
        let second = bulkhead.clone().oneshot(req(10)).await;
        let err = second.unwrap_err();
        assert_eq!(
            Rejected::find_in_box(&*err).map(Rejected::reason),
            Some(RejectReason::QueueTimeout)
        );
        assert_eq!(origin.elapsed(), Duration::from_millis(100));
        first.await.unwrap().unwrap();
        // The permit came back: the next one runs at once.
        bulkhead.clone().oneshot(req(10)).await.unwrap();
        assert_eq!(origin.elapsed(), Duration::from_millis(160));
    }
}

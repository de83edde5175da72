//! The response future of [`FleetRateLimit`](crate::FleetRateLimit).

/// The inner service's future when the request was admitted, or an immediate
/// [`Rejected`](brownout_core::Rejected) (`RateLimited`, with `retry_after`) when it was
/// refused; the shared [`MaybeRejected`](brownout_core::MaybeRejected).
///
/// # Cancel safety
///
/// Holds nothing but the inner future: the token a request used is spent when it is
/// admitted (a rate, not a concurrency limit), so dropping the future gives nothing back.
pub type ResponseFuture<F> = brownout_core::MaybeRejected<F>;

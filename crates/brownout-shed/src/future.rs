//! The response future of [`LoadShed`](crate::LoadShed).

/// The future returned by [`LoadShed`](crate::LoadShed): the inner service's future when
/// the request was admitted, or an immediate [`Rejected`](brownout_core::Rejected) error
/// (`rejection()` shows it) when it was shed. The shared
/// [`MaybeRejected`](brownout_core::MaybeRejected): no allocation on the admitted path,
/// and dropping it releases only what the inner future holds.
pub type ResponseFuture<F> = brownout_core::MaybeRejected<F>;

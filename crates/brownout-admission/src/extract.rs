//! What the layer reads from a request besides its class: its deadline and its rate-limit key.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use brownout_core::{Deadline, LoadLevel};

use crate::keyed::KeyedRate;
use crate::rate::RetryAfter;

/// Reads the caller's deadline from a request.
///
/// Implemented for closures `Fn(&Req) -> Option<Deadline>`, for [`DeadlineFromExtensions`]
/// (the default, http requests) and for [`NoDeadline`] (any request type).
pub trait ExtractDeadline<Req> {
    /// The deadline of `req`, if it has one.
    fn deadline(&self, req: &Req) -> Option<Deadline>;
}

impl<Req, F> ExtractDeadline<Req> for F
where
    F: Fn(&Req) -> Option<Deadline>,
{
    #[inline]
    fn deadline(&self, req: &Req) -> Option<Deadline> {
        self(req)
    }
}

/// Reads the [`Deadline`] stored in an `http::Request`'s extensions (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineFromExtensions;

impl<B> ExtractDeadline<http::Request<B>> for DeadlineFromExtensions {
    #[inline]
    fn deadline(&self, req: &http::Request<B>) -> Option<Deadline> {
        Deadline::of(req.extensions())
    }
}

/// No request has a deadline (for request types that carry none).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDeadline;

impl<Req> ExtractDeadline<Req> for NoDeadline {
    #[inline]
    fn deadline(&self, _: &Req) -> Option<Deadline> {
        None
    }
}

/// The per-key rate limit of a layer (internal plumbing of the builder's type parameter).
///
/// Implemented by [`NoKey`] (no keyed limit, the default) and [`KeyedBy`] (set by
/// [`PriorityAdmissionBuilder::keyed_rate_limit`](crate::PriorityAdmissionBuilder::keyed_rate_limit)).
pub trait CheckKey<Req> {
    /// `Err(retry_after)` when the request's key is over its rate at `level`.
    #[doc(hidden)]
    fn check_key(&self, req: &Req, level: LoadLevel) -> Result<(), RetryAfter>;
}

/// No per-key rate limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<Req> CheckKey<Req> for NoKey {
    #[inline]
    fn check_key(&self, _: &Req, _: LoadLevel) -> Result<(), RetryAfter> {
        Ok(())
    }
}

/// A per-key rate limit: the extractor `F` gives each request's key (`None`: not limited).
pub struct KeyedBy<F, K: Hash + Eq + Clone> {
    pub(crate) extract: F,
    pub(crate) limiter: Option<Arc<KeyedRate<K>>>,
    pub(crate) _key: PhantomData<fn() -> K>,
}

impl<F: Clone, K: Hash + Eq + Clone> Clone for KeyedBy<F, K> {
    fn clone(&self) -> Self {
        KeyedBy {
            extract: self.extract.clone(),
            limiter: self.limiter.clone(),
            _key: PhantomData,
        }
    }
}

impl<F, K: Hash + Eq + Clone> fmt::Debug for KeyedBy<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBy")
            .field("keys", &self.limiter.as_ref().map(|l| l.len()))
            .finish_non_exhaustive()
    }
}

impl<F, K: Hash + Eq + Clone> KeyedBy<F, K> {
    /// How many keys the limiter tracks now (idle ones are expired periodically).
    pub fn tracked_keys(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

impl<Req, F, K> CheckKey<Req> for KeyedBy<F, K>
where
    F: Fn(&Req) -> Option<K>,
    K: Hash + Eq + Clone,
{
    #[inline]
    fn check_key(&self, req: &Req, level: LoadLevel) -> Result<(), RetryAfter> {
        match (&self.limiter, (self.extract)(req)) {
            (Some(limiter), Some(key)) => limiter.check(&key, level),
            _ => Ok(()),
        }
    }
}

//! What a fleet rate limit is keyed by: one global limit, or one per extracted key.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

/// The key type of a limit (independent of the request type).
pub trait KeySpace {
    /// The key: part of the Redis key through its `Display`.
    type Key: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static;
    /// Whether there is only one key (then no map lookup on the hot path).
    const GLOBAL: bool = false;
}

/// Extracts the limit's key from a request; `None` leaves the request unlimited.
pub trait FleetKey<Req>: KeySpace {
    /// The key of `req`.
    fn key(&self, req: &Req) -> Option<Self::Key>;
}

/// One limit for every request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Global;

impl fmt::Display for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("global")
    }
}

impl KeySpace for Global {
    type Key = Global;
    const GLOBAL: bool = true;
}

impl<Req> FleetKey<Req> for Global {
    #[inline]
    fn key(&self, _: &Req) -> Option<Global> {
        Some(Global)
    }
}

/// One limit per key returned by a closure `Fn(&Req) -> Option<K>`.
pub struct ByKey<F, K> {
    pub(crate) f: F,
    pub(crate) _key: PhantomData<fn() -> K>,
}

impl<F: Clone, K> Clone for ByKey<F, K> {
    fn clone(&self) -> Self {
        ByKey {
            f: self.f.clone(),
            _key: PhantomData,
        }
    }
}

impl<F, K> fmt::Debug for ByKey<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByKey").finish_non_exhaustive()
    }
}

impl<F, K> KeySpace for ByKey<F, K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    type Key = K;
}

impl<Req, F, K> FleetKey<Req> for ByKey<F, K>
where
    F: Fn(&Req) -> Option<K>,
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    #[inline]
    fn key(&self, req: &Req) -> Option<K> {
        (self.f)(req)
    }
}

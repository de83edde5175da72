//! Per-key breakers: the key extractor and a bounded, sharded map that forgets idle keys.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::breaker::{BreakerSnapshot, BreakerState, Core, Slot};
use crate::window::nanos;

/// Names the key type of a key extractor (independent of the request type).
pub trait KeyExtractor {
    /// The key: one breaker per distinct value.
    type Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static;
    /// The key of the only breaker for an extractor with one breaker ([`Global`]);
    /// `None` for per-key extractors.
    fn single_key() -> Option<Self::Key>;
}

/// Extracts the breaker key from a request (e.g. the upstream host or the route).
pub trait ExtractKey<Req>: KeyExtractor {
    /// The key of `req`.
    fn key(&self, req: &Req) -> Self::Key;
}

/// One breaker for every request (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Global;

impl KeyExtractor for Global {
    type Key = ();
    fn single_key() -> Option<()> {
        Some(())
    }
}

impl<Req> ExtractKey<Req> for Global {
    #[inline]
    fn key(&self, _: &Req) {}
}

/// A key extractor from a closure `Fn(&Req) -> Key`; made by
/// [`CircuitBreakLayer::with_key`](crate::CircuitBreakLayer::with_key).
pub struct KeyFn<F, Key> {
    f: F,
    _key: PhantomData<fn() -> Key>,
}

impl<F, Key> KeyFn<F, Key> {
    /// Wraps `f`.
    pub const fn new(f: F) -> KeyFn<F, Key> {
        KeyFn {
            f,
            _key: PhantomData,
        }
    }
}

impl<F: Clone, Key> Clone for KeyFn<F, Key> {
    fn clone(&self) -> Self {
        KeyFn::new(self.f.clone())
    }
}

impl<F, Key> fmt::Debug for KeyFn<F, Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn")
            .field("key", &std::any::type_name::<Key>())
            .finish_non_exhaustive()
    }
}

impl<F, Key> KeyExtractor for KeyFn<F, Key>
where
    Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    type Key = Key;
    fn single_key() -> Option<Key> {
        None
    }
}

impl<F, Key, Req> ExtractKey<Req> for KeyFn<F, Key>
where
    F: Fn(&Req) -> Key,
    Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    #[inline]
    fn key(&self, req: &Req) -> Key {
        (self.f)(req)
    }
}

const SHARDS: usize = 16;
/// Do not rewrite `last_used` more often than this (keeps hot keys' cache lines shared).
const TOUCH_NS: u64 = 1_000_000;

type SharedSlot<K, M> = Arc<Slot<K, M>>;
type Shard<K, M> = RwLock<HashMap<K, SharedSlot<K, M>>>;
/// The registry of a layer, built on first use and shared by its clones.
pub(crate) type LazyRegistry<K, M> = Arc<OnceLock<Arc<Registry<K, M>>>>;

/// A breaker found for one request.
pub(crate) enum SlotRef<'a, K, M> {
    Borrowed(&'a SharedSlot<K, M>),
    Owned(SharedSlot<K, M>),
}

impl<K, M> SlotRef<'_, K, M> {
    /// The breaker, owned (for a future that outlives the call).
    #[inline]
    pub(crate) fn into_owned(self) -> SharedSlot<K, M> {
        match self {
            SlotRef::Borrowed(slot) => slot.clone(),
            SlotRef::Owned(slot) => slot,
        }
    }
}

impl<K, M> std::ops::Deref for SlotRef<'_, K, M> {
    type Target = Slot<K, M>;
    #[inline]
    fn deref(&self) -> &Slot<K, M> {
        match self {
            SlotRef::Borrowed(slot) => slot,
            SlotRef::Owned(slot) => slot,
        }
    }
}

/// Every breaker of one layer: the single one, or a bounded map of per-key ones.
pub(crate) struct Registry<K, M> {
    pub(crate) core: Arc<Core>,
    single: Option<Arc<Slot<K, M>>>,
    shards: Box<[Shard<K, M>]>,
    hasher: RandomState,
    len: AtomicUsize,
    last_sweep: AtomicU64,
}

impl<K, M> fmt::Debug for Registry<K, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("core", &self.core)
            .field("keyed", &self.single.is_none())
            .field("len", &self.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K, M> Registry<K, M>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    M: Default + Send + Sync + 'static,
{
    /// A registry with one breaker keyed `single`, or a keyed map when `single` is `None`.
    pub(crate) fn new(core: Core, single: Option<K>) -> Registry<K, M> {
        let core = Arc::new(core);
        let single =
            single.map(|key| Arc::new(Slot::new(key, core.clone(), M::default(), core.now_ns())));
        Registry {
            core,
            single,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
            last_sweep: AtomicU64::new(0),
        }
    }

    /// The breaker for a request whose key is computed by `key` (not called for a single
    /// breaker, which is only borrowed: no reference count is touched until a call is
    /// admitted).
    #[inline]
    pub(crate) fn slot(&self, key: impl FnOnce() -> K) -> SlotRef<'_, K, M> {
        match &self.single {
            Some(slot) => SlotRef::Borrowed(slot),
            None => SlotRef::Owned(self.keyed(key())),
        }
    }

    fn shard(&self, key: &K) -> &Shard<K, M> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    fn keyed(&self, key: K) -> Arc<Slot<K, M>> {
        let now = self.core.now_ns();
        let shard = self.shard(&key);
        if let Some(slot) = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            if now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) >= TOUCH_NS {
                slot.last_used.store(now, Ordering::Relaxed);
            }
            return slot.clone();
        }
        self.maybe_sweep(now);
        if self.len.load(Ordering::Relaxed) >= self.core.config.max_keys {
            self.evict_lru();
        }
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(key.clone())
            .or_insert_with(|| {
                self.len.fetch_add(1, Ordering::Relaxed);
                Arc::new(Slot::new(key, self.core.clone(), M::default(), now))
            })
            .clone()
    }

    fn maybe_sweep(&self, now: u64) {
        let every = nanos(self.core.config.idle_timeout) / 2;
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= every
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now);
        }
    }

    /// Forgets breakers unused for the idle timeout; returns how many.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        let idle = nanos(self.core.config.idle_timeout);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, slot| {
                let keep = now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) < idle;
                if !keep {
                    slot.evict();
                    removed += 1;
                }
                keep
            });
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Evicts the least recently used breaker, preferring closed ones (an open breaker
    /// remembers a broken dependency).
    fn evict_lru(&self) {
        let mut oldest: Option<(bool, u64, usize, K)> = None;
        for (i, shard) in self.shards.iter().enumerate() {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            for (key, slot) in map.iter() {
                let not_closed = slot.state() != BreakerState::Closed;
                let used = slot.last_used.load(Ordering::Relaxed);
                if oldest
                    .as_ref()
                    .is_none_or(|(nc, u, _, _)| (not_closed, used) < (*nc, *u))
                {
                    oldest = Some((not_closed, used, i, key.clone()));
                }
            }
        }
        if let Some((_, _, i, key)) = oldest {
            let removed = self.shards[i]
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            if let Some(slot) = removed {
                slot.evict();
                self.len.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(
                    target: "brownout::breaker",
                    breaker = self.core.name,
                    key = ?key,
                    "evicted least recently used breaker"
                );
            }
        }
    }

    fn each(&self, f: &mut dyn FnMut(&SharedSlot<K, M>)) {
        if let Some(slot) = &self.single {
            f(slot);
        }
        for shard in self.shards.iter() {
            let slots: Vec<_> = shard
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .cloned()
                .collect();
            slots.iter().for_each(&mut *f);
        }
    }

    fn find(&self, key: &K) -> Option<Arc<Slot<K, M>>> {
        if let Some(slot) = &self.single {
            return Some(slot.clone());
        }
        self.shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

/// The registry seen by the handle, without the fallback memory type.
pub(crate) trait Breakers<K>: Send + Sync + fmt::Debug + 'static {
    fn core(&self) -> &Core;
    fn single_state(&self) -> Option<BreakerState>;
    fn len(&self) -> usize;
    fn keys(&self) -> Vec<K>;
    fn state_of(&self, key: &K) -> Option<BreakerState>;
    fn snapshot_of(&self, key: &K) -> Option<BreakerSnapshot>;
    fn snapshot_all(&self) -> BreakerSnapshot;
    fn force_all(&self, target: Option<BreakerState>);
    fn force_key(&self, key: &K, target: Option<BreakerState>) -> bool;
    fn purge_idle(&self) -> usize;
}

impl<K, M> Breakers<K> for Registry<K, M>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    M: Default + Send + Sync + 'static,
{
    fn core(&self) -> &Core {
        &self.core
    }

    fn single_state(&self) -> Option<BreakerState> {
        self.single.as_ref().map(|slot| slot.state())
    }

    fn len(&self) -> usize {
        if self.single.is_some() {
            1
        } else {
            self.len.load(Ordering::Relaxed)
        }
    }

    fn keys(&self) -> Vec<K> {
        let mut keys = Vec::new();
        self.each(&mut |slot| keys.push(slot.key.clone()));
        keys
    }

    fn state_of(&self, key: &K) -> Option<BreakerState> {
        self.find(key).map(|slot| slot.state())
    }

    fn snapshot_of(&self, key: &K) -> Option<BreakerSnapshot> {
        let now = self.core.now_ns();
        self.find(key).map(|slot| slot.snapshot(now))
    }

    fn snapshot_all(&self) -> BreakerSnapshot {
        let now = self.core.now_ns();
        if let Some(slot) = &self.single {
            return slot.snapshot(now);
        }
        let mut total = BreakerSnapshot::empty(self.core.worst_state());
        self.each(&mut |slot| total.absorb(&slot.snapshot(now)));
        total
    }

    fn force_all(&self, target: Option<BreakerState>) {
        self.core.set_forced(target);
        self.each(&mut |slot| slot.force(target));
    }

    fn force_key(&self, key: &K, target: Option<BreakerState>) -> bool {
        self.find(key).map(|slot| slot.force(target)).is_some()
    }

    fn purge_idle(&self) -> usize {
        if self.single.is_some() {
            return 0;
        }
        self.sweep(self.core.now_ns())
    }
}

//! Per-key rate limits: a sharded GCRA store whose refusals, like the global limit's, are
//! decided from the thread's last clock reading while a key floods.
//!
//! governor's keyed limiter reads the clock before it looks the key up, behind one mutex
//! for all keys: every keyed refusal paid a clock read (~25–30 ns here), SipHash and the
//! global lock. This store keeps governor's algorithm (GCRA: per key and level one
//! "theoretical arrival time", updated by compare-and-swap) in shards chosen by the key's
//! hash, each a `RwLock<HashTable>` that is only read-locked for keys it already holds
//! (write-locked to insert a new key, and by the idle sweep). A real refusal records the
//! key's "not before" instant in a lock-free refusal index ([`Refusal`]); the key's next
//! requests on a thread in a flood are refused against it with the thread's last reading
//! ([`TokioClock::cached_refusal`]), exactly as the global limit refuses: no lock, no
//! clock read, one fast hash.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use brownout_core::{LevelTable, LoadLevel};
use foldhash::SharedSeed;
use foldhash::fast::FoldHasher;
use hashbrown::HashTable;

use crate::rate::{RateLimit, RetryAfter, TokioClock};

/// One level's GCRA, as governor computes it from the level's quota: `t` is the period
/// (1 s / rate, rounded to the nanosecond, at least 1 ns), `tau = t × (burst − 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    t: u64,
    tau: u64,
}

impl Gcra {
    /// The GCRA of `limit` at rate scale `scale` (the same quota as the global limit's).
    fn new(limit: &RateLimit, scale: f64) -> Gcra {
        let quota = limit.quota(scale);
        let t = u64::try_from(quota.replenish_interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let burst = u64::from(quota.burst_size().get());
        Gcra {
            t,
            tau: t.saturating_mul(burst - 1),
        }
    }

    /// The earliest instant a request conforms, given the theoretical arrival time `tat`
    /// (0 when `tat` is at most `tau`: any instant).
    #[inline]
    fn earliest(&self, tat: u64) -> u64 {
        tat.saturating_sub(self.tau)
    }

    /// governor's `test_and_update`: takes one cell at `now` (moves `tat` to
    /// `max(tat, now) + t`), or `Err(earliest)` when `now` is before the earliest conforming
    /// instant. A lost race re-decides on the winner's `tat`, so concurrent admissions never
    /// exceed the rate.
    #[inline]
    fn take(&self, tat: &AtomicU64, now: u64) -> Result<(), u64> {
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let earliest = self.earliest(current);
            if now < earliest {
                return Err(earliest);
            }
            let next = current.max(now).saturating_add(self.t);
            match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }
}

/// A key's state: per level, the GCRA's theoretical arrival time in the clock's nanoseconds
/// (0: never used, which decides like a fresh key).
#[derive(Debug)]
struct KeyState {
    tat: LevelTable<AtomicU64>,
}

impl KeyState {
    fn new() -> KeyState {
        KeyState {
            tat: LevelTable::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Whether every level is back to "full burst available" at `now`: a theoretical arrival
    /// time at or before `now` decides exactly like a fresh key, so forgetting it changes
    /// no decision.
    fn idle(&self, now: u64) -> bool {
        self.tat
            .iter()
            .all(|(_, tat)| tat.load(Ordering::Relaxed) <= now)
    }
}

/// Slots of the refusal index (16 bytes each: 16 KiB per keyed limit).
const REFUSAL_SLOTS: usize = 1024;

/// The refusal index's hash of a key: foldhash (~1–2 ns for a short key, against ~8–13 ns
/// for SipHash, on the refusal path), seeded with 128 bits from std's `RandomState` (the
/// OS's randomness) instead of foldhash's own address-and-time seed.
struct TagHasher {
    per_hasher: u64,
    shared: SharedSeed,
}

impl TagHasher {
    fn new() -> TagHasher {
        // SipHash outputs under a fresh random key: random numbers.
        let random = RandomState::new();
        TagHasher {
            per_hasher: random.hash_one(0u8),
            shared: SharedSeed::from_u64(random.hash_one(1u8)),
        }
    }

    #[inline]
    fn hash<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        let mut hasher = FoldHasher::with_seed(self.per_hasher, &self.shared);
        key.hash(&mut hasher);
        hasher.finish()
    }
}

/// A key's and level's tag in the refusal index: the key's hash mixed with the level.
#[inline]
fn tag(hash: u64, level: LoadLevel) -> u64 {
    const MIX: u64 = 0x9e37_79b9_7f4a_7c15;
    hash ^ MIX.wrapping_mul(level.index() as u64 + 1)
}

/// One slot of the refusal index: the "not before" instant of the last real refusal of one
/// key at one level (the slot's tag's), so that the key's next refusals need neither the
/// map's lock nor a clock read.
///
/// The pair is stored as `(tag ^ until, until)` and read without a lock: it is used only if
/// it matches the tag, so a slot another key took, or a pair read half-written, is ignored
/// (a real check follows). Only a 64-bit match of two keys' tags (foldhash under a secret
/// random seed; or a torn pair) could lend one key another's instant, and even then a cached
/// refusal is what the thread's own reading and pace justify against *an* instant: at most
/// [`MAX_UNREAD`](crate::rate::MAX_UNREAD) late refusals before the next real check. A
/// stale instant (the key was admitted since) is earlier than the key's real one, which only
/// means an earlier real check; the index is cleared when idle keys are forgotten.
#[derive(Debug, Default)]
struct Refusal {
    check: AtomicU64,
    until: AtomicU64,
}

impl Refusal {
    /// The instant recorded for `tag` (0: none).
    #[inline]
    fn until(&self, tag: u64) -> u64 {
        let until = self.until.load(Ordering::Relaxed);
        if self.check.load(Ordering::Relaxed) ^ until == tag {
            until
        } else {
            0
        }
    }

    /// Records `until` for `tag`, only if it moved: threads refusing against the same
    /// instant then share the slot's cache line read-only.
    fn store(&self, tag: u64, until: u64) {
        if self.until(tag) != until {
            self.until.store(until, Ordering::Relaxed);
            self.check.store(tag ^ until, Ordering::Relaxed);
        }
    }

    fn clear(&self) {
        self.check.store(0, Ordering::Relaxed);
        self.until.store(0, Ordering::Relaxed);
    }
}

/// A shard's table: each key with its state, found by the key's hash.
type Table<K> = HashTable<(K, KeyState)>;

/// One shard: the keys whose hash selects it. Aligned so that the lock words of two shards
/// never share a cache line (threads on different keys do not contend).
#[repr(align(128))]
struct Shard<K>(RwLock<Table<K>>);

impl<K> Shard<K> {
    #[inline]
    fn read(&self) -> RwLockReadGuard<'_, Table<K>> {
        // The map holds atomics only and std's map stays valid if a key's `Hash`, `Eq` or
        // `Clone` panics: a poisoned lock is still usable.
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table<K>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Per-key rate limits, each key's rate and burst scaled per level by `Policy::rate` (each
/// level its own state per key, as the global limit keeps one limiter per level); keys
/// idle at every level are forgotten every `idle_sweep`.
///
/// # Refusals without a clock read
///
/// A real refusal records the key's "not before" instant at that level (its theoretical
/// arrival time less `tau`) in the refusal index ([`Refusal`]). The key's next requests
/// find it there (one fast hash, two relaxed loads, no lock) and are decided like the
/// global limit's refusals ([`TokioClock::cached_refusal`]): a thread in a flood (requests
/// at least one per 10 µs) refuses up to 16 requests in a row from its last reading while
/// they arrive, at its pace, before that instant. Only a real check (a clock read and the
/// CAS) admits. A key
/// whose instant is at or before the thread's last reading (a fresh key, a key back to full
/// burst) is never refused from the cache: the check is real. Any clock read on the thread
/// (another key's admission, say) ends the credit; the next real refusal of the flooded key
/// grants it again.
///
/// # Hashes and map
///
/// The refusal path hashes the key once, with foldhash under a secret random seed
/// ([`TagHasher`]), for its slot in the refusal index. The real check hashes it with std's
/// randomly seeded SipHash (keys come from clients: tenant headers, addresses; a keyed PRF
/// keeps an attacker from building colliding keys that would degrade the tables), and that
/// hash picks both the shard (bits 49–56, which the table uses neither for its buckets nor
/// for its 7-bit tags) and the slot in the shard's hashbrown `HashTable`. There are
/// `(cpus × 4).next_power_of_two()` shards (8 to 256), each behind a `RwLock`: existing keys
/// take the read lock (no allocation), a new key takes the write lock and is cloned in.
pub(crate) struct KeyedRate<K> {
    shards: Box<[Shard<K>]>,
    /// The refusal index, by key-and-level tag.
    refusals: Box<[Refusal]>,
    /// Hashes keys for the refusal index.
    tags: TagHasher,
    /// Hashes keys for the shards and their tables.
    hasher: RandomState,
    gcra: LevelTable<Gcra>,
    clock: TokioClock,
    sweep_every_ns: u64,
    last_sweep_ns: AtomicU64,
}

impl<K> fmt::Debug for KeyedRate<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRate")
            .field("shards", &self.shards.len())
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

/// The number of shards: four per CPU, a power of two, 8 to 256.
fn shard_count() -> usize {
    let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
    cpus.saturating_mul(4).next_power_of_two().clamp(8, 256)
}

impl<K> KeyedRate<K> {
    /// Keys currently tracked (at any level).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}

impl<K: Hash + Eq + Clone> KeyedRate<K> {
    pub(crate) fn new(limit: RateLimit, rate: &LevelTable<f64>, idle_sweep: Duration) -> Self {
        KeyedRate {
            shards: (0..shard_count())
                .map(|_| Shard(RwLock::new(HashTable::new())))
                .collect(),
            refusals: (0..REFUSAL_SLOTS).map(|_| Refusal::default()).collect(),
            tags: TagHasher::new(),
            hasher: RandomState::new(),
            gcra: LevelTable::from_fn(|level| Gcra::new(&limit, rate[level])),
            clock: TokioClock::new(),
            sweep_every_ns: u64::try_from(idle_sweep.as_nanos()).unwrap_or(u64::MAX),
            last_sweep_ns: AtomicU64::new(0),
        }
    }

    /// The shard of a key's hash: bits 49–56 (the table places entries by the low bits and
    /// tags them with the top 7).
    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        &self.shards[(hash >> 49) as usize & (self.shards.len() - 1)]
    }

    /// `Err(retry_after)` when `key` is over its rate at `level`.
    ///
    /// A refusal of a key that floods is decided from the refusal index and this thread's
    /// last reading (no lock, no clock read); anything else is [`check_real`](Self::check_real).
    #[inline]
    pub(crate) fn check(&self, key: &K, level: LoadLevel) -> Result<(), RetryAfter> {
        let tag = tag(self.tags.hash(key), level);
        let refusal = &self.refusals[tag as usize & (REFUSAL_SLOTS - 1)];
        if let Some(retry) = self.clock.cached_refusal(refusal.until(tag)) {
            return Err(retry);
        }
        self.check_real(key, level, refusal, tag)
    }

    /// The real check: the key's state under its shard's read lock (the write lock to
    /// insert a new key), one clock read, the GCRA's CAS. A refusal records the key's "not
    /// before" in the refusal index and grants this thread its credit against it. Out of
    /// line: the cached refusal is the path to keep small.
    #[inline(never)]
    fn check_real(
        &self,
        key: &K,
        level: LoadLevel,
        refusal: &Refusal,
        tag: u64,
    ) -> Result<(), RetryAfter> {
        let gcra = &self.gcra[level];
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        // Each guard ends with its block: the sweep below takes the shards' write locks.
        let known = {
            let map = shard.read();
            map.find(hash, |(k, _)| k == key)
                .map(|(_, state)| self.decide(&state.tat[level], gcra))
        };
        let (outcome, now) = match known {
            Some(decided) => decided,
            None => {
                let mut map = shard.write();
                let (_, state) = map
                    .entry(hash, |(k, _)| k == key, |(k, _)| self.hasher.hash_one(k))
                    .or_insert_with(|| (key.clone(), KeyState::new()))
                    .into_mut();
                self.decide(&state.tat[level], gcra)
            }
        };
        let result = outcome.map_err(|earliest| {
            let retry = Duration::from_nanos(earliest - now);
            refusal.store(tag, earliest);
            TokioClock::grant(now, earliest, retry);
            retry
        });
        self.maybe_sweep(now);
        result
    }

    /// One clock read and the GCRA's CAS on `tat`: `Err(earliest)` when refused, and the
    /// reading.
    #[inline]
    fn decide(&self, tat: &AtomicU64, gcra: &Gcra) -> (Result<(), u64>, u64) {
        let now = self.clock.now_ns();
        (gcra.take(tat, now), now)
    }

    /// Once per sweep period (one CAS decides which caller sweeps): forgets the keys that
    /// are idle at every level, shard by shard (one write lock at a time).
    #[inline]
    fn maybe_sweep(&self, now: u64) {
        let last = self.last_sweep_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.sweep_every_ns
            && self
                .last_sweep_ns
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now);
        }
    }

    /// The instant the limiter's clock counts from.
    #[cfg(test)]
    fn clock_origin(&self) -> tokio::time::Instant {
        self.clock.origin()
    }

    #[cold]
    #[inline(never)]
    fn sweep(&self, now: u64) {
        // A refusal recorded for a key forgotten below would outlive it; they are cheap
        // to record again (at the next real refusal of a key that still floods).
        for refusal in self.refusals.iter() {
            refusal.clear();
        }
        for shard in self.shards.iter() {
            let mut map = shard.write();
            map.retain(|(_, state)| !state.idle(now));
            if map.capacity() > 4 * map.len().max(8) {
                map.shrink_to_fit(|(k, _)| self.hasher.hash_one(k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::GlobalRate;
    use crate::rate::tests::{Reference, arrivals, credit, flood_matches_reference, judge, ns};
    use proptest::prelude::*;

    fn table() -> LevelTable<f64> {
        LevelTable::default_rate()
    }

    /// The reference of `limit` at `level`, from the same quota (as the global tests do).
    fn reference(limit: RateLimit, level: LoadLevel) -> Reference {
        let gcra = Gcra::new(&limit, table()[level]);
        Reference {
            t: gcra.t,
            tau: gcra.tau,
            tat: None,
        }
    }

    #[test]
    fn gcra_is_governors_quota() {
        let limit = RateLimit::per_second(100.0).burst(3);
        assert_eq!(
            Gcra::new(&limit, 1.0),
            Gcra {
                t: 10_000_000,
                tau: 20_000_000
            }
        );
        // Emergency: 20 % of rate and burst (burst rounds to 1).
        assert_eq!(
            Gcra::new(&limit, 0.2),
            Gcra {
                t: 50_000_000,
                tau: 0
            }
        );
        let r = Reference::new(100, 3);
        assert_eq!((r.t, r.tau), (10_000_000, 20_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn scaled_rate_burst_and_retry_after_per_key() {
        let rate = KeyedRate::new(
            RateLimit::per_second(10.0).burst(2),
            &table(),
            Duration::MAX,
        );
        assert!(rate.check(&"a", LoadLevel::Normal).is_ok());
        assert!(rate.check(&"a", LoadLevel::Normal).is_ok());
        assert_eq!(
            rate.check(&"a", LoadLevel::Normal),
            Err(Duration::from_millis(100))
        );
        // Another key has its own burst.
        assert!(rate.check(&"b", LoadLevel::Normal).is_ok());
        // Exact to the nanosecond: refused 1 ns before the token, admitted on it.
        tokio::time::advance(Duration::from_millis(100) - Duration::from_nanos(1)).await;
        assert_eq!(
            rate.check(&"a", LoadLevel::Normal),
            Err(Duration::from_nanos(1))
        );
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert!(rate.check(&"a", LoadLevel::Normal).is_ok());
        // Emergency (20 %): 2/s, burst 1 (0.4 rounds to 1), its own state per key.
        assert!(rate.check(&"a", LoadLevel::Emergency).is_ok());
        assert_eq!(
            rate.check(&"a", LoadLevel::Emergency),
            Err(Duration::from_millis(500))
        );
        assert_eq!(rate.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_steady_flood_decides_exactly_like_the_reference_with_few_clock_reads() {
        let limit = RateLimit::per_second(100.0).burst(3);
        let rate = KeyedRate::new(limit, &table(), Duration::from_secs(60));
        let mut reference = reference(limit, LoadLevel::Normal);
        let (admitted, cached) = flood_matches_reference(
            || rate.check(&7, LoadLevel::Normal),
            &mut reference,
            rate.clock_origin(),
            Duration::from_micros(2),
            Duration::from_millis(200),
        )
        .await;
        // 3 at once, then one per 10 ms for 200 ms.
        assert_eq!(admitted, 3 + 19);
        let refused = 100_000 - admitted;
        assert!(
            cached * 10 >= refused * 8,
            "only {cached} of {refused} refusals without a clock read"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_flood_at_each_level_keeps_that_levels_rate() {
        let limit = RateLimit::per_second(50.0).burst(1);
        let rate = KeyedRate::new(limit, &table(), Duration::from_secs(60));
        for (level, per_second) in [
            (LoadLevel::Normal, 50),
            (LoadLevel::Elevated, 40),
            (LoadLevel::High, 30),
            (LoadLevel::Critical, 20),
            (LoadLevel::Emergency, 10),
        ] {
            let mut reference = reference(limit, level);
            assert_eq!(reference.t, 1_000_000_000 / per_second);
            let (admitted, cached) = flood_matches_reference(
                || rate.check(&1, level),
                &mut reference,
                rate.clock_origin(),
                Duration::from_micros(8),
                Duration::from_millis(500),
            )
            .await;
            assert_eq!(admitted, per_second / 2, "{level:?} at {per_second}/s");
            assert!(cached > 50_000, "{level:?}: {cached} cached refusals");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flooded_key_never_refuses_another_key() {
        let rate = KeyedRate::new(
            RateLimit::per_second(1.0).burst(1),
            &table(),
            Duration::from_secs(60),
        );
        assert!(rate.check(&0u32, LoadLevel::Normal).is_ok());
        for _ in 0..100 {
            tokio::time::advance(Duration::from_micros(1)).await;
            assert!(rate.check(&0, LoadLevel::Normal).is_err());
        }
        assert!(credit() > 0, "the flood earned credit");
        for i in 1..100u32 {
            tokio::time::advance(Duration::from_micros(1)).await;
            // The flooded key refused (from the cache or not), a new key admitted...
            assert!(rate.check(&0, LoadLevel::Normal).is_err());
            assert!(rate.check(&i, LoadLevel::Normal).is_ok(), "key {i}");
        }
        // ...and a known key that conforms again is admitted too, in the middle of a flood.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(rate.check(&0, LoadLevel::Normal).is_ok());
        for _ in 0..50 {
            tokio::time::advance(Duration::from_micros(1)).await;
            assert!(rate.check(&0, LoadLevel::Normal).is_err());
        }
        assert!(credit() > 0);
        assert!(rate.check(&5, LoadLevel::Normal).is_ok(), "key 5 conforms");
        // The global limit on the same thread is not refused by the key's credit either.
        let global = GlobalRate::new(RateLimit::per_second(1.0).burst(1), &table());
        assert!(global.check(LoadLevel::Normal).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_sweep_forgets_idle_keys_and_keeps_busy_ones() {
        let rate = KeyedRate::new(
            RateLimit::per_second(100.0).burst(1),
            &table(),
            Duration::from_secs(1),
        );
        for k in 0..10_000u32 {
            assert!(rate.check(&k, LoadLevel::Normal).is_ok());
        }
        assert_eq!(rate.len(), 10_000);
        // Key 1 used at Emergency (20/s: 50 ms period) at 990 ms: busy until 1 040 ms.
        tokio::time::advance(Duration::from_millis(990)).await;
        assert!(rate.check(&1, LoadLevel::Emergency).is_ok());
        // At 1 s the next real check sweeps: the 9 999 others are back to full burst.
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(rate.check(&20_000, LoadLevel::Normal).is_ok());
        assert_eq!(
            rate.len(),
            2,
            "idle keys forgotten, key 1 and the new key kept"
        );
        let capacity: usize = rate.shards.iter().map(|s| s.read().capacity()).sum();
        assert!(capacity < 1_000, "memory given back: capacity {capacity}");
        // Key 1 still refused at Emergency; a forgotten key decides like a fresh one.
        assert_eq!(
            rate.check(&1, LoadLevel::Emergency),
            Err(Duration::from_millis(40))
        );
        assert!(rate.check(&3, LoadLevel::Normal).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_sweep_run_by_a_known_keys_check_holds_no_lock_of_its_own() {
        let rate = KeyedRate::new(
            RateLimit::per_second(1.0).burst(1),
            &table(),
            Duration::from_millis(100),
        );
        for k in 0..64u32 {
            assert!(rate.check(&k, LoadLevel::Normal).is_ok());
        }
        // Every shard holds keys; the sweep is due at the next real check, of a known key
        // admitted: its shard's read lock must be released before the sweep write-locks it.
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert!(rate.check(&0, LoadLevel::Normal).is_ok());
        assert_eq!(rate.len(), 1, "the 63 others idle since 1 s, swept");
        assert!(rate.check(&1, LoadLevel::Normal).is_ok());
        // The next sweep is run by a known key's real refusal (no credit: 0.5 s since the
        // last reading), with both keys busy until 2.5 s.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            rate.check(&1, LoadLevel::Normal),
            Err(Duration::from_millis(500))
        );
        assert_eq!(rate.len(), 2);
        assert_eq!(rate.last_sweep_ns.load(Ordering::Relaxed), 2_000_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_sweep_keeps_a_key_that_is_not_back_to_full_burst() {
        let rate = KeyedRate::new(
            RateLimit::per_second(1.0).burst(1),
            &table(),
            Duration::from_millis(100),
        );
        assert!(rate.check(&"busy", LoadLevel::Normal).is_ok());
        tokio::time::advance(Duration::from_millis(500)).await;
        // A sweep at 500 ms: "busy" conforms again only at 1 s, so it is kept...
        assert!(rate.check(&"other", LoadLevel::Normal).is_ok());
        assert_eq!(rate.len(), 2);
        // ...and still refused, with the remaining wait.
        assert_eq!(
            rate.check(&"busy", LoadLevel::Normal),
            Err(Duration::from_millis(500))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Random floods, slow stretches, pauses and level changes over three keys (the
        /// first one most of the time): every admission of each key conforms to that key's
        /// and level's reference fed only its admissions (never above the rate); a refusal
        /// the reference would not make is only ever decided from the cache, at most
        /// `MAX_UNREAD` in a row; a true refusal's `retry_after` is never earlier.
        #[test]
        fn keyed_random_arrivals_never_over_admit_and_late_refusals_are_bounded(
            arrivals in arrivals(),
            keys in proptest::collection::vec(prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)], 2_000),
            per_second in 1u64..2_000,
            burst in 1u32..5,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let limit = RateLimit::per_second(per_second as f64).burst(burst);
                let rate = KeyedRate::new(limit, &table(), Duration::from_millis(50));
                let origin = rate.clock_origin();
                let mut references: Vec<LevelTable<Reference>> = (0..3)
                    .map(|_| LevelTable::from_fn(|level| reference(limit, level)))
                    .collect();
                let mut late_in_a_row = 0;
                for ((gap, level), key) in arrivals.into_iter().zip(keys) {
                    tokio::time::advance(Duration::from_nanos(gap)).await;
                    let now = ns(origin);
                    let from_cache = credit() > 0;
                    let reference = &mut references[usize::from(key)][level];
                    judge(rate.check(&key, level), reference, now, from_cache, &mut late_in_a_row)?;
                }
                Ok::<(), TestCaseError>(())
            })?;
        }
    }

    /// Real clock, four threads flooding one key (and one thread a second key): whatever the
    /// interleaving, each key's admissions stay within `burst + elapsed × rate`.
    #[test]
    fn threads_flooding_one_key_on_the_real_clock_never_exceed_the_rate() {
        use std::sync::atomic::AtomicU64;
        const RATE: f64 = 2_000.0;
        const BURST: u32 = 5;
        let rate = KeyedRate::new(
            RateLimit::per_second(RATE).burst(BURST),
            &table(),
            Duration::from_millis(10),
        );
        let admitted = [AtomicU64::new(0), AtomicU64::new(0)];
        let start = std::time::Instant::now();
        let run_for = Duration::from_millis(100);
        std::thread::scope(|scope| {
            for thread in 0..5usize {
                let (rate, admitted) = (&rate, &admitted);
                scope.spawn(move || {
                    let key = String::from(if thread == 4 {
                        "quiet-tenant"
                    } else {
                        "flooding-one"
                    });
                    let mut sent = 0;
                    while sent < 10 || start.elapsed() < run_for {
                        sent += 1;
                        if rate.check(&key, LoadLevel::Normal).is_ok() {
                            admitted[usize::from(thread == 4)].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let elapsed = start.elapsed().as_secs_f64();
        let bound = f64::from(BURST) + elapsed * RATE + 1.0;
        for (key, admitted) in ["flooding", "quiet"].iter().zip(&admitted) {
            let admitted = admitted.load(Ordering::Relaxed);
            assert!(
                (admitted as f64) <= bound,
                "{key}: {admitted} admitted in {elapsed:.3} s, bound {bound:.0}"
            );
            assert!(admitted >= u64::from(BURST), "{key}: the burst at least");
        }
    }
}

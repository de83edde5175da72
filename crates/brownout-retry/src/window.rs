//! The bucket clock shared by the retry budget and the throttle window.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

/// Maps the (pausable) tokio clock onto a ring of `len` buckets of `bucket_nanos` each.
///
/// The hot path is one clock read, one comparison with the end of the current bucket and
/// one load; only the step into a new bucket (once per bucket length) takes a short lock,
/// clears the buckets that aged out and moves the edge.
#[derive(Debug)]
pub(crate) struct BucketClock {
    start: Instant,
    bucket_nanos: u64,
    len: u64,
    /// The current bucket's epoch (bucket number since `start`).
    epoch: AtomicU64,
    /// `epoch % len`.
    current: AtomicUsize,
    /// Where the current bucket ends, in nanoseconds since `start`.
    edge: AtomicU64,
    rotate: Mutex<()>,
}

impl BucketClock {
    pub(crate) fn new(bucket_nanos: u64, len: usize) -> BucketClock {
        let bucket_nanos = bucket_nanos.max(1);
        BucketClock {
            start: Instant::now(),
            bucket_nanos,
            len: len.max(1) as u64,
            epoch: AtomicU64::new(0),
            current: AtomicUsize::new(0),
            edge: AtomicU64::new(bucket_nanos),
            rotate: Mutex::new(()),
        }
    }

    /// Nanoseconds since the clock started (saturating).
    pub(crate) fn now_nanos(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()))
    }

    /// The index of the current bucket; `clear(i)` is called for every bucket that aged out
    /// since the last call, before the index moves.
    #[inline]
    pub(crate) fn index(&self, clear: impl Fn(usize)) -> usize {
        self.index_with(clear, |_, _| {})
    }

    /// [`index`](Self::index), and when the clock moves on to a new bucket, `closed(i, n)`
    /// first (under the rotation lock): `i` is the bucket that was current, `n` how many
    /// bucket lengths passed since it became current (1 when the new bucket follows it).
    #[inline]
    pub(crate) fn index_with(
        &self,
        clear: impl Fn(usize),
        closed: impl FnOnce(usize, u64),
    ) -> usize {
        let now = self.now_nanos();
        if now < self.edge.load(Ordering::Acquire) {
            return self.current.load(Ordering::Acquire);
        }
        self.advance(now, clear, closed)
    }

    /// The bucket the last clock read found current, without reading the clock.
    #[inline]
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    #[cold]
    fn advance(&self, now: u64, clear: impl Fn(usize), closed: impl FnOnce(usize, u64)) -> usize {
        let _guard = self.rotate.lock().unwrap_or_else(PoisonError::into_inner);
        let epoch = now / self.bucket_nanos;
        let seen = self.epoch.load(Ordering::Acquire);
        if epoch > seen {
            closed((seen % self.len) as usize, epoch - seen);
            let steps = (epoch - seen).min(self.len);
            for step in 1..=steps {
                clear(((epoch - steps + step) % self.len) as usize);
            }
            self.epoch.store(epoch, Ordering::Release);
            self.current
                .store((epoch % self.len) as usize, Ordering::Release);
            self.edge.store(
                epoch.saturating_add(1).saturating_mul(self.bucket_nanos),
                Ordering::Release,
            );
        }
        self.current.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn moves_one_bucket_per_length_and_clears_what_aged_out() {
        let clock = BucketClock::new(1_000_000_000, 4);
        let cleared = Mutex::new(Vec::new());
        let index = |c: &BucketClock| c.index(|i| cleared.lock().unwrap().push(i));
        assert_eq!(index(&clock), 0);
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(index(&clock), 0);
        assert!(cleared.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(index(&clock), 1);
        assert_eq!(*cleared.lock().unwrap(), vec![1]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(index(&clock), 3);
        assert_eq!(*cleared.lock().unwrap(), vec![1, 2, 3]);
        // A long silence clears every bucket once.
        cleared.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(index(&clock), 103 % 4);
        let mut all = cleared.lock().unwrap().clone();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 3]);
    }
}

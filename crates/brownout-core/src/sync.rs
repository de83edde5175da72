//! The synchronization primitives the lock-free parts of brownout are written against.
//!
//! Normally these are `std::sync`'s. Built with `RUSTFLAGS="--cfg brownout_loom"` (see
//! `scripts/loom.sh`) they are [loom](https://docs.rs/loom)'s, so the model tests in
//! `tests/loom.rs` explore every interleaving of the code that uses them: the load level
//! atomic of [`LoadSignal`](crate::LoadSignal), and the permit counter and queue hand-off of
//! the admission layer.
//!
//! The cfg is `brownout_loom`, not `loom`: `--cfg loom` would also switch tokio to its own
//! loom build, which does not compile as a plain dependency.
//!
//! Only state whose ordering matters for correctness goes through this module; statistics
//! counters that nothing decides on stay `std` atomics (they would only multiply the
//! interleavings loom explores).
//!
//! ```
//! use brownout_core::sync::{Arc, Mutex, atomic::{AtomicUsize, Ordering}, lock};
//!
//! let counter = Arc::new(AtomicUsize::new(0));
//! counter.fetch_add(1, Ordering::SeqCst);
//! let queue = Mutex::new(Vec::<u32>::new());
//! lock(&queue).push(1);
//! assert_eq!(counter.load(Ordering::SeqCst), lock(&queue).len());
//! ```

#[cfg(not(brownout_loom))]
pub use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(brownout_loom)]
pub use loom::sync::{Arc, Mutex, MutexGuard};

/// Atomic integers and booleans (`std::sync::atomic`, or loom's under `brownout_loom`).
pub mod atomic {
    #[cfg(not(brownout_loom))]
    pub use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

    #[cfg(brownout_loom)]
    pub use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

    /// Marks the middle of a Dekker pair: a `SeqCst` write to one atomic followed by a
    /// `SeqCst` load of another, where two threads doing it crosswise must not both miss
    /// the other's write.
    ///
    /// The C11/Rust model already guarantees that (one total order over every `SeqCst`
    /// operation), so in normal builds this is nothing. loom models `SeqCst` accesses as
    /// `AcqRel` only (its README, "Unsupported features", issue #180), which reports such
    /// pairs as lost wake-ups; under `brownout_loom` this is a `fence(SeqCst)`, which loom
    /// models fully, so the model checks the algorithm under the guarantee the real build has.
    #[inline(always)]
    pub fn seq_cst_pair() {
        #[cfg(brownout_loom)]
        loom::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// Locks `mutex`, ignoring poisoning.
///
/// Every brownout lock guards state that each critical section leaves consistent before
/// anything can panic, so a panic elsewhere while the lock was held breaks nothing.
#[inline]
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

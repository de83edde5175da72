//! The shared load level: one publisher, many cheap readers.

use std::fmt;

use crate::sync::atomic::{AtomicU8, Ordering};
use crate::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::LoadLevel;

/// Marks "no operator override" in [`State::forced`].
const NOT_FORCED: u8 = u8::MAX;

#[derive(Debug)]
struct State {
    /// What readers see: the forced level if any, else the published one.
    effective: AtomicU8,
    /// The last level the publisher (the monitor's detector) published.
    published: AtomicU8,
    /// The operator override, or [`NOT_FORCED`].
    forced: AtomicU8,
}

impl State {
    fn new(level: LoadLevel) -> State {
        State {
            effective: AtomicU8::new(level.as_u8()),
            published: AtomicU8::new(level.as_u8()),
            forced: AtomicU8::new(NOT_FORCED),
        }
    }
}

/// A reader of the current [`LoadLevel`]; cheap to clone, shared by every layer.
///
/// [`level`](LoadSignal::level) is a single relaxed atomic load, meant for the hot path.
/// [`changed`](LoadSignal::changed) waits for the next change through a `tokio::sync::watch`
/// channel, for code that reacts to transitions.
///
/// ```
/// use brownout_core::{LoadLevel, LoadSignal};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (publisher, mut signal) = LoadSignal::channel(LoadLevel::Normal);
/// assert_eq!(signal.level(), LoadLevel::Normal);
///
/// publisher.publish(LoadLevel::High);
/// assert_eq!(signal.level(), LoadLevel::High);
/// assert_eq!(signal.changed().await, Some(LoadLevel::High));
///
/// // An operator override wins over what the detector publishes, until released.
/// publisher.force(LoadLevel::Emergency);
/// publisher.publish(LoadLevel::Normal);
/// assert_eq!(signal.level(), LoadLevel::Emergency);
/// publisher.release();
/// assert_eq!(signal.level(), LoadLevel::Normal);
///
/// // When the publisher is gone, readers keep the last level and `changed` ends.
/// drop(publisher);
/// while signal.changed().await.is_some() {}
/// assert_eq!(signal.level(), LoadLevel::Normal);
/// # }
/// ```
#[derive(Clone)]
pub struct LoadSignal {
    state: Arc<State>,
    rx: watch::Receiver<LoadLevel>,
}

impl LoadSignal {
    /// A publisher and its first reader, starting at `initial`.
    pub fn channel(initial: LoadLevel) -> (LoadPublisher, LoadSignal) {
        let state = Arc::new(State::new(initial));
        let (tx, rx) = watch::channel(initial);
        let publisher = LoadPublisher {
            inner: Arc::new(PublisherInner {
                state: state.clone(),
                tx,
                write: Mutex::new(()),
            }),
        };
        (publisher, LoadSignal { state, rx })
    }

    /// A signal that always reads `level`, for layers used without a monitor.
    /// Its [`changed`](LoadSignal::changed) returns `None` at once.
    pub fn fixed(level: LoadLevel) -> LoadSignal {
        let (_publisher, signal) = LoadSignal::channel(level);
        signal
    }

    /// The current level: one atomic load, no lock, no allocation.
    #[inline]
    pub fn level(&self) -> LoadLevel {
        LoadLevel::saturating_from_u8(self.state.effective.load(Ordering::Relaxed))
    }

    /// Waits until the level changes and returns the new level, or `None` once every
    /// publisher is gone (the level then stays at its last value forever).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses no change; the next call sees it.
    pub async fn changed(&mut self) -> Option<LoadLevel> {
        self.rx.changed().await.ok()?;
        let level = *self.rx.borrow_and_update();
        Some(level)
    }

    /// Whether an operator override is in force.
    pub fn is_forced(&self) -> bool {
        self.state.forced.load(Ordering::Relaxed) != NOT_FORCED
    }

    /// A plain `watch` receiver of the level, for code that wants tokio's own API.
    pub fn subscribe(&self) -> watch::Receiver<LoadLevel> {
        self.rx.clone()
    }
}

impl Default for LoadSignal {
    /// A signal fixed at [`LoadLevel::Normal`].
    fn default() -> Self {
        LoadSignal::fixed(LoadLevel::Normal)
    }
}

impl fmt::Debug for LoadSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadSignal")
            .field("level", &self.level())
            .field("forced", &self.is_forced())
            .finish()
    }
}

struct PublisherInner {
    state: Arc<State>,
    tx: watch::Sender<LoadLevel>,
    /// Serializes writers so `publish` and `force` cannot interleave their two stores.
    /// Never taken by readers.
    write: Mutex<()>,
}

/// The writing side of a [`LoadSignal`], held by the monitor (and by operators for overrides).
///
/// Clones share one channel; readers' [`changed`](LoadSignal::changed) returns `None` once
/// the last clone is dropped.
#[derive(Clone)]
pub struct LoadPublisher {
    inner: Arc<PublisherInner>,
}

impl LoadPublisher {
    /// Publishes the level computed by a detector. Readers see it at once unless an operator
    /// override is in force, in which case it takes effect on [`release`](LoadPublisher::release).
    pub fn publish(&self, level: LoadLevel) {
        let _guard = self.lock();
        self.inner
            .state
            .published
            .store(level.as_u8(), Ordering::Relaxed);
        if self.inner.state.forced.load(Ordering::Relaxed) == NOT_FORCED {
            self.set_effective(level);
        }
    }

    /// Forces every reader to see `level`, whatever the detector publishes, until
    /// [`release`](LoadPublisher::release).
    pub fn force(&self, level: LoadLevel) {
        let _guard = self.lock();
        self.inner
            .state
            .forced
            .store(level.as_u8(), Ordering::Relaxed);
        self.set_effective(level);
    }

    /// Ends an operator override; readers see the last published level again.
    pub fn release(&self) {
        let _guard = self.lock();
        self.inner.state.forced.store(NOT_FORCED, Ordering::Relaxed);
        let published = self.inner.state.published.load(Ordering::Relaxed);
        self.set_effective(LoadLevel::saturating_from_u8(published));
    }

    /// The level readers see now.
    pub fn level(&self) -> LoadLevel {
        LoadLevel::saturating_from_u8(self.inner.state.effective.load(Ordering::Relaxed))
    }

    /// The last level published by the detector (which may differ from [`level`](Self::level)
    /// under an override).
    pub fn published(&self) -> LoadLevel {
        LoadLevel::saturating_from_u8(self.inner.state.published.load(Ordering::Relaxed))
    }

    /// The forced level, if an override is in force.
    pub fn forced(&self) -> Option<LoadLevel> {
        LoadLevel::from_u8(self.inner.state.forced.load(Ordering::Relaxed))
    }

    /// A new reader of this publisher's level.
    pub fn signal(&self) -> LoadSignal {
        LoadSignal {
            state: self.inner.state.clone(),
            rx: self.inner.tx.subscribe(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a poisoned lock protects nothing broken.
        crate::sync::lock(&self.inner.write)
    }

    fn set_effective(&self, level: LoadLevel) {
        // Atomic first, so a reader woken by the watch never sees the old level.
        let previous = self
            .inner
            .state
            .effective
            .swap(level.as_u8(), Ordering::Release);
        if previous != level.as_u8() {
            self.inner.tx.send_replace(level);
        }
    }
}

impl fmt::Debug for LoadPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadPublisher")
            .field("level", &self.level())
            .field("published", &self.published())
            .field("forced", &self.forced())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn readers_see_publishes_and_wake() {
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        let mut reader = signal.clone();
        let waiter = tokio::spawn(async move { reader.changed().await });
        tokio::task::yield_now().await;
        publisher.publish(LoadLevel::Critical);
        assert_eq!(waiter.await.unwrap(), Some(LoadLevel::Critical));
        assert_eq!(signal.level(), LoadLevel::Critical);
        assert_eq!(publisher.signal().level(), LoadLevel::Critical);
    }

    #[tokio::test(start_paused = true)]
    async fn republishing_the_same_level_does_not_wake() {
        let (publisher, mut signal) = LoadSignal::channel(LoadLevel::High);
        publisher.publish(LoadLevel::High);
        let woke = tokio::time::timeout(Duration::from_secs(1), signal.changed()).await;
        assert!(woke.is_err(), "no change, no wake-up");
    }

    #[tokio::test(start_paused = true)]
    async fn override_and_release() {
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        publisher.force(LoadLevel::Emergency);
        assert!(signal.is_forced());
        publisher.publish(LoadLevel::Elevated);
        assert_eq!(signal.level(), LoadLevel::Emergency);
        assert_eq!(publisher.published(), LoadLevel::Elevated);
        assert_eq!(publisher.forced(), Some(LoadLevel::Emergency));
        publisher.release();
        assert!(!signal.is_forced());
        assert_eq!(signal.level(), LoadLevel::Elevated);
        assert_eq!(publisher.forced(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn publisher_dropped_keeps_last_level_without_spinning() {
        let (publisher, mut signal) = LoadSignal::channel(LoadLevel::Normal);
        let clone = publisher.clone();
        publisher.publish(LoadLevel::High);
        drop(publisher);
        // One clone still alive: the channel is open.
        assert_eq!(signal.changed().await, Some(LoadLevel::High));
        drop(clone);
        let mut wakeups = 0;
        while signal.changed().await.is_some() {
            wakeups += 1;
            assert!(wakeups < 2, "changed() must end, not spin");
        }
        assert_eq!(signal.changed().await, None);
        assert_eq!(signal.level(), LoadLevel::High);
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_signal() {
        let mut signal = LoadSignal::fixed(LoadLevel::Critical);
        assert_eq!(signal.level(), LoadLevel::Critical);
        assert_eq!(signal.changed().await, None);
        assert_eq!(LoadSignal::default().level(), LoadLevel::Normal);
    }

    #[test]
    fn concurrent_publishers_and_readers_agree() {
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let publisher = publisher.clone();
                s.spawn(move || {
                    for i in 0..250u8 {
                        let level = LoadLevel::saturating_from_u8((i + t) % 5);
                        if i % 7 == 0 {
                            publisher.force(level);
                            publisher.release();
                        } else {
                            publisher.publish(level);
                        }
                    }
                });
            }
            let signal = signal.clone();
            s.spawn(move || {
                for _ in 0..10_000 {
                    assert!(signal.level() <= LoadLevel::Emergency);
                }
            });
        });
        publisher.publish(LoadLevel::Elevated);
        assert_eq!(signal.level(), LoadLevel::Elevated);
        assert_eq!(*signal.subscribe().borrow(), LoadLevel::Elevated);
    }
}

//! The operator handle of a breaker layer, and its [`PressureSource`] for the monitor.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use brownout_core::PressureSource;

use crate::breaker::{BreakerSnapshot, BreakerState};
use crate::key::Breakers;

/// A shareable handle on every breaker of one [`CircuitBreakLayer`](crate::CircuitBreakLayer)
/// (and every service it made): state, snapshots, and operator overrides.
///
/// `Key` is `()` for a single breaker, or the key type of a per-key layer.
///
/// ```
/// use brownout_breaker::{BreakerState, CircuitBreakLayer, CircuitBreakConfig};
///
/// let layer = CircuitBreakLayer::new(CircuitBreakConfig::default());
/// let handle = layer.handle();
/// assert_eq!(handle.state(), BreakerState::Closed);
/// handle.force_open();
/// assert_eq!(handle.state(), BreakerState::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.state(), BreakerState::Closed);
/// ```
pub struct CircuitBreakHandle<Key = ()> {
    breakers: Arc<dyn Breakers<Key>>,
}

impl<Key: 'static> Clone for CircuitBreakHandle<Key> {
    fn clone(&self) -> Self {
        CircuitBreakHandle {
            breakers: self.breakers.clone(),
        }
    }
}

impl<Key: 'static> fmt::Debug for CircuitBreakHandle<Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakHandle")
            .field("breakers", &self.breakers)
            .finish()
    }
}

impl<Key: 'static> CircuitBreakHandle<Key> {
    pub(crate) fn new(breakers: Arc<dyn Breakers<Key>>) -> CircuitBreakHandle<Key> {
        CircuitBreakHandle { breakers }
    }

    /// The layer's name (the `breaker` metrics label).
    pub fn name(&self) -> &'static str {
        self.breakers.core().name
    }

    /// The state of the single breaker; for a per-key layer, the worst state over its keys
    /// (open, else half-open, else closed).
    pub fn state(&self) -> BreakerState {
        if let Some(state) = self.breakers.single_state() {
            return state;
        }
        self.breakers.core().worst_state()
    }

    /// The state of the breaker for `key`, if it exists.
    pub fn state_of(&self, key: &Key) -> Option<BreakerState> {
        self.breakers.state_of(key)
    }

    /// A snapshot of the single breaker; for a per-key layer, the sums over its keys
    /// (state = worst state, trips and consecutive failures = maxima).
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.breakers.snapshot_all()
    }

    /// A snapshot of the breaker for `key`, if it exists.
    pub fn snapshot_of(&self, key: &Key) -> Option<BreakerSnapshot> {
        self.breakers.snapshot_of(key)
    }

    /// The keys with a breaker now.
    pub fn keys(&self) -> Vec<Key> {
        self.breakers.keys()
    }

    /// How many breakers exist (1 for a single breaker).
    pub fn len(&self) -> usize {
        self.breakers.len()
    }

    /// Whether no breaker exists yet (a per-key layer before its first request).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Breakers open (or forced open) now.
    pub fn open_count(&self) -> usize {
        self.breakers.core().open.load(Ordering::Relaxed)
    }

    /// Forces every breaker (and every new key's) open until
    /// [`force_closed`](Self::force_closed) or [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.breakers.force_all(Some(BreakerState::ForcedOpen));
    }

    /// Forces every breaker (and every new key's) closed: calls pass, nothing trips.
    pub fn force_closed(&self) {
        self.breakers.force_all(Some(BreakerState::ForcedClosed));
    }

    /// Ends overrides and closes every breaker with an empty window and no trip history.
    pub fn reset(&self) {
        self.breakers.force_all(None);
    }

    /// Forces the breaker of `key` open; `false` if it does not exist.
    pub fn force_open_key(&self, key: &Key) -> bool {
        self.breakers.force_key(key, Some(BreakerState::ForcedOpen))
    }

    /// Forces the breaker of `key` closed; `false` if it does not exist.
    pub fn force_closed_key(&self, key: &Key) -> bool {
        self.breakers
            .force_key(key, Some(BreakerState::ForcedClosed))
    }

    /// Resets the breaker of `key`; `false` if it does not exist.
    pub fn reset_key(&self, key: &Key) -> bool {
        self.breakers.force_key(key, None)
    }

    /// Forgets per-key breakers idle for longer than the idle timeout now (it also happens
    /// on its own as new keys arrive); returns how many.
    pub fn purge_idle(&self) -> usize {
        self.breakers.purge_idle()
    }

    /// A [`PressureSource`] reading the number of open breakers, for the monitor.
    pub fn pressure_source(&self) -> BreakerPressure<Key> {
        BreakerPressure {
            handle: self.clone(),
            fraction: false,
        }
    }

    /// A [`PressureSource`] reading the fraction (0 – 1) of breakers that are open.
    pub fn pressure_fraction(&self) -> BreakerPressure<Key> {
        BreakerPressure {
            handle: self.clone(),
            fraction: true,
        }
    }
}

/// Open breakers as a monitor signal: a count, or a fraction of all breakers.
///
/// ```
/// use brownout_breaker::{CircuitBreakLayer, CircuitBreakConfig};
/// use brownout_core::PressureSource;
///
/// let handle = CircuitBreakLayer::new(CircuitBreakConfig::default()).handle();
/// let source = handle.pressure_source();
/// assert_eq!(source.sample(), Some(0.0));
/// handle.force_open();
/// assert_eq!(source.sample(), Some(1.0));
/// assert_eq!(handle.pressure_fraction().sample(), Some(1.0));
/// ```
pub struct BreakerPressure<Key = ()> {
    handle: CircuitBreakHandle<Key>,
    fraction: bool,
}

impl<Key: 'static> fmt::Debug for BreakerPressure<Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPressure")
            .field("name", &self.handle.name())
            .field("fraction", &self.fraction)
            .finish()
    }
}

impl<Key: 'static> PressureSource for BreakerPressure<Key> {
    fn name(&self) -> &str {
        self.handle.name()
    }

    fn sample(&self) -> Option<f64> {
        let core = self.handle.breakers.core();
        let open = core.open.load(Ordering::Relaxed) as f64;
        if self.fraction {
            let total = core.slots.load(Ordering::Relaxed);
            Some(if total == 0 {
                0.0
            } else {
                (open / total as f64).min(1.0)
            })
        } else {
            Some(open)
        }
    }
}

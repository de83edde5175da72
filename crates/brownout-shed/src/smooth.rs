//! Smooth mode: the boundary class is shed in a fraction that ramps up after the level rises.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brownout_core::{LevelTable, LoadLevel, PrioritySet};
use tokio::time::Instant;

/// The level byte of a state nobody has observed yet.
const UNKNOWN: u64 = 0xFF;
/// Ramp ends are stored in 56 bits of microseconds (about 2 280 years).
const END_MAX: u64 = (1 << 56) - 1;

/// The shared ramp state: the last level observed and when the boundary class's ramp ends.
///
/// Packed in one `AtomicU64` (`ramp_end_micros << 8 | level`) so a level change is one CAS
/// and a reader never sees a level with another level's ramp.
#[derive(Debug)]
pub(crate) struct Smooth {
    ramp_micros: u64,
    base: Instant,
    state: AtomicU64,
}

impl Smooth {
    pub(crate) fn new(ramp: Duration) -> Smooth {
        Smooth {
            // At least 1 µs, so the division below never divides by zero.
            ramp_micros: u64::try_from(ramp.as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, END_MAX),
            base: Instant::now(),
            state: AtomicU64::new(UNKNOWN),
        }
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.base)
                .as_micros(),
        )
        .unwrap_or(END_MAX)
        .min(END_MAX)
    }

    /// Records `level` if it differs from the last level observed: one relaxed load when
    /// it does not (the common case).
    #[inline]
    pub(crate) fn observe(&self, level: LoadLevel, table: &LevelTable<PrioritySet>) {
        let state = self.state.load(Ordering::Relaxed);
        if state & 0xFF != u64::from(level.as_u8()) {
            self.transition(level, state, table);
        }
    }

    #[cold]
    fn transition(&self, level: LoadLevel, mut state: u64, table: &LevelTable<PrioritySet>) {
        let now = self.now_micros();
        loop {
            let old = state & 0xFF;
            if old == u64::from(level.as_u8()) {
                return;
            }
            let new_boundary = table[level].highest();
            let end = match LoadLevel::from_u8(old as u8) {
                // First observation: we do not know when the level was entered; shed as
                // configured (ramp complete) rather than admit a burst.
                None => 0,
                Some(previous) if table[previous].highest() == new_boundary => state >> 8,
                // Rising to a new boundary class: start its ramp now.
                Some(previous) if level > previous => (now + self.ramp_micros).min(END_MAX),
                // Falling: the new boundary was already shed at the level above; keep it shed.
                Some(_) => 0,
            };
            match self.state.compare_exchange_weak(
                state,
                (end << 8) | u64::from(level.as_u8()),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    tracing::debug!(
                        target: "brownout::shed",
                        from = LoadLevel::from_u8(old as u8).map_or("unknown", LoadLevel::as_str),
                        to = level.as_str(),
                        boundary = new_boundary.map_or("none", |p| p.as_str()),
                        ramping = end > now,
                        "load shed: level changed"
                    );
                    return;
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// The fraction of the boundary class shed now, in `[0, 1]`, growing linearly over the
    /// ramp and never decreasing while the level holds.
    pub(crate) fn fraction(&self) -> f64 {
        let end = self.state.load(Ordering::Relaxed) >> 8;
        if end == 0 {
            return 1.0;
        }
        let remaining = end.saturating_sub(self.now_micros());
        if remaining == 0 {
            return 1.0;
        }
        let remaining = remaining.min(self.ramp_micros);
        1.0 - remaining as f64 / self.ramp_micros as f64
    }
}

/// A per-service-clone xorshift64* generator: no lock, no shared atomic per request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rng(u64);

impl Rng {
    /// The generator of stream `stream` of `seed` (splitmix64, never zero).
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed.wrapping_add(stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// A uniform value in `[0, 1)`.
    #[inline]
    pub(crate) fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_uniform_enough_and_in_range() {
        let mut rng = Rng::new(7, 0);
        let n = 100_000;
        let mut below_half = 0;
        for _ in 0..n {
            let x = rng.next_unit();
            assert!((0.0..1.0).contains(&x));
            if x < 0.5 {
                below_half += 1;
            }
        }
        let share = f64::from(below_half) / f64::from(n);
        assert!((0.49..0.51).contains(&share), "{share}");
    }

    #[test]
    fn streams_differ() {
        let a = Rng::new(1, 0).next_unit();
        let b = Rng::new(1, 1).next_unit();
        assert_ne!(a, b);
    }
}

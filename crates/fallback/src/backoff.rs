//! Exponential backoff with full jitter: [`backoff_ceiling`], the pluggable [`Jitter`] and the
//! default [`FullJitter`].

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The ceiling of the delay before the `retry`-th retry (from 0) on the same candidate:
/// `min(cap, base × 2^retry)`.
pub fn backoff_ceiling(base: Duration, cap: Duration, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// Draws the actual delay below a ceiling. Closures `Fn(Duration) -> Duration` are jitters;
/// results above the ceiling are clamped to it.
///
/// ```
/// use std::time::Duration;
/// use rampart_fallback::FallbackLayer;
///
/// # fn main() -> Result<(), rampart_fallback::ConfigError> {
/// // No jitter at all: every delay is its ceiling (handy in tests).
/// let layer = FallbackLayer::builder()
///     .jitter(|ceiling: Duration| ceiling)
///     .build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
pub trait Jitter: Send + Sync + 'static {
    /// A delay in `[0, ceiling]`.
    fn jitter(&self, ceiling: Duration) -> Duration;
}

impl<F> Jitter for F
where
    F: Fn(Duration) -> Duration + Send + Sync + 'static,
{
    fn jitter(&self, ceiling: Duration) -> Duration {
        self(ceiling)
    }
}

/// Full jitter: uniform in `[0, ceiling]`, from the thread's RNG or a seeded one. Ceilings of
/// a millisecond or more are drawn in whole milliseconds (tokio's timer resolution, so delays
/// on paused time are exact).
#[derive(Debug, Default)]
pub struct FullJitter {
    seeded: Option<Mutex<StdRng>>,
}

impl FullJitter {
    /// Full jitter from the thread-local RNG (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Full jitter from an RNG seeded with `seed`: the same seed gives the same delays.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seeded: Some(Mutex::new(StdRng::seed_from_u64(seed))),
        }
    }
}

impl Jitter for FullJitter {
    fn jitter(&self, ceiling: Duration) -> Duration {
        let max = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        const NANOS_PER_MS: u64 = 1_000_000;
        let (max, unit) = if max >= NANOS_PER_MS {
            (max / NANOS_PER_MS, NANOS_PER_MS)
        } else {
            (max, 1)
        };
        let n = match &self.seeded {
            Some(rng) => rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .random_range(0..=max),
            None => rand::rng().random_range(0..=max),
        };
        Duration::from_nanos(n * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        let got: Vec<u128> = (0..6)
            .map(|n| backoff_ceiling(base, cap, n).as_millis())
            .collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_ceiling(base, cap, 200), cap);
    }

    #[test]
    fn full_jitter_stays_below_the_ceiling_and_seeds_repeat() {
        let a = FullJitter::seeded(7);
        let b = FullJitter::seeded(7);
        for _ in 0..100 {
            let c = Duration::from_millis(500);
            let x = a.jitter(c);
            assert!(x <= c);
            assert_eq!(x, b.jitter(c));
        }
        assert_eq!(FullJitter::new().jitter(Duration::ZERO), Duration::ZERO);
    }
}

//! Observed time to first byte per target: a bounded window of recent samples, for percentile
//! hedge delays.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rampart_core::Target;

/// Targets tracked at most (the catalog bounds them in practice; this bounds a foreign stack).
const MAX_TARGETS: usize = 10_000;

/// Recent times to first byte, per target and per shape (JSON or stream): a JSON answer's head
/// comes after the whole generation, a stream's first chunk long before, so they are kept apart.
#[derive(Debug)]
pub(crate) struct Latencies {
    per_window: usize,
    map: Mutex<HashMap<(Target, bool), VecDeque<Duration>>>,
}

impl Latencies {
    pub(crate) fn new(per_window: usize) -> Self {
        Self {
            per_window: per_window.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Records one observation.
    pub(crate) fn record(&self, target: &Target, stream: bool, d: Duration) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (target.clone(), stream);
        if !map.contains_key(&key) && map.len() >= MAX_TARGETS {
            return;
        }
        let w = map.entry(key).or_default();
        if w.len() >= self.per_window {
            w.pop_front();
        }
        w.push_back(d);
    }

    /// The `p`-th percentile (nearest rank) of the window, once it holds `min_samples`.
    pub(crate) fn percentile(
        &self,
        target: &Target,
        stream: bool,
        p: f64,
        min_samples: usize,
    ) -> Option<Duration> {
        let mut samples: Vec<Duration> = {
            let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            let w = map.get(&(target.clone(), stream))?;
            if w.len() < min_samples.max(1) {
                return None;
            }
            w.iter().copied().collect()
        };
        let n = samples.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let k = rank.clamp(1, n) - 1;
        let (_, v, _) = samples.select_nth_unstable(k);
        Some(*v)
    }

    /// Observations held for a target.
    pub(crate) fn count(&self, target: &Target, stream: bool) -> usize {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(target.clone(), stream)).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentile_over_a_sliding_window() {
        let l = Latencies::new(100);
        let t = Target::new("p", "m");
        for ms in 1..=100u64 {
            l.record(&t, false, Duration::from_millis(ms));
        }
        assert_eq!(
            l.percentile(&t, false, 95.0, 20),
            Some(Duration::from_millis(95))
        );
        assert_eq!(
            l.percentile(&t, false, 50.0, 20),
            Some(Duration::from_millis(50))
        );
        // Streams are kept apart.
        assert_eq!(l.percentile(&t, true, 50.0, 1), None);
        // Too few samples.
        assert_eq!(l.percentile(&t, false, 50.0, 101), None);
        // The window slides: 100 samples of 1 s push the old ones out.
        for _ in 0..100 {
            l.record(&t, false, Duration::from_secs(1));
        }
        assert_eq!(
            l.percentile(&t, false, 50.0, 1),
            Some(Duration::from_secs(1))
        );
        assert_eq!(l.count(&t, false), 100);
    }
}

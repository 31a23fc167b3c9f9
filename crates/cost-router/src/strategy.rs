//! Ordering a tier's candidates: strategies, request hints and the latency tracker.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use http::HeaderMap;
use rampart_core::Error;
use rampart_core::Target;
use rampart_core::headers::{X_RAMPART_LATENCY_BUDGET_MS, X_RAMPART_MAX_PRICE, X_RAMPART_PRIORITY};
use serde::Deserialize;

use crate::catalog::ModelInfo;
use crate::error::bad_hint;

/// How a tier's candidates are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Lowest blended price first: input + output USD per million tokens (ties: catalog order).
    #[default]
    Cheapest,
    /// A weighted random order (weights from config, default 1.0 each): the first candidate is
    /// drawn with probability weight / total, the next among the rest, and so on. Deterministic
    /// when `seed` is set.
    Weighted,
    /// Lowest EWMA of observed time to first byte first; targets never observed come first
    /// (so that they get measured), cheapest first among them.
    LowestLatency,
    /// Highest blended price first (price as a proxy for strength): what
    /// `x-rampart-priority: high` uses.
    Strongest,
}

impl Strategy {
    /// The name used in `x-rampart-route`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cheapest => "cheapest",
            Self::Weighted => "weighted",
            Self::LowestLatency => "lowest_latency",
            Self::Strongest => "strongest",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `x-rampart-priority`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Priority {
    /// Cost over quality: every model of the route, cheapest first (tier ignored).
    Low,
    /// The default: classify, then the route's strategy.
    #[default]
    Medium,
    /// Quality over cost: the route's strongest tier, strongest (most expensive) first.
    High,
}

/// The routing hints a request carries in headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Hints {
    /// `x-rampart-priority`.
    pub priority: Priority,
    /// `x-rampart-max-price`: USD per million output tokens.
    pub max_price: Option<f64>,
    /// `x-rampart-latency-budget-ms`.
    pub latency_budget: Option<Duration>,
}

impl Hints {
    /// Reads the hint headers; a malformed value is a 400 (`invalid_header`) naming the header.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, Error> {
        let mut hints = Hints::default();
        if let Some(v) = headers.get(X_RAMPART_PRIORITY) {
            let v = v.to_str().unwrap_or("").trim();
            hints.priority = if v.eq_ignore_ascii_case("low") {
                Priority::Low
            } else if v.eq_ignore_ascii_case("medium") || v.eq_ignore_ascii_case("normal") {
                Priority::Medium
            } else if v.eq_ignore_ascii_case("high") {
                Priority::High
            } else {
                return Err(bad_hint("x-rampart-priority", "low, medium or high"));
            };
        }
        if let Some(v) = headers.get(X_RAMPART_MAX_PRICE) {
            let p = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|p| p.is_finite() && *p >= 0.0)
                .ok_or_else(|| {
                    bad_hint(
                        "x-rampart-max-price",
                        "a non-negative number of USD per million output tokens",
                    )
                })?;
            hints.max_price = Some(p);
        }
        if let Some(v) = headers.get(X_RAMPART_LATENCY_BUDGET_MS) {
            let ms = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    bad_hint(
                        "x-rampart-latency-budget-ms",
                        "a whole number of milliseconds",
                    )
                })?;
            hints.latency_budget = Some(Duration::from_millis(ms));
        }
        Ok(hints)
    }
}

/// EWMA of the time to first byte per target, fed from `ResponseFacts.ttfb`.
#[derive(Debug)]
pub struct LatencyTracker {
    alpha_bits: AtomicU64,
    ewma: RwLock<HashMap<Target, f64>>,
}

/// At most this many targets are tracked (a guard against unbounded growth).
const MAX_TRACKED: usize = 4096;

impl LatencyTracker {
    /// A tracker giving the newest sample weight `alpha` (clamped to (0, 1]).
    pub fn new(alpha: f64) -> Self {
        let t = Self {
            alpha_bits: AtomicU64::new(0),
            ewma: RwLock::new(HashMap::new()),
        };
        t.set_alpha(alpha);
        t
    }

    pub(crate) fn set_alpha(&self, alpha: f64) {
        let a = if alpha.is_finite() && alpha > 0.0 {
            alpha.min(1.0)
        } else {
            0.2
        };
        self.alpha_bits.store(a.to_bits(), Ordering::Relaxed);
    }

    /// Records one observed time to first byte.
    pub fn observe(&self, target: &Target, ttfb: Duration) {
        let alpha = f64::from_bits(self.alpha_bits.load(Ordering::Relaxed));
        let sample = ttfb.as_secs_f64() * 1000.0;
        let mut map = self.ewma.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = map.get_mut(target) {
            *v = alpha * sample + (1.0 - alpha) * *v;
        } else if map.len() < MAX_TRACKED {
            map.insert(target.clone(), sample);
        }
    }

    /// The current EWMA in milliseconds, if the target was observed.
    pub fn ewma_ms(&self, target: &Target) -> Option<f64> {
        self.ewma
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(target)
            .copied()
    }

    /// EWMAs of several models at once (one lock).
    pub(crate) fn snapshot(&self, models: &[&ModelInfo]) -> Vec<Option<f64>> {
        let map = self.ewma.read().unwrap_or_else(PoisonError::into_inner);
        models.iter().map(|m| map.get(&m.target).copied()).collect()
    }
}

/// A splitmix64 sequence: deterministic when seeded, shared by every request.
#[derive(Debug)]
pub(crate) struct Sequence {
    state: AtomicU64,
}

impl Sequence {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        Self {
            state: AtomicU64::new(seed.unwrap_or_else(rand::random)),
        }
    }

    pub(crate) fn reseed(&self, seed: u64) {
        self.state.store(seed, Ordering::Relaxed);
    }

    /// The next value in [0, 1).
    pub(crate) fn next_f64(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What ordering needs besides the models.
pub(crate) struct OrderCtx<'a> {
    pub latency: &'a LatencyTracker,
    pub weights: &'a dyn Fn(&ModelInfo) -> f64,
    pub seq: &'a Sequence,
}

/// Orders `models` (indices into `catalog`) in place by `strategy`. Stable: ties keep the
/// incoming (catalog) order.
pub(crate) fn order(models: &mut [&ModelInfo], strategy: Strategy, ctx: &OrderCtx<'_>) {
    match strategy {
        Strategy::Cheapest => {
            models.sort_by(|a, b| a.blended_price().total_cmp(&b.blended_price()));
        }
        Strategy::Strongest => {
            models.sort_by(|a, b| b.blended_price().total_cmp(&a.blended_price()));
        }
        Strategy::LowestLatency => {
            let ewma = ctx.latency.snapshot(models);
            let mut keyed: Vec<(Option<f64>, &ModelInfo)> =
                ewma.into_iter().zip(models.iter().copied()).collect();
            keyed.sort_by(|(la, a), (lb, b)| match (la, lb) {
                (None, None) => a.blended_price().total_cmp(&b.blended_price()),
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.total_cmp(y),
            });
            for (slot, (_, m)) in models.iter_mut().zip(keyed) {
                *slot = m;
            }
        }
        Strategy::Weighted => {
            // Sampling without replacement: draw the next candidate among the rest.
            let n = models.len();
            for i in 0..n {
                let rest = &models[i..];
                let total: f64 = rest.iter().map(|m| (ctx.weights)(m)).sum();
                if total <= 0.0 {
                    break;
                }
                let mut r = ctx.seq.next_f64() * total;
                let mut pick = rest.len() - 1;
                for (j, m) in rest.iter().enumerate() {
                    let w = (ctx.weights)(m);
                    if r < w {
                        pick = j;
                        break;
                    }
                    r -= w;
                }
                models.swap(i, i + pick);
                // Keep the remaining ones in catalog order for determinism.
                models[i + 1..].sort_by(|a, b| a.name().cmp(b.name()));
            }
        }
    }
}

/// Applies a latency budget: targets whose EWMA fits (or that were never observed) first, in
/// their current order; the others after them, fastest first.
pub(crate) fn apply_latency_budget(
    models: &mut Vec<&ModelInfo>,
    budget: Duration,
    latency: &LatencyTracker,
) {
    let budget_ms = budget.as_secs_f64() * 1000.0;
    let ewma = latency.snapshot(models);
    let mut fit = Vec::with_capacity(models.len());
    let mut slow = Vec::new();
    for (m, e) in models.iter().copied().zip(ewma) {
        match e {
            Some(ms) if ms > budget_ms => slow.push((ms, m)),
            _ => fit.push(m),
        }
    }
    slow.sort_by(|a, b| a.0.total_cmp(&b.0));
    fit.extend(slow.into_iter().map(|(_, m)| m));
    *models = fit;
}

//! The breakers of one layer, by key, and the operator's [`BreakerHandle`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use rampart_core::Clock;
use tokio::time::Instant;

use crate::config::CircuitBreakerConfig;
use crate::key::KeyExtractor;
use crate::state::{Admit, BreakerState, Changes, Event, Machine};

/// Name of the state gauge.
pub const STATE_GAUGE: &str = "rampart_breaker_state";
/// Name of the transitions counter.
pub const TRANSITIONS_COUNTER: &str = "rampart_breaker_transitions_total";

/// Configuration and clock, shared by every breaker of a layer.
pub(crate) struct Policy {
    pub config: CircuitBreakerConfig,
    pub clock: Box<dyn Clock>,
}

impl Policy {
    #[inline]
    pub fn now(&self) -> Instant {
        self.clock.now()
    }
}

/// One key's breaker.
pub(crate) struct Breaker {
    key: Arc<str>,
    policy: Arc<Policy>,
    machine: Mutex<Machine>,
}

impl Breaker {
    fn new(key: Arc<str>, policy: Arc<Policy>) -> Self {
        let machine = Machine::new(&policy.config, policy.now());
        metrics::gauge!(STATE_GAUGE, "target" => key.to_string())
            .set(BreakerState::Closed.gauge_value());
        Self {
            key,
            policy,
            machine: Mutex::new(machine),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // The machine is only changed by code that cannot panic half-way; a poisoned lock only
        // means a panic elsewhere while it was held.
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run<R>(&self, f: impl FnOnce(&mut Machine, &CircuitBreakerConfig, &mut Changes) -> R) -> R {
        let mut changes = Changes::default();
        let r = {
            let mut m = self.lock();
            f(&mut m, &self.policy.config, &mut changes)
        };
        if !changes.is_empty() {
            self.emit(&changes);
        }
        r
    }

    fn emit(&self, changes: &Changes) {
        for t in changes.transitions() {
            match t.open_for {
                Some(open_for) => tracing::warn!(
                    target: "rampart::circuit_breaker",
                    key = %self.key,
                    from = t.from.as_str(),
                    to = t.to.as_str(),
                    reason = t.reason,
                    open_for = ?open_for,
                    "circuit breaker opened"
                ),
                None => tracing::info!(
                    target: "rampart::circuit_breaker",
                    key = %self.key,
                    from = t.from.as_str(),
                    to = t.to.as_str(),
                    reason = t.reason,
                    "circuit breaker transition"
                ),
            }
            metrics::gauge!(STATE_GAUGE, "target" => self.key.to_string()).set(t.to.gauge_value());
            metrics::counter!(
                TRANSITIONS_COUNTER,
                "target" => self.key.to_string(),
                "to" => t.to.as_str()
            )
            .increment(1);
        }
        if let Some(cooldown) = changes.cooldown {
            tracing::info!(
                target: "rampart::circuit_breaker",
                key = %self.key,
                cooldown = ?cooldown,
                "upstream rate limited: cooling down"
            );
        }
    }

    pub fn admit(&self, now: Instant) -> Admit {
        self.run(|m, c, ch| m.admit(c, now, ch))
    }

    pub fn record(&self, generation: u64, probe: Option<u64>, event: Event) {
        let now = self.policy.now();
        self.run(|m, c, ch| m.record(c, generation, probe, event, now, ch));
    }

    fn state(&self) -> BreakerState {
        let now = self.policy.now();
        self.run(|m, c, ch| {
            m.refresh(c, now, ch);
            m.state()
        })
    }

    fn snapshot(&self) -> BreakerSnapshot {
        let now = self.policy.now();
        let view = self.run(|m, c, ch| {
            m.refresh(c, now, ch);
            m.view(now)
        });
        BreakerSnapshot {
            key: self.key.to_string(),
            state: view.state,
            open_left: view.open_left,
            cooldown_left: view.cooldown_left,
            consecutive_opens: view.consecutive_opens,
            consecutive_failures: view.consecutive_failures,
            calls: view.totals.calls,
            failures: view.totals.failures,
            slow_calls: view.totals.slow,
            probes_in_flight: view.probes_in_flight,
            probe_successes: view.probe_successes,
        }
    }
}

/// Everything a layer shares between its services and handles.
pub(crate) struct Shared {
    pub policy: Arc<Policy>,
    pub extractor: Box<dyn KeyExtractor>,
    map: RwLock<HashMap<Arc<str>, Arc<Breaker>>>,
    warned_full: AtomicBool,
}

impl Shared {
    pub fn new(policy: Policy, extractor: Box<dyn KeyExtractor>) -> Self {
        Self {
            policy: Arc::new(policy),
            extractor,
            map: RwLock::new(HashMap::new()),
            warned_full: AtomicBool::new(false),
        }
    }

    fn get(&self, key: &str) -> Option<Arc<Breaker>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The breaker of `key`, created when missing. With `respect_cap`, `None` when the map
    /// is full and `key` is new (the request then passes through untracked).
    pub fn breaker(&self, key: &str, respect_cap: bool) -> Option<Arc<Breaker>> {
        if let Some(b) = self.get(key) {
            return Some(b);
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = map.get(key) {
            return Some(b.clone());
        }
        if respect_cap && map.len() >= self.policy.config.max_keys {
            drop(map);
            if !self.warned_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: "rampart::circuit_breaker",
                    max_keys = self.policy.config.max_keys,
                    "circuit breaker key limit reached: requests for new keys pass through untracked"
                );
            }
            return None;
        }
        let key: Arc<str> = Arc::from(key);
        let b = Arc::new(Breaker::new(key.clone(), self.policy.clone()));
        map.insert(key, b.clone());
        Some(b)
    }

    fn all(&self) -> Vec<Arc<Breaker>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A view of one breaker, from [`BreakerHandle::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The key (by default the target, `provider/model`, or the model).
    pub key: String,
    /// The state.
    pub state: BreakerState,
    /// While open: the time left before it turns half-open.
    pub open_left: Option<Duration>,
    /// While a 429 cooldown runs: the time left.
    pub cooldown_left: Option<Duration>,
    /// Opens since the last clean close (the open time is `open_base × this`, capped).
    pub consecutive_opens: u32,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Calls counted in the current window.
    pub calls: u32,
    /// Failures counted in the current window.
    pub failures: u32,
    /// Slow calls counted in the current window.
    pub slow_calls: u32,
    /// While half-open: probes admitted and not yet ended.
    pub probes_in_flight: u32,
    /// While half-open: probes that succeeded.
    pub probe_successes: u32,
}

/// The operator's handle on a layer's breakers: read states, force open, reset, disable.
/// Cheap to clone; obtained from [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle)
/// or [`CircuitBreaker::handle`](crate::CircuitBreaker::handle), and shared with every service
/// the layer built.
///
/// State changes that only depend on time (an open time that ended, a probe past its deadline)
/// are applied when the next request for the key arrives or when the handle reads the key.
#[derive(Clone)]
pub struct BreakerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("keys", &self.len())
            .finish()
    }
}

impl BreakerHandle {
    /// The state of `key`'s breaker, `None` when no request for it was seen (nor any
    /// operator action taken on it).
    pub fn state(&self, key: &str) -> Option<BreakerState> {
        self.shared.get(key).map(|b| b.state())
    }

    /// A snapshot of `key`'s breaker.
    pub fn get(&self, key: &str) -> Option<BreakerSnapshot> {
        self.shared.get(key).map(|b| b.snapshot())
    }

    /// Every breaker, sorted by key.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let mut all: Vec<BreakerSnapshot> =
            self.shared.all().iter().map(|b| b.snapshot()).collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Forces `key` open: every request is refused (503, `Retry-After` = `open_base`) until
    /// [`reset`](Self::reset). Creates the breaker when missing, even past `max_keys`.
    pub fn force_open(&self, key: &str) {
        if let Some(b) = self.shared.breaker(key, false) {
            b.run(|m, _, ch| m.force_open(ch));
        }
    }

    /// Closes `key` with a fresh window; forgets its open count and any 429 cooldown.
    pub fn reset(&self, key: &str) {
        if let Some(b) = self.shared.breaker(key, false) {
            b.run(|m, _, ch| m.reset(ch));
        }
    }

    /// Disables `key`: every request passes and nothing is counted, until
    /// [`reset`](Self::reset) or [`force_open`](Self::force_open).
    pub fn disable(&self, key: &str) {
        if let Some(b) = self.shared.breaker(key, false) {
            b.run(|m, _, ch| m.disable(ch));
        }
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

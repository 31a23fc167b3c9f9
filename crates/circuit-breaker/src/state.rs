//! The per-key state machine. Pure: every method takes `now`, nothing here reads a clock, locks
//! or logs; [`crate::registry`] wraps it in a mutex and emits the transitions it reports.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::CircuitBreakerConfig;

/// The state of one breaker (the value of the `rampart_breaker_state` gauge in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass and outcomes are counted (0).
    Closed,
    /// Calls are refused until the open time ends (1).
    Open,
    /// A fixed number of probe calls pass; the rest are refused (2).
    HalfOpen,
    /// Opened by an operator: calls are refused until [`reset`](crate::BreakerHandle::reset) (3).
    ForcedOpen,
    /// Turned off by an operator: calls pass and nothing is counted (4).
    Disabled,
}

impl BreakerState {
    /// The name used in logs and in the `to` label of `rampart_breaker_transitions_total`:
    /// `closed`, `open`, `half_open`, `forced_open`, `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
        }
    }

    /// The value of the `rampart_breaker_state` gauge: 0 closed, 1 open, 2 half-open,
    /// 3 forced open, 4 disabled.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
            Self::ForcedOpen => 3.0,
            Self::Disabled => 4.0,
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one call told about the upstream, already classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// It worked (`slow`: its time to first byte was over the slow-call threshold).
    Success { slow: bool },
    /// The upstream failed.
    Failure { slow: bool },
    /// A 429, with the upstream's delay when it gave one.
    RateLimited { retry_after: Option<Duration> },
    /// Says nothing about the upstream (client error, cancellation, local refusal, dropped).
    Ignored,
}

/// What to do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Disabled breaker: pass, record nothing.
    Untracked,
    /// Closed: pass and record the outcome against `generation`.
    Call { generation: u64 },
    /// Half-open: pass as probe `id`; its permit is held until the outcome is recorded.
    Probe { generation: u64, id: u64 },
    /// Refuse; the client may retry after this long. `cooldown`: because of the upstream's 429,
    /// not because the breaker is open.
    Refuse {
        /// Time until a call may pass.
        retry_after: Duration,
        /// Refused for a 429 cooldown.
        cooldown: bool,
    },
}

/// One state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: &'static str,
    /// For a change to open: how long it stays open.
    pub open_for: Option<Duration>,
}

/// The transitions (at most two) and the cooldown started by one operation.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    items: [Option<Transition>; 2],
    /// A 429 cooldown started or extended: its length from now.
    pub cooldown: Option<Duration>,
}

impl Changes {
    fn push(&mut self, t: Transition) {
        if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
            *slot = Some(t);
        }
    }

    /// The transitions, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = &Transition> {
        self.items.iter().flatten()
    }

    /// Whether nothing happened that must be logged.
    pub fn is_empty(&self) -> bool {
        self.items[0].is_none() && self.cooldown.is_none()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Counts over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

/// A sliding window of `buckets` buckets of `width` each, counted from `epoch`.
#[derive(Debug)]
struct Window {
    buckets: Box<[Bucket]>,
    width_nanos: u64,
    epoch: Instant,
}

impl Window {
    fn new(config: &CircuitBreakerConfig, epoch: Instant) -> Self {
        let n = config.window_buckets.max(1);
        let width = u64::try_from(config.window.as_nanos() / u128::from(n)).unwrap_or(u64::MAX);
        Self {
            buckets: vec![Bucket::default(); n as usize].into_boxed_slice(),
            width_nanos: width.max(1),
            epoch,
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let since =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        since / self.width_nanos
    }

    fn record(&mut self, now: Instant, failure: bool, slow: bool) -> Totals {
        let i = self.index(now);
        let n = self.buckets.len() as u64;
        if let Some(b) = self.buckets.get_mut((i % n) as usize) {
            if b.index != i || b.calls == 0 {
                *b = Bucket {
                    index: i,
                    ..Bucket::default()
                };
            }
            b.calls = b.calls.saturating_add(1);
            b.failures = b.failures.saturating_add(u32::from(failure));
            b.slow = b.slow.saturating_add(u32::from(slow));
        }
        self.totals_at(i)
    }

    fn totals(&self, now: Instant) -> Totals {
        self.totals_at(self.index(now))
    }

    fn totals_at(&self, i: u64) -> Totals {
        let n = self.buckets.len() as u64;
        let mut t = Totals::default();
        for b in self.buckets.iter() {
            if b.calls > 0 && b.index <= i && i - b.index < n {
                t.calls = t.calls.saturating_add(b.calls);
                t.failures = t.failures.saturating_add(b.failures);
                t.slow = t.slow.saturating_add(b.slow);
            }
        }
        t
    }

    fn clear(&mut self) {
        for b in self.buckets.iter_mut() {
            *b = Bucket::default();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open { until: Instant },
    HalfOpen,
    ForcedOpen,
    Disabled,
}

/// A read-only view of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct View {
    pub state: BreakerState,
    pub open_left: Option<Duration>,
    pub cooldown_left: Option<Duration>,
    pub consecutive_opens: u32,
    pub consecutive_failures: u32,
    pub totals: Totals,
    pub probes_in_flight: u32,
    pub probe_successes: u32,
}

/// The state machine of one breaker.
#[derive(Debug)]
pub(crate) struct Machine {
    mode: Mode,
    generation: u64,
    window: Window,
    consecutive_failures: u32,
    consecutive_opens: u32,
    cooldown_until: Option<Instant>,
    next_probe: u64,
    /// Probes in flight with their deadlines, oldest first (deadlines are increasing).
    probes: Vec<(u64, Instant)>,
    probe_successes: u32,
}

impl Machine {
    pub fn new(config: &CircuitBreakerConfig, now: Instant) -> Self {
        Self {
            mode: Mode::Closed,
            generation: 0,
            window: Window::new(config, now),
            consecutive_failures: 0,
            consecutive_opens: 0,
            cooldown_until: None,
            next_probe: 0,
            probes: Vec::new(),
            probe_successes: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.mode {
            Mode::Closed => BreakerState::Closed,
            Mode::Open { .. } => BreakerState::Open,
            Mode::HalfOpen => BreakerState::HalfOpen,
            Mode::ForcedOpen => BreakerState::ForcedOpen,
            Mode::Disabled => BreakerState::Disabled,
        }
    }

    fn set_mode(
        &mut self,
        mode: Mode,
        reason: &'static str,
        open_for: Option<Duration>,
        changes: &mut Changes,
    ) {
        let from = self.state();
        self.mode = mode;
        self.generation = self.generation.wrapping_add(1);
        self.probes.clear();
        self.probe_successes = 0;
        let to = self.state();
        if from != to {
            changes.push(Transition {
                from,
                to,
                reason,
                open_for,
            });
        }
    }

    fn open_duration(&self, config: &CircuitBreakerConfig) -> Duration {
        let d = config
            .open_base
            .saturating_mul(self.consecutive_opens.max(1))
            .min(config.open_max);
        if config.jitter > 0.0 {
            let factor = 1.0 - config.jitter * rand::random::<f64>();
            Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(d)
        } else {
            d
        }
    }

    fn trip(
        &mut self,
        config: &CircuitBreakerConfig,
        now: Instant,
        reason: &'static str,
        changes: &mut Changes,
    ) {
        self.consecutive_opens = self.consecutive_opens.saturating_add(1);
        let d = self.open_duration(config);
        self.window.clear();
        self.consecutive_failures = 0;
        self.set_mode(Mode::Open { until: now + d }, reason, Some(d), changes);
    }

    fn close(&mut self, reason: &'static str, changes: &mut Changes) {
        self.window.clear();
        self.consecutive_failures = 0;
        self.consecutive_opens = 0;
        self.set_mode(Mode::Closed, reason, None, changes);
    }

    /// Applies what time alone changes: an open time that ended (to half-open), a probe past
    /// its deadline (back to open), a cooldown that ended.
    pub fn refresh(&mut self, config: &CircuitBreakerConfig, now: Instant, changes: &mut Changes) {
        if self.cooldown_until.is_some_and(|until| now >= until) {
            self.cooldown_until = None;
        }
        if let Mode::Open { until } = self.mode
            && now >= until
        {
            self.set_mode(Mode::HalfOpen, "open_elapsed", None, changes);
        }
        if self.mode == Mode::HalfOpen
            && self
                .probes
                .first()
                .is_some_and(|&(_, deadline)| now >= deadline)
        {
            self.trip(config, now, "probe_timeout", changes);
        }
    }

    /// Decides whether a call may go to the upstream.
    pub fn admit(
        &mut self,
        config: &CircuitBreakerConfig,
        now: Instant,
        changes: &mut Changes,
    ) -> Admit {
        self.refresh(config, now, changes);
        let refuse = |until: Instant, cooldown: bool| Admit::Refuse {
            retry_after: until
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
            cooldown,
        };
        match self.mode {
            Mode::Disabled => Admit::Untracked,
            Mode::ForcedOpen => Admit::Refuse {
                retry_after: config.open_base,
                cooldown: false,
            },
            Mode::Open { until } => refuse(until, false),
            Mode::HalfOpen => {
                if let Some(until) = self.cooldown_until {
                    return refuse(until, true);
                }
                let taken = (self.probes.len() as u64).saturating_add(self.probe_successes.into());
                if taken < u64::from(config.half_open_probes) {
                    let id = self.next_probe;
                    self.next_probe = self.next_probe.wrapping_add(1);
                    self.probes.push((id, now + config.probe_timeout));
                    Admit::Probe {
                        generation: self.generation,
                        id,
                    }
                } else {
                    // Every permit is taken: the earliest a permit can come back (or the probe
                    // deadline sends the breaker back to open) is the oldest probe's deadline.
                    refuse(self.probes.first().map_or(now, |&(_, d)| d), false)
                }
            }
            Mode::Closed => match self.cooldown_until {
                Some(until) => refuse(until, true),
                None => Admit::Call {
                    generation: self.generation,
                },
            },
        }
    }

    fn start_cooldown(
        &mut self,
        config: &CircuitBreakerConfig,
        now: Instant,
        retry_after: Option<Duration>,
        changes: &mut Changes,
    ) {
        let d = retry_after
            .unwrap_or(config.rate_limit_cooldown)
            .min(config.rate_limit_cooldown_max);
        if d.is_zero() {
            return;
        }
        let until = now + d;
        if self.cooldown_until.is_none_or(|cur| until > cur) {
            self.cooldown_until = Some(until);
            changes.cooldown = Some(d);
        }
    }

    fn should_trip(&self, config: &CircuitBreakerConfig, t: Totals) -> Option<&'static str> {
        if config.consecutive_failures > 0
            && self.consecutive_failures >= config.consecutive_failures
        {
            return Some("consecutive_failures");
        }
        if t.calls >= config.min_calls {
            let calls = f64::from(t.calls);
            if t.failures > 0 && f64::from(t.failures) >= config.failure_rate_threshold * calls {
                return Some("failure_rate");
            }
            if config.slow_call_threshold.is_some()
                && t.slow > 0
                && f64::from(t.slow) >= config.slow_call_rate_threshold * calls
            {
                return Some("slow_call_rate");
            }
        }
        None
    }

    /// Records the outcome of a call admitted as `generation` (and `probe`, for a probe).
    /// Outcomes of calls admitted before the last transition are ignored.
    pub fn record(
        &mut self,
        config: &CircuitBreakerConfig,
        generation: u64,
        probe: Option<u64>,
        event: Event,
        now: Instant,
        changes: &mut Changes,
    ) {
        self.refresh(config, now, changes);
        if generation != self.generation {
            return;
        }
        match (self.mode, probe) {
            (Mode::Closed, None) => match event {
                Event::Success { slow } | Event::Failure { slow } => {
                    let failure = matches!(event, Event::Failure { .. });
                    if failure {
                        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    } else {
                        self.consecutive_failures = 0;
                    }
                    let totals = self.window.record(now, failure, slow);
                    if let Some(reason) = self.should_trip(config, totals) {
                        self.trip(config, now, reason, changes);
                    }
                }
                Event::RateLimited { retry_after } => {
                    self.start_cooldown(config, now, retry_after, changes);
                }
                Event::Ignored => {}
            },
            (Mode::HalfOpen, Some(id)) => {
                let Some(pos) = self.probes.iter().position(|&(p, _)| p == id) else {
                    return;
                };
                self.probes.remove(pos);
                match event {
                    Event::Success { slow: false } => {
                        self.probe_successes = self.probe_successes.saturating_add(1);
                        if self.probe_successes >= config.half_open_probes {
                            self.close("probes_succeeded", changes);
                        }
                    }
                    Event::Success { slow: true } => {
                        self.trip(config, now, "probe_slow", changes);
                    }
                    Event::Failure { .. } => self.trip(config, now, "probe_failed", changes),
                    Event::RateLimited { retry_after } => {
                        self.start_cooldown(config, now, retry_after, changes);
                    }
                    Event::Ignored => {}
                }
            }
            _ => {}
        }
    }

    /// Operator: refuse every call until reset.
    pub fn force_open(&mut self, changes: &mut Changes) {
        self.set_mode(Mode::ForcedOpen, "forced_open", None, changes);
    }

    /// Operator: closed with a fresh window, open time and cooldown forgotten.
    pub fn reset(&mut self, changes: &mut Changes) {
        self.cooldown_until = None;
        self.close("reset", changes);
    }

    /// Operator: pass every call, count nothing.
    pub fn disable(&mut self, changes: &mut Changes) {
        self.cooldown_until = None;
        self.window.clear();
        self.consecutive_failures = 0;
        self.consecutive_opens = 0;
        self.set_mode(Mode::Disabled, "disabled", None, changes);
    }

    pub fn view(&self, now: Instant) -> View {
        View {
            state: self.state(),
            open_left: match self.mode {
                Mode::Open { until } => Some(until.saturating_duration_since(now)),
                _ => None,
            },
            cooldown_left: self
                .cooldown_until
                .map(|until| until.saturating_duration_since(now)),
            consecutive_opens: self.consecutive_opens,
            consecutive_failures: self.consecutive_failures,
            totals: self.window.totals(now),
            probes_in_flight: u32::try_from(self.probes.len()).unwrap_or(u32::MAX),
            probe_successes: self.probe_successes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            window: Duration::from_secs(10),
            window_buckets: 10,
            min_calls: 4,
            failure_rate_threshold: 0.5,
            consecutive_failures: 0,
            jitter: 0.0,
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(12),
            half_open_probes: 2,
            ..CircuitBreakerConfig::default()
        }
    }

    fn call(m: &mut Machine, c: &CircuitBreakerConfig, now: Instant, event: Event) -> Admit {
        let mut ch = Changes::default();
        let a = m.admit(c, now, &mut ch);
        match a {
            Admit::Call { generation } => m.record(c, generation, None, event, now, &mut ch),
            Admit::Probe { generation, id } => {
                m.record(c, generation, Some(id), event, now, &mut ch)
            }
            _ => {}
        }
        a
    }

    #[test]
    fn window_slides_by_buckets() {
        let c = cfg();
        let t0 = Instant::now();
        let mut w = Window::new(&c, t0);
        w.record(t0, true, false);
        w.record(t0 + Duration::from_millis(5_500), false, false);
        assert_eq!(w.totals(t0 + Duration::from_millis(9_999)).calls, 2);
        // The first bucket ([0s, 1s)) leaves the window at 10s.
        assert_eq!(
            w.totals(t0 + Duration::from_secs(10)),
            Totals {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(w.totals(t0 + Duration::from_secs(16)).calls, 0);
    }

    #[test]
    fn trips_by_rate_then_probes_close() {
        let c = cfg();
        let t0 = Instant::now();
        let mut m = Machine::new(&c, t0);
        for ev in [true, false, true] {
            let e = if ev {
                Event::Failure { slow: false }
            } else {
                Event::Success { slow: false }
            };
            call(&mut m, &c, t0, e);
        }
        assert_eq!(m.state(), BreakerState::Closed);
        call(&mut m, &c, t0, Event::Success { slow: false });
        assert_eq!(m.state(), BreakerState::Open);
        assert_eq!(
            call(&mut m, &c, t0 + Duration::from_secs(1), Event::Ignored),
            Admit::Refuse {
                retry_after: Duration::from_secs(4),
                cooldown: false,
            }
        );
        let t1 = t0 + Duration::from_secs(5);
        call(&mut m, &c, t1, Event::Success { slow: false });
        assert_eq!(m.state(), BreakerState::HalfOpen);
        call(&mut m, &c, t1, Event::Success { slow: false });
        assert_eq!(m.state(), BreakerState::Closed);
        assert_eq!(m.view(t1).totals, Totals::default());
        assert_eq!(m.view(t1).consecutive_opens, 0);
    }
}

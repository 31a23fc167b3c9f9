//! Model-based test: random outcome sequences and time steps through the real layer, checked
//! against a small reference state machine after every step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{ErrKind, KEY, Reply, Scripted, req};
use proptest::prelude::*;
use rampart_circuit_breaker::{
    BreakerState, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer,
};
use rampart_core::error::find_error;
use rampart_core::{ErrorKind, Outcome};
use tower::{Layer, Service, ServiceExt};

const BUCKET_MS: u64 = 2_000;
const BUCKETS: u64 = 5;
const MIN_CALLS: usize = 3;
const RATE: f64 = 0.5;
const CONSECUTIVE: u32 = 3;
const SLOW_RATE: f64 = 0.75;
const OPEN_BASE: u64 = 2_000;
const OPEN_MAX: u64 = 5_000;
const PROBES: usize = 2;
const PROBE_TIMEOUT: u64 = 3_000;
const COOLDOWN: u64 = 1_000;
const COOLDOWN_MAX: u64 = 4_000;

fn cfg() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        window: Duration::from_millis(BUCKET_MS * BUCKETS),
        window_buckets: BUCKETS as u32,
        min_calls: MIN_CALLS as u32,
        failure_rate_threshold: RATE,
        consecutive_failures: CONSECUTIVE,
        slow_call_threshold: Some(Duration::from_millis(1_000)),
        slow_call_rate_threshold: SLOW_RATE,
        open_base: Duration::from_millis(OPEN_BASE),
        open_max: Duration::from_millis(OPEN_MAX),
        jitter: 0.0,
        half_open_probes: PROBES as u32,
        probe_timeout: Duration::from_millis(PROBE_TIMEOUT),
        rate_limit_cooldown: Duration::from_millis(COOLDOWN),
        rate_limit_cooldown_max: Duration::from_millis(COOLDOWN_MAX),
        max_keys: 10,
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Ok,
    Slow,
    Fail500,
    Connect,
    Client400,
    Gone,
    RateLimited(Option<u64>),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Call(Kind),
    Hold,
    Release,
    Advance(u64),
    ForceOpen,
    Reset,
    Disable,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Ok),
        1 => Just(Kind::Slow),
        3 => Just(Kind::Fail500),
        1 => Just(Kind::Connect),
        1 => Just(Kind::Client400),
        1 => Just(Kind::Gone),
        1 => proptest::option::of(0u64..6).prop_map(Kind::RateLimited),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => kind().prop_map(Op::Call),
        2 => Just(Op::Hold),
        2 => Just(Op::Release),
        6 => (0u64..4_000).prop_map(Op::Advance),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Reset),
        1 => Just(Op::Disable),
    ]
}

// ---- the reference ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Closed,
    Open(u64),
    HalfOpen,
    Forced,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    Success(bool),
    Failure,
    RateLimited(Option<u64>),
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Adm {
    Pass,
    Call(u64),
    Probe(u64, u64),
    Refused,
}

#[derive(Debug)]
struct Model {
    mode: Mode,
    generation: u64,
    /// (bucket, failure, slow) of every call counted since the window was last cleared.
    calls: Vec<(u64, bool, bool)>,
    consecutive: u32,
    opens: u64,
    cooldown: Option<u64>,
    probes: Vec<(u64, u64)>,
    successes: usize,
    next_probe: u64,
}

impl Model {
    fn new() -> Self {
        Self {
            mode: Mode::Closed,
            generation: 0,
            calls: Vec::new(),
            consecutive: 0,
            opens: 0,
            cooldown: None,
            probes: Vec::new(),
            successes: 0,
            next_probe: 0,
        }
    }

    fn set(&mut self, mode: Mode) {
        self.mode = mode;
        self.generation += 1;
        self.probes.clear();
        self.successes = 0;
    }

    fn trip(&mut self, t: u64) {
        self.opens += 1;
        self.calls.clear();
        self.consecutive = 0;
        self.set(Mode::Open(t + (OPEN_BASE * self.opens).min(OPEN_MAX)));
    }

    fn close(&mut self) {
        self.calls.clear();
        self.consecutive = 0;
        self.opens = 0;
        self.set(Mode::Closed);
    }

    fn window(&self, t: u64) -> (usize, usize, usize) {
        let cur = t / BUCKET_MS;
        let live: Vec<_> = self
            .calls
            .iter()
            .filter(|(b, _, _)| cur - b < BUCKETS)
            .collect();
        (
            live.len(),
            live.iter().filter(|c| c.1).count(),
            live.iter().filter(|c| c.2).count(),
        )
    }

    fn refresh(&mut self, t: u64) {
        if self.cooldown.is_some_and(|c| t >= c) {
            self.cooldown = None;
        }
        if let Mode::Open(until) = self.mode
            && t >= until
        {
            self.set(Mode::HalfOpen);
        }
        if self.mode == Mode::HalfOpen && self.probes.first().is_some_and(|p| t >= p.1) {
            self.trip(t);
        }
    }

    fn admit(&mut self, t: u64) -> Adm {
        self.refresh(t);
        match self.mode {
            Mode::Disabled => Adm::Pass,
            Mode::Forced | Mode::Open(_) => Adm::Refused,
            Mode::HalfOpen => {
                if self.cooldown.is_some() || self.probes.len() + self.successes >= PROBES {
                    Adm::Refused
                } else {
                    let id = self.next_probe;
                    self.next_probe += 1;
                    self.probes.push((id, t + PROBE_TIMEOUT));
                    Adm::Probe(self.generation, id)
                }
            }
            Mode::Closed => {
                if self.cooldown.is_some() {
                    Adm::Refused
                } else {
                    Adm::Call(self.generation)
                }
            }
        }
    }

    fn cool(&mut self, t: u64, secs: Option<u64>) {
        let d = secs.map_or(COOLDOWN, |s| s * 1_000).min(COOLDOWN_MAX);
        if d > 0 && self.cooldown.is_none_or(|c| t + d > c) {
            self.cooldown = Some(t + d);
        }
    }

    fn record(&mut self, t: u64, adm: Adm, ev: Ev) {
        self.refresh(t);
        match adm {
            Adm::Call(g) if g == self.generation && self.mode == Mode::Closed => match ev {
                Ev::Success(_) | Ev::Failure => {
                    let failure = ev == Ev::Failure;
                    let slow = matches!(ev, Ev::Success(true));
                    self.consecutive = if failure { self.consecutive + 1 } else { 0 };
                    self.calls.push((t / BUCKET_MS, failure, slow));
                    let (calls, failures, slows) = self.window(t);
                    let trip = self.consecutive >= CONSECUTIVE
                        || (calls >= MIN_CALLS
                            && ((failures > 0 && failures as f64 >= RATE * calls as f64)
                                || (slows > 0 && slows as f64 >= SLOW_RATE * calls as f64)));
                    if trip {
                        self.trip(t);
                    }
                }
                Ev::RateLimited(s) => self.cool(t, s),
                _ => {}
            },
            Adm::Probe(g, id) if g == self.generation && self.mode == Mode::HalfOpen => {
                let Some(pos) = self.probes.iter().position(|p| p.0 == id) else {
                    return;
                };
                self.probes.remove(pos);
                match ev {
                    Ev::Success(false) => {
                        self.successes += 1;
                        if self.successes >= PROBES {
                            self.close();
                        }
                    }
                    Ev::Success(true) | Ev::Failure => self.trip(t),
                    Ev::RateLimited(s) => self.cool(t, s),
                    Ev::Ignored => {}
                }
            }
            _ => {}
        }
    }

    fn state(&mut self, t: u64) -> BreakerState {
        self.refresh(t);
        match self.mode {
            Mode::Closed => BreakerState::Closed,
            Mode::Open(_) => BreakerState::Open,
            Mode::HalfOpen => BreakerState::HalfOpen,
            Mode::Forced => BreakerState::ForcedOpen,
            Mode::Disabled => BreakerState::Disabled,
        }
    }
}

fn reply(k: Kind) -> (Reply, Ev) {
    match k {
        Kind::Ok => (Reply::ok(), Ev::Success(false)),
        Kind::Slow => (Reply::slow(Duration::from_millis(1_500)), Ev::Success(true)),
        Kind::Fail500 => (Reply::status(500), Ev::Failure),
        Kind::Connect => (Reply::Err(ErrKind::Connect), Ev::Failure),
        Kind::Client400 => (Reply::status(400), Ev::Ignored),
        Kind::Gone => (Reply::ended(Outcome::ClientGone), Ev::Ignored),
        Kind::RateLimited(s) => (Reply::Status(429, s), Ev::RateLimited(s)),
    }
}

fn is_refusal(e: &rampart_core::BoxError) -> bool {
    find_error(e).is_some_and(|e| matches!(e.kind(), ErrorKind::CircuitOpen { .. }))
}

async fn run(ops: Vec<Op>) {
    let layer = CircuitBreakerLayer::from_config(cfg()).unwrap();
    let h = layer.handle();
    let svc: CircuitBreaker<Scripted> = layer.layer(Scripted::default());
    // Create the breaker at t = 0, as the model's epoch.
    h.reset(KEY);
    let mut m = Model::new();
    let mut t = 0u64;
    let mut held = std::collections::VecDeque::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Call(k) => {
                let (r, ev) = reply(k);
                let adm = m.admit(t);
                let result = svc.clone().oneshot(req(r)).await;
                let was_refused = result.as_ref().err().is_some_and(is_refusal);
                assert_eq!(was_refused, adm == Adm::Refused, "step {step}: {op:?}");
                if adm != Adm::Refused {
                    m.record(t, adm, ev);
                }
            }
            Op::Hold => {
                let adm = m.admit(t);
                let mut fut = tokio_test::task::spawn(svc.clone().call(req(Reply::Hang)));
                match fut.poll() {
                    std::task::Poll::Ready(Err(e)) => {
                        assert!(is_refusal(&e));
                        assert_eq!(adm, Adm::Refused, "step {step}");
                    }
                    std::task::Poll::Pending => {
                        assert_ne!(adm, Adm::Refused, "step {step}");
                        held.push_back((fut, adm));
                    }
                    std::task::Poll::Ready(Ok(_)) => panic!("a hung call answered"),
                }
            }
            Op::Release => {
                if let Some((fut, adm)) = held.pop_front() {
                    drop(fut);
                    m.record(t, adm, Ev::Ignored);
                }
            }
            Op::Advance(ms) => {
                tokio::time::advance(Duration::from_millis(ms)).await;
                t += ms;
            }
            Op::ForceOpen => {
                h.force_open(KEY);
                m.set(Mode::Forced);
            }
            Op::Reset => {
                h.reset(KEY);
                m.cooldown = None;
                m.close();
            }
            Op::Disable => {
                h.disable(KEY);
                m.cooldown = None;
                m.calls.clear();
                m.consecutive = 0;
                m.opens = 0;
                m.set(Mode::Disabled);
            }
        }
        let expected = m.state(t);
        let snap = h.get(KEY).unwrap();
        assert_eq!(snap.state, expected, "step {step}: {op:?}\nmodel: {m:?}");
        let (calls, failures, slow) = m.window(t);
        assert_eq!(
            (
                snap.calls as usize,
                snap.failures as usize,
                snap.slow_calls as usize
            ),
            (calls, failures, slow),
            "step {step}: window"
        );
        assert_eq!(u64::from(snap.consecutive_opens), m.opens, "step {step}");
        let open_left = match m.mode {
            Mode::Open(until) => Some(Duration::from_millis(until - t)),
            _ => None,
        };
        assert_eq!(snap.open_left, open_left, "step {step}");
        assert_eq!(
            snap.probes_in_flight as usize,
            m.probes.len(),
            "step {step}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn layer_matches_the_reference(ops in proptest::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(ops));
    }
}

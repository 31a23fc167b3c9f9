//! [`FallbackConfig`]: plain `Deserialize + Default` data, validated by
//! [`FallbackLayer::from_config`](crate::FallbackLayer::from_config) and the builder.

use std::collections::BTreeMap;
use std::time::Duration;

use rampart_core::commit::CommitConfig;
use serde::Deserialize;

use crate::error::ConfigError;

/// The hard cap on [`FallbackConfig::max_attempts`].
pub const MAX_ATTEMPTS_CAP: u32 = 10;

/// How the fallback behaves. Every field is optional in TOML; durations are written `"30s"`,
/// `"500ms"`, `"2m"`.
///
/// ```toml
/// deadline = "120s"
/// max_attempts = 3
/// retries_per_candidate = 0
/// context_length_fallback = false
///
/// [chains]
/// "gpt-4.1" = ["claude-sonnet-4.5", "deepseek-v3.2"]
///
/// [backoff]
/// base = "200ms"
/// cap = "10s"
///
/// [budget]
/// ratio = 0.2
/// min_per_second = 10.0
/// ttl = "10s"
///
/// [stream]
/// first_token_timeout = "60s"
/// idle_timeout = "30s"
/// max_held_bytes = 65536
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// Static chains per requested model, used when the request carries no
    /// [`RouteDecision`](rampart_core::RouteDecision): `"gpt-4.1" = ["claude-sonnet-4.5"]` tries
    /// `gpt-4.1`, then `claude-sonnet-4.5`. Default: none.
    pub chains: BTreeMap<String, Vec<String>>,
    /// One deadline for the whole request: every attempt, every backoff sleep and the wait for
    /// a stream's first content must fit in it. Default `120s`.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Upstream attempts in total, over every candidate (refused candidates do not count).
    /// `1..=10`. Default `3`.
    pub max_attempts: u32,
    /// Extra attempts on a candidate that is not the last before moving to the next one (the
    /// last candidate is retried while attempts, deadline and budget allow). Default `0`.
    pub retries_per_candidate: u32,
    /// Move on a `400` whose error code is `context_length_exceeded` to the next candidate with
    /// a larger context window. Default `false`.
    pub context_length_fallback: bool,
    /// Backoff between attempts on the same candidate.
    pub backoff: BackoffConfig,
    /// The shared retry budget.
    pub budget: BudgetConfig,
    /// The streaming commit point.
    pub stream: StreamConfig,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            chains: BTreeMap::new(),
            deadline: Duration::from_secs(120),
            max_attempts: 3,
            retries_per_candidate: 0,
            context_length_fallback: false,
            backoff: BackoffConfig::default(),
            budget: BudgetConfig::default(),
            stream: StreamConfig::default(),
        }
    }
}

/// Exponential backoff with full jitter: before the n-th retry on the same candidate (n from
/// 0), a delay drawn uniformly in `[0, min(cap, base × 2ⁿ)]`, never shorter than the
/// upstream's `Retry-After` / `retry-after-ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// The ceiling of the first delay. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// The largest ceiling. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
        }
    }
}

/// A retry budget shared by every request through the layer (as in Finagle and gRPC): retries
/// and fallback attempts beyond a request's first may use `ratio` of the requests seen over the
/// last `ttl`, plus `min_per_second × ttl` in reserve.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Share of recent requests that may be retried (`0.0..=1000.0`). Default `0.2`.
    pub ratio: f64,
    /// Retries per second always allowed, whatever the traffic (`0.0..=1e6`). Default `10.0`.
    pub min_per_second: f64,
    /// The sliding window deposits and withdrawals are counted over (`1s..=60s`). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10.0,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Bounds on waiting for a stream's first content-bearing chunk (the commit point; see
/// [`rampart_core::commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Longest wait, from the upstream call, for the first content-bearing chunk. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub first_token_timeout: Duration,
    /// Longest silence between two frames before the first content. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most bytes held before committing anyway. Default `65536`.
    pub max_held_bytes: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        let c = CommitConfig::default();
        Self {
            first_token_timeout: c.first_token_timeout,
            idle_timeout: c.idle_timeout,
            max_held_bytes: c.max_held_bytes,
        }
    }
}

impl From<StreamConfig> for CommitConfig {
    fn from(s: StreamConfig) -> Self {
        CommitConfig {
            first_token_timeout: s.first_token_timeout,
            idle_timeout: s.idle_timeout,
            max_held_bytes: s.max_held_bytes,
        }
    }
}

const MAX_RATIO: f64 = 1000.0;
const MAX_MIN_PER_SECOND: f64 = 1e6;
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(60);

fn positive(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(ConfigError::ZeroDuration { field })
    } else {
        Ok(())
    }
}

fn figure(field: &'static str, value: f64, max: f64) -> Result<(), ConfigError> {
    if value.is_finite() && (0.0..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Budget { field, max, value })
    }
}

impl FallbackConfig {
    /// Checks that the configuration can work: `max_attempts` in `1..=10`, positive `deadline`,
    /// stream timeouts and `max_held_bytes`, `backoff.cap ≥ backoff.base`, budget figures in
    /// range, `budget.ttl` in `1s..=60s`, no empty model name in a chain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ATTEMPTS_CAP).contains(&self.max_attempts) {
            return Err(ConfigError::MaxAttempts {
                value: self.max_attempts,
                cap: MAX_ATTEMPTS_CAP,
            });
        }
        positive("deadline", self.deadline)?;
        positive(
            "stream.first_token_timeout",
            self.stream.first_token_timeout,
        )?;
        positive("stream.idle_timeout", self.stream.idle_timeout)?;
        if self.stream.max_held_bytes == 0 {
            return Err(ConfigError::MaxHeldBytes);
        }
        if self.backoff.cap < self.backoff.base {
            return Err(ConfigError::BackoffCapBelowBase {
                base: self.backoff.base,
                cap: self.backoff.cap,
            });
        }
        figure("budget.ratio", self.budget.ratio, MAX_RATIO)?;
        figure(
            "budget.min_per_second",
            self.budget.min_per_second,
            MAX_MIN_PER_SECOND,
        )?;
        if !(MIN_TTL..=MAX_TTL).contains(&self.budget.ttl) {
            return Err(ConfigError::BudgetTtl(self.budget.ttl));
        }
        for (model, chain) in &self.chains {
            if model.is_empty() || chain.iter().any(String::is_empty) {
                return Err(ConfigError::EmptyModel {
                    model: model.clone(),
                });
            }
        }
        Ok(())
    }

    /// A copy with every out-of-range value clamped into range (what
    /// [`FallbackLayer::new`](crate::FallbackLayer::new) uses): durations of zero become the
    /// defaults, figures are clamped, empty model names are dropped.
    pub fn sanitized(&self) -> Self {
        let d = Self::default();
        let mut c = self.clone();
        c.max_attempts = c.max_attempts.clamp(1, MAX_ATTEMPTS_CAP);
        if c.deadline.is_zero() {
            c.deadline = d.deadline;
        }
        if c.stream.first_token_timeout.is_zero() {
            c.stream.first_token_timeout = d.stream.first_token_timeout;
        }
        if c.stream.idle_timeout.is_zero() {
            c.stream.idle_timeout = d.stream.idle_timeout;
        }
        if c.stream.max_held_bytes == 0 {
            c.stream.max_held_bytes = d.stream.max_held_bytes;
        }
        c.backoff.cap = c.backoff.cap.max(c.backoff.base);
        c.budget.ratio = clamp_figure(c.budget.ratio, MAX_RATIO, d.budget.ratio);
        c.budget.min_per_second = clamp_figure(
            c.budget.min_per_second,
            MAX_MIN_PER_SECOND,
            d.budget.min_per_second,
        );
        c.budget.ttl = c.budget.ttl.clamp(MIN_TTL, MAX_TTL);
        c.chains.retain(|model, _| !model.is_empty());
        for chain in c.chains.values_mut() {
            chain.retain(|m| !m.is_empty());
        }
        c
    }
}

fn clamp_figure(value: f64, max: f64, default: f64) -> f64 {
    if value.is_nan() {
        default
    } else {
        value.clamp(0.0, max)
    }
}

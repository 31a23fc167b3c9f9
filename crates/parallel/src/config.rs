//! Plain `Deserialize + Default` configuration: [`ParallelConfig`], [`HedgeConfig`],
//! [`FanOutConfig`]. Durations are written `"2s"`, `"150ms"`. Nothing is on by default.

use std::collections::BTreeMap;
use std::time::Duration;

use rampart_fallback::{BudgetConfig, StreamConfig};
use serde::Deserialize;

use crate::error::ConfigError;

/// The most models one fan-out may call (a route's list or the request header).
pub const MAX_FANOUT_MODELS: usize = 8;
/// The most hedges one request may start beyond its primary call.
pub const MAX_HEDGES: u32 = 3;

/// Both parts, as the gateway's `[parallel]` section: each is off unless present.
///
/// ```toml
/// [hedge]
/// models."gpt-4.1" = { delay = "2s" }
/// routes.auto = { percentile = 95.0, delay = "1s", min_delay = "100ms" }
///
/// [fan_out]
/// routes.panel = { models = ["gpt-4.1", "claude-sonnet-4.5"], strategy = "all" }
/// header = { enabled = true, max_models = 3 }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParallelConfig {
    /// Hedged requests (`HedgeLayer`); absent: no hedging.
    pub hedge: Option<HedgeConfig>,
    /// Fan-out (`FanOutLayer`); absent: no fan-out.
    pub fan_out: Option<FanOutConfig>,
}

impl ParallelConfig {
    /// Validates both parts; `models` are the names requests may use (fan-out and hedge keys
    /// must be among them) and `reserved` names a fan-out route must not take (models and the
    /// router's routes). Empty `models` skips the name checks.
    pub fn validate_names(
        &self,
        models: &[String],
        reserved: &[String],
    ) -> Result<(), ConfigError> {
        if let Some(h) = &self.hedge {
            h.validate().map_err(|e| e.prefixed("hedge"))?;
            if !models.is_empty() {
                for m in h.models.keys() {
                    if !models.contains(m) {
                        return Err(ConfigError::new(
                            format!("hedge.models.\"{m}\""),
                            format!("unknown model (known: {})", models.join(", ")),
                        ));
                    }
                }
            }
        }
        if let Some(f) = &self.fan_out {
            f.validate().map_err(|e| e.prefixed("fan_out"))?;
            if !models.is_empty() {
                f.validate_models(models)
                    .map_err(|e| e.prefixed("fan_out"))?;
            }
            for name in f.routes.keys() {
                if reserved.contains(name) {
                    return Err(ConfigError::new(
                        format!("fan_out.routes.{name}"),
                        "the name is already a model or a router route",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl ConfigError {
    pub(crate) fn prefixed(mut self, prefix: &str) -> Self {
        self.key = format!("{prefix}.{}", self.key);
        self
    }
}

/// When to hedge: off unless a policy matches the request.
///
/// A request is hedged by the first policy that matches: `routes.<name>` (the route of the
/// router's decision: `explicit`, `auto`, or a group's name), then `models."<model>"` (the
/// decision's first candidate), then `default`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeConfig {
    /// The policy for every request no route or model policy matches; `None` (the default):
    /// such requests are not hedged.
    pub default: Option<HedgePolicy>,
    /// Policies by route name (`explicit`, `auto`, a group's name).
    pub routes: BTreeMap<String, HedgePolicy>,
    /// Policies by the model of the first candidate.
    pub models: BTreeMap<String, HedgePolicy>,
    /// The retry budget every hedge withdraws from (no token: no hedge).
    pub budget: HedgeBudget,
    /// A stream's commit point: a streamed branch has succeeded at its first content chunk.
    pub stream: StreamConfig,
    /// Samples of time to first byte kept per target (for percentile delays). Default `128`.
    pub samples: usize,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            default: None,
            routes: BTreeMap::new(),
            models: BTreeMap::new(),
            budget: HedgeBudget::default(),
            stream: StreamConfig::default(),
            samples: 128,
        }
    }
}

/// One hedging policy.
///
/// Fixed: `{ delay = "2s" }`. Adaptive: `{ percentile = 95.0, delay = "1s", min_delay =
/// "100ms" }` hedges after the 95th percentile of the primary target's observed time to first
/// byte (JSON: the response head; streams: the first content chunk), never sooner than
/// `min_delay`, and after `delay` while fewer than `min_samples` were observed.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgePolicy {
    /// The fixed delay; with `percentile`, the delay used while there is too little data.
    /// Default `1s`.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// Percentile (`1.0..=99.9`) of the target's observed time to first byte. Default: none
    /// (fixed delay).
    pub percentile: Option<f64>,
    /// The shortest adaptive delay. Default `10ms`.
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    /// Observations needed before the percentile is used. Default `20`.
    pub min_samples: usize,
    /// Hedges per request beyond the primary call, each to the next candidate (`1..=3`).
    /// Default `1`.
    pub max_hedges: u32,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(1),
            percentile: None,
            min_delay: Duration::from_millis(10),
            min_samples: 20,
            max_hedges: 1,
        }
    }
}

/// The hedge retry budget: hedges may use `ratio` of the hedgeable requests seen over the last
/// `ttl`, plus `min_per_second × ttl` in reserve (see `rampart_fallback::RetryBudget`).
/// Defaults: `ratio = 0.1`, `min_per_second = 1.0`, `ttl = "10s"`, so hedges add at most 10 %
/// to the traffic plus 10 calls per 10 s, whatever the upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeBudget {
    /// Share of recent hedgeable requests that may be hedged (`0.0..=1.0`).
    pub ratio: f64,
    /// Hedges per second always allowed (`0.0..=1e6`).
    pub min_per_second: f64,
    /// The sliding window (`1s..=60s`).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for HedgeBudget {
    fn default() -> Self {
        Self {
            ratio: 0.1,
            min_per_second: 1.0,
            ttl: Duration::from_secs(10),
        }
    }
}

impl From<HedgeBudget> for BudgetConfig {
    fn from(b: HedgeBudget) -> Self {
        BudgetConfig {
            ratio: b.ratio,
            min_per_second: b.min_per_second,
            ttl: b.ttl,
        }
    }
}

fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(ConfigError::new(key, "must be longer than zero"))
    } else {
        Ok(())
    }
}

fn stream_ok(prefix: &str, s: &StreamConfig) -> Result<(), ConfigError> {
    positive(
        &format!("{prefix}.first_token_timeout"),
        s.first_token_timeout,
    )?;
    positive(&format!("{prefix}.idle_timeout"), s.idle_timeout)?;
    if s.max_held_bytes == 0 {
        return Err(ConfigError::new(
            format!("{prefix}.max_held_bytes"),
            "must be greater than 0",
        ));
    }
    Ok(())
}

impl HedgePolicy {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        positive(&format!("{key}.delay"), self.delay)?;
        if let Some(p) = self.percentile
            && !(p.is_finite() && (1.0..=99.9).contains(&p))
        {
            return Err(ConfigError::new(
                format!("{key}.percentile"),
                format!("{p} is not between 1.0 and 99.9"),
            ));
        }
        if !(1..=MAX_HEDGES).contains(&self.max_hedges) {
            return Err(ConfigError::new(
                format!("{key}.max_hedges"),
                format!("{} is not between 1 and {MAX_HEDGES}", self.max_hedges),
            ));
        }
        if self.percentile.is_some() && self.min_samples == 0 {
            return Err(ConfigError::new(
                format!("{key}.min_samples"),
                "must be at least 1 with a percentile",
            ));
        }
        Ok(())
    }
}

impl HedgeConfig {
    /// Checks every policy (positive delays, percentile in `1.0..=99.9`, `max_hedges` in
    /// `1..=3`), the budget figures and the stream bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.default {
            p.validate("default")?;
        }
        for (name, p) in &self.routes {
            p.validate(&format!("routes.{name}"))?;
        }
        for (model, p) in &self.models {
            p.validate(&format!("models.\"{model}\""))?;
        }
        let b = &self.budget;
        if !(b.ratio.is_finite() && (0.0..=1.0).contains(&b.ratio)) {
            return Err(ConfigError::new(
                "budget.ratio",
                format!("{} is not between 0.0 and 1.0", b.ratio),
            ));
        }
        if !(b.min_per_second.is_finite() && (0.0..=1e6).contains(&b.min_per_second)) {
            return Err(ConfigError::new(
                "budget.min_per_second",
                format!("{} is not between 0 and 1e6", b.min_per_second),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&b.ttl) {
            return Err(ConfigError::new("budget.ttl", "must be between 1s and 60s"));
        }
        stream_ok("stream", &self.stream)?;
        if !(1..=10_000).contains(&self.samples) {
            return Err(ConfigError::new(
                "samples",
                format!("{} is not between 1 and 10000", self.samples),
            ));
        }
        Ok(())
    }
}

/// How a fan-out picks its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The first success (a stream: the first to send content); the others are cancelled.
    #[default]
    Fastest,
    /// The cheapest success, once every call has ended (not for streams).
    Cheapest,
    /// Every success, as separate `choices` in configuration order (not for streams).
    All,
}

impl Strategy {
    /// The name used in config, headers and `x-rampart-route`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fastest => "fastest",
            Self::Cheapest => "cheapest",
            Self::All => "all",
        }
    }

    /// Parses `fastest`, `cheapest` or `all`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "fastest" => Some(Self::Fastest),
            "cheapest" => Some(Self::Cheapest),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// Fan-out: routes that name several models, and the request header.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanOutConfig {
    /// Fan-out routes by name: a request whose `model` is the name calls every model of the
    /// route.
    pub routes: BTreeMap<String, FanOutRoute>,
    /// The `x-rampart-fanout` request header.
    pub header: HeaderFanOut,
    /// One deadline for every call of a fan-out (routes may set their own). Default `60s`.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// The largest answer read whole for `cheapest` and `all`; a larger one fails that call.
    /// Default 8 MiB.
    pub max_body_bytes: usize,
    /// A stream's commit point for `fastest`: a streamed call has succeeded at its first content
    /// chunk.
    pub stream: StreamConfig,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        Self {
            routes: BTreeMap::new(),
            header: HeaderFanOut::default(),
            deadline: Duration::from_secs(60),
            max_body_bytes: 8 * 1024 * 1024,
            stream: StreamConfig::default(),
        }
    }
}

/// One fan-out route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutRoute {
    /// The models to call, in the order answers are listed (`2..=8`, no repeats).
    pub models: Vec<String>,
    /// How the answer is picked. Default `fastest`.
    #[serde(default)]
    pub strategy: Strategy,
    /// This route's deadline (default: the section's).
    #[serde(default, with = "humantime_serde::option")]
    pub deadline: Option<Duration>,
}

/// `x-rampart-fanout: m1,m2` (and optionally `x-rampart-fanout-strategy`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderFanOut {
    /// Honour the header. Default `false`: the header is ignored.
    pub enabled: bool,
    /// Most models one request may name (`1..=8`). Default `3`.
    pub max_models: usize,
    /// The strategy when the request sends no `x-rampart-fanout-strategy`. Default `fastest`.
    pub strategy: Strategy,
    /// The models the header may name; empty (the default): every model the layer knows
    /// (`FanOutLayer::known_models`), or any model when it knows none.
    pub models: Vec<String>,
}

impl Default for HeaderFanOut {
    fn default() -> Self {
        Self {
            enabled: false,
            max_models: 3,
            strategy: Strategy::Fastest,
            models: Vec::new(),
        }
    }
}

impl FanOutConfig {
    /// Checks the shape: each route has `2..=8` distinct, non-empty models and a positive
    /// deadline; `header.max_models` in `1..=8`; positive section deadline, body limit and stream
    /// bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("deadline", self.deadline)?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", "must be greater than 0"));
        }
        stream_ok("stream", &self.stream)?;
        for (name, r) in &self.routes {
            let key = format!("routes.{name}");
            if name.trim().is_empty() {
                return Err(ConfigError::new("routes", "a route name is empty"));
            }
            if !(2..=MAX_FANOUT_MODELS).contains(&r.models.len()) {
                return Err(ConfigError::new(
                    format!("{key}.models"),
                    format!(
                        "{} models; a fan-out route calls 2 to {MAX_FANOUT_MODELS}",
                        r.models.len()
                    ),
                ));
            }
            for (i, m) in r.models.iter().enumerate() {
                if m.trim().is_empty() {
                    return Err(ConfigError::new(format!("{key}.models[{i}]"), "empty"));
                }
                if r.models[..i].contains(m) {
                    return Err(ConfigError::new(
                        format!("{key}.models[{i}]"),
                        format!("\"{m}\" is listed twice"),
                    ));
                }
            }
            if let Some(d) = r.deadline {
                positive(&format!("{key}.deadline"), d)?;
            }
        }
        if !(1..=MAX_FANOUT_MODELS).contains(&self.header.max_models) {
            return Err(ConfigError::new(
                "header.max_models",
                format!(
                    "{} is not between 1 and {MAX_FANOUT_MODELS}",
                    self.header.max_models
                ),
            ));
        }
        Ok(())
    }

    /// Checks that every model a route or the header list names is in `known`.
    pub fn validate_models(&self, known: &[String]) -> Result<(), ConfigError> {
        let unknown = |key: String, m: &str| {
            ConfigError::new(
                key,
                format!("unknown model \"{m}\" (known: {})", known.join(", ")),
            )
        };
        for (name, r) in &self.routes {
            for (i, m) in r.models.iter().enumerate() {
                if !known.contains(m) {
                    return Err(unknown(format!("routes.{name}.models[{i}]"), m));
                }
            }
        }
        for (i, m) in self.header.models.iter().enumerate() {
            if !known.contains(m) {
                return Err(unknown(format!("header.models[{i}]"), m));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let c = ParallelConfig::default();
        assert!(c.hedge.is_none() && c.fan_out.is_none());
        HedgeConfig::default().validate().unwrap();
        FanOutConfig::default().validate().unwrap();
        assert!(!FanOutConfig::default().header.enabled);
    }
}

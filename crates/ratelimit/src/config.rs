//! Plain configuration data for [`RateLimitLayer::from_config`](crate::RateLimitLayer::from_config).
//!
//! ```toml
//! scope = "target"
//! key = "target"
//! default_output_tokens = 256
//!
//! [limits]                       # every key
//! requests_per_minute = 1000
//!
//! [models."gpt-4.1"]             # keys whose model is gpt-4.1 (merged over [limits])
//! requests_per_minute = 500
//! tokens_per_minute = 30000
//!
//! [overrides."acme"]             # one key exactly (merged over [limits] and [models])
//! concurrency = 4
//!
//! [output_tokens]                # output estimate per model when the client sends no max
//! "gpt-4.1" = 1024
//!
//! [queue]
//! max_wait = "2s"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use rampart_core::EdgeConfig;
use serde::Deserialize;

use crate::store::{Quota, Rate};

/// The whole layer configuration. Every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Label of this limiter in errors, logs and the `rampart_ratelimit_rejections_total{scope}`
    /// metric (e.g. `tenant`, `target`). Default `"tenant"`.
    pub scope: String,
    /// How requests are keyed. Default [`KeySource::Tenant`].
    pub key: KeySource,
    /// Limits for every key. Default: none (unlimited).
    pub limits: Limits,
    /// Limits by model (the `Target` extension's model, else the request's `model`), merged over
    /// `limits`.
    pub models: BTreeMap<String, Limits>,
    /// Limits by exact key, merged over `models` and `limits`.
    pub overrides: BTreeMap<String, Limits>,
    /// Output tokens reserved when the client sends neither `max_completion_tokens` nor
    /// `max_tokens`. Default 256.
    pub default_output_tokens: u64,
    /// `default_output_tokens` by model.
    pub output_tokens: BTreeMap<String, u64>,
    /// Queue mode: wait for capacity instead of refusing.
    pub queue: QueueConfig,
    /// What to do when the store cannot decide.
    pub on_store_error: StoreFailure,
    /// Retry-After sent when only the concurrency limit refused (nobody knows when a slot frees).
    /// Default 1 s.
    #[serde(with = "humantime_serde")]
    pub concurrency_retry_after: Duration,
    /// Body limits when the layer must parse the request itself (used without the edge
    /// adapter).
    pub edge: EdgeLimits,
    /// How often the in-memory store sweeps idle keys. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            scope: "tenant".to_owned(),
            key: KeySource::Tenant,
            limits: Limits::default(),
            models: BTreeMap::new(),
            overrides: BTreeMap::new(),
            default_output_tokens: 256,
            output_tokens: BTreeMap::new(),
            queue: QueueConfig::default(),
            on_store_error: StoreFailure::default(),
            concurrency_retry_after: Duration::from_secs(1),
            edge: EdgeLimits::default(),
            sweep_interval: Duration::from_secs(10),
        }
    }
}

/// Limits for a key. Unset fields are unlimited (or inherited, in `models` and `overrides`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute (prompt + completion).
    pub tokens_per_minute: Option<u64>,
    /// Concurrent requests (a permit is held until the response body ends).
    pub concurrency: Option<u32>,
    /// Requests admitted at once from a full bucket. Default: `requests_per_minute`.
    pub request_burst: Option<u64>,
    /// Tokens admitted at once from a full bucket; a single request estimated above it is refused
    /// outright. Default: `tokens_per_minute`.
    pub token_burst: Option<u64>,
}

impl Limits {
    /// No limits.
    pub fn none() -> Self {
        Self::default()
    }
    /// Sets requests per minute.
    pub fn requests_per_minute(mut self, n: u64) -> Self {
        self.requests_per_minute = Some(n);
        self
    }
    /// Sets tokens per minute.
    pub fn tokens_per_minute(mut self, n: u64) -> Self {
        self.tokens_per_minute = Some(n);
        self
    }
    /// Sets concurrent requests.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = Some(n);
        self
    }
    /// Sets the request burst.
    pub fn request_burst(mut self, n: u64) -> Self {
        self.request_burst = Some(n);
        self
    }
    /// Sets the token burst.
    pub fn token_burst(mut self, n: u64) -> Self {
        self.token_burst = Some(n);
        self
    }

    /// `self` with every unset field taken from `base`; a per-minute rate set in `self` comes
    /// with `self`'s burst (default: that rate), not `base`'s.
    pub fn merged_over(self, base: &Limits) -> Limits {
        // A rate set here brings its own burst (default: the rate), never the base's.
        let (requests_per_minute, request_burst) = match self.requests_per_minute {
            Some(r) => (Some(r), self.request_burst),
            None => (
                base.requests_per_minute,
                self.request_burst.or(base.request_burst),
            ),
        };
        let (tokens_per_minute, token_burst) = match self.tokens_per_minute {
            Some(r) => (Some(r), self.token_burst),
            None => (
                base.tokens_per_minute,
                self.token_burst.or(base.token_burst),
            ),
        };
        Limits {
            requests_per_minute,
            tokens_per_minute,
            concurrency: self.concurrency.or(base.concurrency),
            request_burst,
            token_burst,
        }
    }

    /// The quota these limits give (zeros clamped to 1; the builder refuses them).
    pub fn quota(&self) -> Quota {
        Quota {
            requests: self
                .requests_per_minute
                .map(|r| Rate::new(r, self.request_burst.unwrap_or(r))),
            tokens: self
                .tokens_per_minute
                .map(|r| Rate::new(r, self.token_burst.unwrap_or(r))),
            concurrency: self.concurrency.map(|c| c.max(1)),
        }
    }

    pub(crate) fn validate(&self, at: &str) -> Result<(), crate::ConfigError> {
        let zero = |field: &'static str, v: Option<u64>| match v {
            Some(0) => Err(crate::ConfigError::Zero {
                at: at.to_owned(),
                field,
            }),
            _ => Ok(()),
        };
        zero("requests_per_minute", self.requests_per_minute)?;
        zero("tokens_per_minute", self.tokens_per_minute)?;
        zero("concurrency", self.concurrency.map(u64::from))?;
        zero("request_burst", self.request_burst)?;
        zero("token_burst", self.token_burst)?;
        if self.request_burst.is_some() && self.requests_per_minute.is_none() {
            return Err(crate::ConfigError::BurstWithoutRate {
                at: at.to_owned(),
                field: "request_burst",
            });
        }
        if self.token_burst.is_some() && self.tokens_per_minute.is_none() {
            return Err(crate::ConfigError::BurstWithoutRate {
                at: at.to_owned(),
                field: "token_burst",
            });
        }
        Ok(())
    }
}

/// Where the rate-limit key of a request comes from (the built-in extractors).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// The [`rampart_core::Tenant`] extension's id; `default` when absent.
    #[default]
    Tenant,
    /// Tenant and model: `"{tenant}/{model}"` (the model as in [`KeySource::Target`]).
    TenantModel,
    /// The [`rampart_core::Target`] extension (`"{provider}/{model}"`) when present, else the
    /// request's `model`.
    Target,
    /// The value of a request header (`key = { header = "x-user-id" }`); requests without it
    /// share the key `default`.
    Header(String),
}

/// Queue mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Longest time a request waits for capacity before it is refused. `0s` (default): refuse at
    /// once.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

/// What to do when the store fails to decide (a shared store unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Admit the request, mark the response `x-rampart-degraded: ratelimit`, count
    /// `rampart_ratelimit_store_errors_total` and log a warning.
    #[default]
    FailOpen,
    /// Refuse with 503 `state_store_unavailable`.
    FailClosed,
}

/// Body limits for parsing a request that reaches the layer unparsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeLimits {
    /// Largest accepted body. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Time to receive the body. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        let e = EdgeConfig::default();
        Self {
            max_body_bytes: e.max_body_bytes,
            body_timeout: e.body_timeout,
        }
    }
}

impl From<EdgeLimits> for EdgeConfig {
    fn from(e: EdgeLimits) -> Self {
        EdgeConfig {
            max_body_bytes: e.max_body_bytes,
            body_timeout: e.body_timeout,
        }
    }
}

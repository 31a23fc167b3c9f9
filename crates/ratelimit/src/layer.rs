//! [`RateLimitLayer`] and its builder.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rampart_core::{ChatRequest, Clock, EdgeConfig};
use tower_layer::Layer;

use crate::config::{KeySource, Limits, RateLimitConfig, StoreFailure};
use crate::error::ConfigError;
use crate::estimate::{BytesEstimator, TokenEstimator};
use crate::key::{KeyExtractor, TenantKey};
use crate::service::RateLimit;
use crate::store::{MemoryStore, Quota, RateLimitStore};

/// Keyed RPM, TPM and concurrency limits with token reserve-then-settle.
///
/// Built once; every [`Layer::layer`] call and every clone of the layer or its services shares the
/// same state (`Arc`).
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("scope", &self.shared.scope)
            .field("limits", &self.shared.default_limits)
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) scope: String,
    pub(crate) extractor: Arc<dyn KeyExtractor>,
    pub(crate) estimator: Arc<dyn TokenEstimator>,
    pub(crate) store: Arc<dyn RateLimitStore>,
    pub(crate) default_limits: Limits,
    pub(crate) default_quota: Quota,
    pub(crate) models: HashMap<Box<str>, Limits>,
    pub(crate) overrides: HashMap<Box<str>, Limits>,
    pub(crate) default_output_tokens: u64,
    pub(crate) output_tokens: HashMap<Box<str>, u64>,
    pub(crate) max_wait: Duration,
    pub(crate) on_store_error: StoreFailure,
    pub(crate) concurrency_retry_after: Duration,
    pub(crate) edge: EdgeConfig,
    /// Whether the last store call failed (for one log line per transition).
    pub(crate) store_failing: AtomicBool,
    /// Whether admitted responses get the `x-ratelimit-*` headers.
    pub(crate) response_headers: bool,
}

impl Shared {
    /// The store decided: logs the recovery after a failure.
    #[inline]
    pub(crate) fn store_answered(&self) {
        if self.store_failing.load(Ordering::Relaxed)
            && self.store_failing.swap(false, Ordering::AcqRel)
        {
            tracing::warn!(scope = %self.scope, "rate limit store answering again");
        }
    }

    /// The quota of `key` for `model`: `overrides[key]` over `models[model]` over `limits`.
    pub(crate) fn quota(&self, key: &str, model: &str) -> Quota {
        if self.models.is_empty() && self.overrides.is_empty() {
            return self.default_quota;
        }
        let mut limits = self.default_limits;
        if let Some(m) = self.models.get(model) {
            limits = m.merged_over(&limits);
        }
        if let Some(o) = self.overrides.get(key) {
            limits = o.merged_over(&limits);
        }
        limits.quota()
    }

    /// Tokens to reserve: the prompt estimate plus the output limit (or the model's output
    /// estimate) times `n`.
    pub(crate) fn estimate(&self, chat: &ChatRequest, model: &str) -> u64 {
        let output = chat.max_output_tokens().unwrap_or_else(|| {
            self.output_tokens
                .get(model)
                .copied()
                .unwrap_or(self.default_output_tokens)
        });
        let n = chat.n().unwrap_or(1).max(1);
        self.estimator
            .prompt_tokens(chat)
            .saturating_add(output.saturating_mul(n))
    }
}

impl RateLimitLayer {
    /// A limiter keyed by tenant (scope `tenant`) with `limits` for every tenant, in memory.
    /// Zero values are treated as 1 (the builder refuses them instead).
    pub fn new(limits: Limits) -> Self {
        let config = RateLimitConfig {
            limits,
            ..RateLimitConfig::default()
        };
        let builder = Self::builder().config(config);
        Self {
            shared: Arc::new(builder.into_shared(Arc::new(TenantKey))),
        }
    }

    /// A builder, starting from [`RateLimitConfig::default`].
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder::default()
    }

    /// A layer from configuration (validated), with the in-memory store.
    pub fn from_config(config: RateLimitConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }

    /// The scope label.
    pub fn scope(&self) -> &str {
        &self.shared.scope
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn RateLimitStore> {
        &self.shared.store
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::new(inner, self.shared.clone())
    }
}

/// Builds a [`RateLimitLayer`]; [`build`](Self::build) validates.
#[derive(Default)]
pub struct RateLimitLayerBuilder {
    config: RateLimitConfig,
    extractor: Option<Arc<dyn KeyExtractor>>,
    estimator: Option<Arc<dyn TokenEstimator>>,
    store: Option<Arc<dyn RateLimitStore>>,
    clock: Option<Arc<dyn Clock>>,
    edge: Option<EdgeConfig>,
    /// Set by `response_headers(false)` (a derived default must mean "headers on").
    omit_headers: bool,
}

impl std::fmt::Debug for RateLimitLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("config", &self.config)
            .field("custom_extractor", &self.extractor.is_some())
            .field("custom_estimator", &self.estimator.is_some())
            .field("custom_store", &self.store.is_some())
            .finish()
    }
}

impl RateLimitLayerBuilder {
    /// Replaces every configurable setting with `config`.
    pub fn config(mut self, config: RateLimitConfig) -> Self {
        self.config = config;
        self
    }
    /// The scope label (errors, logs, metric label). Default `tenant`.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.config.scope = scope.into();
        self
    }
    /// A built-in key source. Default [`KeySource::Tenant`].
    pub fn key(mut self, key: KeySource) -> Self {
        self.config.key = key;
        self.extractor = None;
        self
    }
    /// A custom key extractor (a closure `Fn(&Request<Body>, &ChatRequest) -> Option<K>` works).
    pub fn key_extractor(mut self, extractor: impl KeyExtractor) -> Self {
        self.extractor = Some(Arc::new(extractor));
        self
    }
    /// Limits for every key.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }
    /// Limits for requests to `model`, merged over the default limits.
    pub fn model_limits(mut self, model: impl Into<String>, limits: Limits) -> Self {
        self.config.models.insert(model.into(), limits);
        self
    }
    /// Limits for one key exactly, merged over model and default limits.
    pub fn key_limits(mut self, key: impl Into<String>, limits: Limits) -> Self {
        self.config.overrides.insert(key.into(), limits);
        self
    }
    /// The prompt token estimator. Default [`BytesEstimator`].
    pub fn estimator(mut self, estimator: impl TokenEstimator) -> Self {
        self.estimator = Some(Arc::new(estimator));
        self
    }
    /// Output tokens reserved when the client sends no maximum. Default 256.
    pub fn default_output_tokens(mut self, tokens: u64) -> Self {
        self.config.default_output_tokens = tokens;
        self
    }
    /// Output tokens reserved for `model` when the client sends no maximum.
    pub fn output_tokens(mut self, model: impl Into<String>, tokens: u64) -> Self {
        self.config.output_tokens.insert(model.into(), tokens);
        self
    }
    /// Queue mode: wait up to `max_wait` for capacity instead of refusing (zero: off).
    pub fn queue(mut self, max_wait: Duration) -> Self {
        self.config.queue.max_wait = max_wait;
        self
    }
    /// What to do when the store fails. Default [`StoreFailure::FailOpen`]. A store with an
    /// outage policy of its own ([`RateLimitStore::failure_policy`], e.g. the Redis store)
    /// overrides it.
    pub fn on_store_error(mut self, policy: StoreFailure) -> Self {
        self.config.on_store_error = policy;
        self
    }
    /// Retry-After when only the concurrency limit refused. Default 1 s.
    pub fn concurrency_retry_after(mut self, after: Duration) -> Self {
        self.config.concurrency_retry_after = after;
        self
    }
    /// Body limits for requests that arrive unparsed.
    pub fn edge_config(mut self, edge: EdgeConfig) -> Self {
        self.edge = Some(edge);
        self
    }
    /// The state store. Default: a [`MemoryStore`] (pass an `Arc<MemoryStore>` to keep a handle).
    pub fn store(mut self, store: impl RateLimitStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }
    /// The clock of the default in-memory store (default: tokio's).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
    /// Whether admitted responses get the `x-ratelimit-*` headers (default `true`). Two
    /// limiters in one stack each write them, and the outer one's values win: a gateway that
    /// stacks a per-target limiter under a per-tenant one can turn them off on the inner one.
    pub fn response_headers(mut self, on: bool) -> Self {
        self.omit_headers = !on;
        self
    }

    /// How often the default in-memory store sweeps idle keys. Default 10 s.
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.config.sweep_interval = every;
        self
    }

    /// Validates and builds.
    pub fn build(mut self) -> Result<RateLimitLayer, ConfigError> {
        let c = &self.config;
        if c.scope.trim().is_empty() {
            return Err(ConfigError::EmptyScope);
        }
        c.limits.validate("limits")?;
        for (m, l) in &c.models {
            l.merged_over(&c.limits).validate(&format!("models.{m}"))?;
        }
        for (k, l) in &c.overrides {
            l.merged_over(&c.limits)
                .validate(&format!("overrides.{k}"))?;
        }
        let extractor = match self.extractor.take() {
            Some(e) => e,
            None => {
                if !c.models.is_empty() && matches!(c.key, KeySource::Tenant | KeySource::Header(_))
                {
                    return Err(ConfigError::ModelsNeedModelKey);
                }
                c.key.extractor()?
            }
        };
        Ok(RateLimitLayer {
            shared: Arc::new(self.into_shared(extractor)),
        })
    }

    fn into_shared(self, extractor: Arc<dyn KeyExtractor>) -> Shared {
        let c = self.config;
        let store = self.store.unwrap_or_else(|| {
            let mut b = MemoryStore::builder().sweep_interval(c.sweep_interval);
            if let Some(clock) = self.clock {
                b = b.clock(move || clock.now());
            }
            Arc::new(b.build())
        });
        let on_store_error = store.failure_policy().unwrap_or(c.on_store_error);
        Shared {
            scope: c.scope,
            extractor,
            estimator: self.estimator.unwrap_or_else(|| Arc::new(BytesEstimator)),
            store,
            default_limits: c.limits,
            default_quota: c.limits.quota(),
            models: c.models.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            overrides: c
                .overrides
                .into_iter()
                .map(|(k, v)| (k.into(), v))
                .collect(),
            default_output_tokens: c.default_output_tokens,
            output_tokens: c
                .output_tokens
                .into_iter()
                .map(|(k, v)| (k.into(), v))
                .collect(),
            max_wait: c.queue.max_wait,
            on_store_error,
            concurrency_retry_after: c.concurrency_retry_after,
            edge: self.edge.unwrap_or_else(|| c.edge.into()),
            store_failing: AtomicBool::new(false),
            response_headers: !self.omit_headers,
        }
    }
}

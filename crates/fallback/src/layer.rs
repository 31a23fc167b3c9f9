//! [`FallbackLayer`] and its [`FallbackBuilder`].

use std::sync::Arc;
use std::time::Duration;

use rampart_core::commit::CommitConfig;
use tower_layer::Layer;

use crate::backoff::{FullJitter, Jitter};
use crate::budget::RetryBudget;
use crate::config::FallbackConfig;
use crate::error::ConfigError;
use crate::resolve::{NoResolver, Resolver};
use crate::service::Fallback;

/// State built once per layer and shared by every service it builds and every clone.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: FallbackConfig,
    pub(crate) commit: CommitConfig,
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) jitter: Arc<dyn Jitter>,
    pub(crate) budget: Arc<RetryBudget>,
    /// `rampart_fallback_attempts_total{outcome}`.
    pub(crate) attempts: rampart_core::metric::LabelledCounter<6>,
}

/// Wraps services in a [`Fallback`]: candidate chains, retries with full-jitter backoff,
/// `Retry-After`, a shared retry budget and the streaming commit point.
///
/// The state (configuration, resolver, jitter, retry budget) is built once, in an `Arc`: every
/// service the layer builds and every clone share the same budget.
#[derive(Clone)]
pub struct FallbackLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FallbackLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Default for FallbackLayer {
    fn default() -> Self {
        Self::new(FallbackConfig::default())
    }
}

impl FallbackLayer {
    /// A layer with `config`, no resolver and full jitter. Never fails: out-of-range values are
    /// clamped ([`FallbackConfig::sanitized`]); use [`from_config`](Self::from_config) to refuse
    /// them instead.
    pub fn new(config: FallbackConfig) -> Self {
        let sane = config.sanitized();
        if sane != config {
            tracing::warn!(
                target: "rampart::fallback",
                error = ?config.validate().err(),
                "fallback config out of range: values clamped"
            );
        }
        Self::from_parts(sane, Arc::new(NoResolver), Arc::new(FullJitter::new()))
    }

    /// A layer with `config`, validated ([`FallbackConfig::validate`]).
    pub fn from_config(config: FallbackConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::from_parts(
            config,
            Arc::new(NoResolver),
            Arc::new(FullJitter::new()),
        ))
    }

    /// A builder starting from the default configuration.
    pub fn builder() -> FallbackBuilder {
        FallbackBuilder::default()
    }

    fn from_parts(
        config: FallbackConfig,
        resolver: Arc<dyn Resolver>,
        jitter: Arc<dyn Jitter>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                commit: config.stream.into(),
                budget: Arc::new(RetryBudget::new(config.budget)),
                attempts: crate::service::attempts_counter(),
                config,
                resolver,
                jitter,
            }),
        }
    }

    fn with_shared(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.shared);
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The same layer resolving models (requested and chained) with `resolver`, e.g. the
    /// gateway's catalog. The retry budget stays shared with `self`.
    pub fn resolver(self, resolver: impl Resolver) -> Self {
        self.with_shared(|s| s.resolver = Arc::new(resolver))
    }

    /// The same layer drawing backoff delays with `jitter` (e.g. [`FullJitter::seeded`], or
    /// `|ceiling| ceiling` for none).
    pub fn jitter(self, jitter: impl Jitter) -> Self {
        self.with_shared(|s| s.jitter = Arc::new(jitter))
    }

    /// The configuration in force.
    pub fn config(&self) -> &FallbackConfig {
        &self.shared.config
    }

    /// The retry budget shared by every service of this layer.
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }
}

impl<S> Layer<S> for FallbackLayer {
    type Service = Fallback<S>;

    fn layer(&self, inner: S) -> Fallback<S> {
        Fallback::from_shared(inner, self.shared.clone())
    }
}

/// Builds a validated [`FallbackLayer`].
pub struct FallbackBuilder {
    config: FallbackConfig,
    resolver: Arc<dyn Resolver>,
    jitter: Arc<dyn Jitter>,
}

impl Default for FallbackBuilder {
    fn default() -> Self {
        Self {
            config: FallbackConfig::default(),
            resolver: Arc::new(NoResolver),
            jitter: Arc::new(FullJitter::new()),
        }
    }
}

impl std::fmt::Debug for FallbackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FallbackBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: FallbackConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds (or replaces) the static chain of `model`: try `model`, then `fallbacks` in order.
    pub fn chain<I, M>(mut self, model: &str, fallbacks: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.config.chains.insert(
            model.to_owned(),
            fallbacks.into_iter().map(Into::into).collect(),
        );
        self
    }

    /// [`FallbackConfig::deadline`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = deadline;
        self
    }

    /// [`FallbackConfig::max_attempts`] (`1..=10`).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts;
        self
    }

    /// [`FallbackConfig::retries_per_candidate`].
    pub fn retries_per_candidate(mut self, retries: u32) -> Self {
        self.config.retries_per_candidate = retries;
        self
    }

    /// [`FallbackConfig::context_length_fallback`].
    pub fn context_length_fallback(mut self, on: bool) -> Self {
        self.config.context_length_fallback = on;
        self
    }

    /// [`BackoffConfig::base`](crate::BackoffConfig::base) and
    /// [`BackoffConfig::cap`](crate::BackoffConfig::cap).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.config.backoff.base = base;
        self.config.backoff.cap = cap;
        self
    }

    /// [`BudgetConfig::ratio`](crate::BudgetConfig::ratio),
    /// [`BudgetConfig::min_per_second`](crate::BudgetConfig::min_per_second) and
    /// [`BudgetConfig::ttl`](crate::BudgetConfig::ttl).
    pub fn budget(mut self, ratio: f64, min_per_second: f64, ttl: Duration) -> Self {
        self.config.budget.ratio = ratio;
        self.config.budget.min_per_second = min_per_second;
        self.config.budget.ttl = ttl;
        self
    }

    /// [`StreamConfig::first_token_timeout`](crate::StreamConfig::first_token_timeout).
    pub fn first_token_timeout(mut self, timeout: Duration) -> Self {
        self.config.stream.first_token_timeout = timeout;
        self
    }

    /// [`StreamConfig::idle_timeout`](crate::StreamConfig::idle_timeout).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.stream.idle_timeout = timeout;
        self
    }

    /// [`StreamConfig::max_held_bytes`](crate::StreamConfig::max_held_bytes).
    pub fn max_held_bytes(mut self, bytes: usize) -> Self {
        self.config.stream.max_held_bytes = bytes;
        self
    }

    /// The model resolver (default: none; see [`Resolver`]).
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// The backoff jitter (default [`FullJitter::new`]).
    pub fn jitter(mut self, jitter: impl Jitter) -> Self {
        self.jitter = Arc::new(jitter);
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<FallbackLayer, ConfigError> {
        self.config.validate()?;
        Ok(FallbackLayer::from_parts(
            self.config,
            self.resolver,
            self.jitter,
        ))
    }
}

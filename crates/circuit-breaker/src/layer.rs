//! [`CircuitBreakerLayer`] and its [`CircuitBreakerBuilder`].

use std::sync::Arc;
use std::time::Duration;

use rampart_core::{Clock, TokioClock};
use tower_layer::Layer;

use crate::config::CircuitBreakerConfig;
use crate::error::ConfigError;
use crate::key::{KeyExtractor, TargetKey};
use crate::registry::{BreakerHandle, Policy, Shared};
use crate::service::CircuitBreaker;

/// Wraps services in a [`CircuitBreaker`]. The breakers live in the layer (built once, in an
/// `Arc`): every service it builds and every clone share them.
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", &self.shared.policy.config)
            .finish()
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new(CircuitBreakerConfig::default())
    }
}

impl CircuitBreakerLayer {
    /// A layer with `config`, keyed by target ([`TargetKey`]), on tokio's clock. Never fails:
    /// out-of-range values are clamped ([`CircuitBreakerConfig::sanitized`]); use
    /// [`from_config`](Self::from_config) to refuse them instead.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        let sane = config.sanitized();
        if sane != config {
            tracing::warn!(
                target: "rampart::circuit_breaker",
                error = ?config.validate().err(),
                "circuit breaker config out of range: values clamped"
            );
        }
        Self::from_parts(sane, Box::new(TargetKey), Box::new(TokioClock))
    }

    /// A layer with `config`, validated ([`CircuitBreakerConfig::validate`]).
    pub fn from_config(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::from_parts(
            config,
            Box::new(TargetKey),
            Box::new(TokioClock),
        ))
    }

    /// A builder starting from the default configuration.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    fn from_parts(
        config: CircuitBreakerConfig,
        extractor: Box<dyn KeyExtractor>,
        clock: Box<dyn Clock>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(Policy { config, clock }, extractor)),
        }
    }

    /// The operator's handle on the breakers: state, snapshot, force open, reset, disable.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.shared.policy.config
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker::from_shared(inner, self.shared.clone())
    }
}

/// Builds a validated [`CircuitBreakerLayer`]; setters are named after the config fields.
pub struct CircuitBreakerBuilder {
    config: CircuitBreakerConfig,
    extractor: Box<dyn KeyExtractor>,
    clock: Box<dyn Clock>,
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        Self {
            config: CircuitBreakerConfig::default(),
            extractor: Box::new(TargetKey),
            clock: Box::new(TokioClock),
        }
    }
}

impl std::fmt::Debug for CircuitBreakerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("config", &self.config)
            .finish()
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

impl CircuitBreakerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: CircuitBreakerConfig) -> Self {
        self.config = config;
        self
    }

    setters! {
        /// [`CircuitBreakerConfig::window`].
        window: Duration;
        /// [`CircuitBreakerConfig::window_buckets`].
        window_buckets: u32;
        /// [`CircuitBreakerConfig::min_calls`].
        min_calls: u32;
        /// [`CircuitBreakerConfig::failure_rate_threshold`].
        failure_rate_threshold: f64;
        /// [`CircuitBreakerConfig::consecutive_failures`] (`0` turns the rule off).
        consecutive_failures: u32;
        /// [`CircuitBreakerConfig::slow_call_rate_threshold`].
        slow_call_rate_threshold: f64;
        /// [`CircuitBreakerConfig::open_base`].
        open_base: Duration;
        /// [`CircuitBreakerConfig::open_max`].
        open_max: Duration;
        /// [`CircuitBreakerConfig::jitter`].
        jitter: f64;
        /// [`CircuitBreakerConfig::half_open_probes`].
        half_open_probes: u32;
        /// [`CircuitBreakerConfig::probe_timeout`].
        probe_timeout: Duration;
        /// [`CircuitBreakerConfig::rate_limit_cooldown`].
        rate_limit_cooldown: Duration;
        /// [`CircuitBreakerConfig::rate_limit_cooldown_max`].
        rate_limit_cooldown_max: Duration;
        /// [`CircuitBreakerConfig::max_keys`].
        max_keys: usize;
    }

    /// [`CircuitBreakerConfig::slow_call_threshold`]: calls slower than this to their first
    /// byte are slow (`None` turns the rule off).
    pub fn slow_call_threshold(mut self, value: impl Into<Option<Duration>>) -> Self {
        self.config.slow_call_threshold = value.into();
        self
    }

    /// How requests map to breakers (default [`TargetKey`]).
    pub fn key_extractor(mut self, extractor: impl KeyExtractor) -> Self {
        self.extractor = Box::new(extractor);
        self
    }

    /// The clock (default tokio's, which paused-time tests control).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError> {
        self.config.validate()?;
        Ok(CircuitBreakerLayer::from_parts(
            self.config,
            self.extractor,
            self.clock,
        ))
    }
}

//! Why a configuration was refused: [`ConfigError`].

use std::time::Duration;

/// A [`CircuitBreakerConfig`](crate::CircuitBreakerConfig) that cannot work, refused by
/// [`CircuitBreakerLayer::from_config`](crate::CircuitBreakerLayer::from_config) and
/// [`CircuitBreakerBuilder::build`](crate::CircuitBreakerBuilder::build).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rate (a fraction of calls) is outside `0.0..=1.0` or not a number.
    #[error("circuit breaker: {field} must be between 0 and 1, got {value}")]
    Rate {
        /// The config field.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// A count is below its minimum.
    #[error("circuit breaker: {field} must be at least {min}, got {value}")]
    TooSmall {
        /// The config field.
        field: &'static str,
        /// The smallest accepted value.
        min: u64,
        /// The value given.
        value: u64,
    },
    /// A duration that must be positive is zero.
    #[error("circuit breaker: {field} must be longer than zero")]
    ZeroDuration {
        /// The config field.
        field: &'static str,
    },
    /// `open_max` is shorter than `open_base`.
    #[error("circuit breaker: open_max ({open_max:?}) is shorter than open_base ({open_base:?})")]
    OpenMaxBelowBase {
        /// `open_base`.
        open_base: Duration,
        /// `open_max`.
        open_max: Duration,
    },
    /// The window cannot be split into that many buckets of at least a millisecond.
    #[error(
        "circuit breaker: window ({window:?}) is too short for {buckets} buckets of at least 1ms"
    )]
    WindowTooShort {
        /// `window`.
        window: Duration,
        /// `window_buckets`.
        buckets: u32,
    },
    /// `window_buckets` is above the supported maximum.
    #[error("circuit breaker: window_buckets must be at most {max}, got {value}")]
    TooManyBuckets {
        /// The largest accepted value.
        max: u32,
        /// The value given.
        value: u32,
    },
}

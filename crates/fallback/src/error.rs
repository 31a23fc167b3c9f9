//! Why a configuration was refused: [`ConfigError`].

use std::time::Duration;

/// A [`FallbackConfig`](crate::FallbackConfig) that cannot work, refused by
/// [`FallbackLayer::from_config`](crate::FallbackLayer::from_config) and
/// [`FallbackBuilder::build`](crate::FallbackBuilder::build).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_attempts` is 0 or above the hard cap ([`MAX_ATTEMPTS_CAP`](crate::MAX_ATTEMPTS_CAP)).
    #[error("fallback: max_attempts must be between 1 and {cap}, got {value}")]
    MaxAttempts {
        /// The value given.
        value: u32,
        /// The hard cap.
        cap: u32,
    },
    /// A duration that must be positive is zero.
    #[error("fallback: {field} must be longer than zero")]
    ZeroDuration {
        /// The config field.
        field: &'static str,
    },
    /// `backoff.cap` is shorter than `backoff.base`.
    #[error("fallback: backoff.cap ({cap:?}) is shorter than backoff.base ({base:?})")]
    BackoffCapBelowBase {
        /// `backoff.base`.
        base: Duration,
        /// `backoff.cap`.
        cap: Duration,
    },
    /// A budget figure is negative, not a number, or out of range.
    #[error("fallback: {field} must be a finite number between 0 and {max}, got {value}")]
    Budget {
        /// The config field.
        field: &'static str,
        /// The largest accepted value.
        max: f64,
        /// The value given.
        value: f64,
    },
    /// `budget.ttl` is outside `1s..=60s`.
    #[error("fallback: budget.ttl must be between 1s and 60s, got {0:?}")]
    BudgetTtl(Duration),
    /// `stream.max_held_bytes` is zero.
    #[error("fallback: stream.max_held_bytes must be at least 1")]
    MaxHeldBytes,
    /// A chain names an empty model.
    #[error("fallback: the chain of '{model}' names an empty model")]
    EmptyModel {
        /// The chain's model (key).
        model: String,
    },
}

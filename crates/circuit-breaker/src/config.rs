//! [`CircuitBreakerConfig`]: plain `Deserialize + Default` data, validated by
//! [`CircuitBreakerLayer::from_config`](crate::CircuitBreakerLayer::from_config) and the builder.

use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// The most buckets a window may be split into.
pub const MAX_WINDOW_BUCKETS: u32 = 1_000;

/// How the breakers behave. Every field is optional in TOML; durations are written `"30s"`,
/// `"500ms"`, `"5m"`.
///
/// ```toml
/// window = "60s"
/// min_calls = 20
/// failure_rate_threshold = 0.5
/// consecutive_failures = 5
/// slow_call_threshold = "10s"
/// open_base = "10s"
/// open_max = "5m"
/// half_open_probes = 3
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Length of the sliding window over which rates are computed. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How many buckets the window slides by (its resolution is `window / window_buckets`).
    /// Default `10`.
    pub window_buckets: u32,
    /// Fewest calls in the window before a rate can trip the breaker. Default `20`.
    pub min_calls: u32,
    /// Failure rate (`0.0..=1.0`) at or above which the breaker trips. Default `0.5`.
    pub failure_rate_threshold: f64,
    /// Trip after this many failures in a row, whatever the window says; `0` turns the rule
    /// off. Default `5`.
    pub consecutive_failures: u32,
    /// A call whose time to first byte exceeds this is slow; `None` (the default) turns the
    /// slow-call rule off.
    #[serde(with = "humantime_serde")]
    pub slow_call_threshold: Option<Duration>,
    /// Slow-call rate (`0.0..=1.0`) at or above which the breaker trips. Default `0.8`.
    pub slow_call_rate_threshold: f64,
    /// Open time after the first trip; the n-th consecutive open lasts `open_base × n`.
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub open_base: Duration,
    /// Longest open time. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub open_max: Duration,
    /// Fraction (`0.0..=1.0`) of the open time taken off at random, so that breakers opened
    /// together do not probe together: the open time is drawn in `[d × (1 − jitter), d]`.
    /// Default `0.2`.
    pub jitter: f64,
    /// Probes admitted while half-open; all must succeed to close. Default `3`.
    pub half_open_probes: u32,
    /// A probe that has not ended after this long counts as failed, sending the breaker back
    /// to open. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Cooldown after a `429` that carries no `Retry-After`. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub rate_limit_cooldown: Duration,
    /// Longest cooldown after a `429` (the upstream's `Retry-After` is capped to it); `0s`
    /// turns 429 cooldowns off. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub rate_limit_cooldown_max: Duration,
    /// Most keys tracked; requests for further keys pass through untracked. Default `10000`.
    pub max_keys: usize,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            window_buckets: 10,
            min_calls: 20,
            failure_rate_threshold: 0.5,
            consecutive_failures: 5,
            slow_call_threshold: None,
            slow_call_rate_threshold: 0.8,
            open_base: Duration::from_secs(10),
            open_max: Duration::from_secs(300),
            jitter: 0.2,
            half_open_probes: 3,
            probe_timeout: Duration::from_secs(30),
            rate_limit_cooldown: Duration::from_secs(1),
            rate_limit_cooldown_max: Duration::from_secs(60),
            max_keys: 10_000,
        }
    }
}

fn check_rate(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Rate { field, value })
    }
}

fn check_min(field: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value >= min {
        Ok(())
    } else {
        Err(ConfigError::TooSmall { field, min, value })
    }
}

fn check_positive(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::ZeroDuration { field })
    } else {
        Ok(())
    }
}

impl CircuitBreakerConfig {
    /// Checks that the configuration can work: rates in `0..=1`, `min_calls`,
    /// `half_open_probes`, `window_buckets` and `max_keys` at least 1, positive `window`,
    /// `open_base` and `probe_timeout`, `open_max ≥ open_base`, buckets of at least 1 ms.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_rate("failure_rate_threshold", self.failure_rate_threshold)?;
        check_rate("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        check_rate("jitter", self.jitter)?;
        check_min("min_calls", self.min_calls.into(), 1)?;
        check_min("half_open_probes", self.half_open_probes.into(), 1)?;
        check_min("window_buckets", self.window_buckets.into(), 1)?;
        check_min("max_keys", self.max_keys as u64, 1)?;
        check_positive("window", self.window)?;
        check_positive("open_base", self.open_base)?;
        check_positive("probe_timeout", self.probe_timeout)?;
        if let Some(slow) = self.slow_call_threshold {
            check_positive("slow_call_threshold", slow)?;
        }
        if self.open_max < self.open_base {
            return Err(ConfigError::OpenMaxBelowBase {
                open_base: self.open_base,
                open_max: self.open_max,
            });
        }
        if self.window_buckets > MAX_WINDOW_BUCKETS {
            return Err(ConfigError::TooManyBuckets {
                max: MAX_WINDOW_BUCKETS,
                value: self.window_buckets,
            });
        }
        if self.window < Duration::from_millis(u64::from(self.window_buckets)) {
            return Err(ConfigError::WindowTooShort {
                window: self.window,
                buckets: self.window_buckets,
            });
        }
        Ok(())
    }

    /// The nearest valid configuration: every out-of-range value clamped into range (rates into
    /// `0..=1`, NaN to the default, counts to at least 1, zero durations to 1 ms, `open_max` to
    /// at least `open_base`, buckets to what the window can hold). Used by
    /// [`CircuitBreakerLayer::new`](crate::CircuitBreakerLayer::new), which cannot fail.
    pub fn sanitized(&self) -> Self {
        let d = Self::default();
        let rate = |v: f64, default: f64| {
            if v.is_nan() {
                default
            } else {
                v.clamp(0.0, 1.0)
            }
        };
        let positive = |v: Duration| v.max(Duration::from_millis(1));
        let window = positive(self.window);
        let max_buckets = u32::try_from(window.as_millis())
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_WINDOW_BUCKETS);
        let open_base = positive(self.open_base);
        Self {
            window,
            window_buckets: self.window_buckets.clamp(1, max_buckets),
            min_calls: self.min_calls.max(1),
            failure_rate_threshold: rate(self.failure_rate_threshold, d.failure_rate_threshold),
            consecutive_failures: self.consecutive_failures,
            slow_call_threshold: self.slow_call_threshold.map(positive),
            slow_call_rate_threshold: rate(
                self.slow_call_rate_threshold,
                d.slow_call_rate_threshold,
            ),
            open_base,
            open_max: self.open_max.max(open_base),
            jitter: rate(self.jitter, d.jitter),
            half_open_probes: self.half_open_probes.max(1),
            probe_timeout: positive(self.probe_timeout),
            rate_limit_cooldown: self.rate_limit_cooldown,
            rate_limit_cooldown_max: self.rate_limit_cooldown_max,
            max_keys: self.max_keys.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_sanitize_is_identity_on_valid() {
        let c = CircuitBreakerConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.sanitized(), c);
    }

    #[test]
    fn sanitized_is_always_valid() {
        let c = CircuitBreakerConfig {
            window: Duration::ZERO,
            window_buckets: 0,
            min_calls: 0,
            failure_rate_threshold: f64::NAN,
            slow_call_rate_threshold: 7.0,
            jitter: -1.0,
            open_base: Duration::from_secs(10),
            open_max: Duration::from_secs(1),
            half_open_probes: 0,
            probe_timeout: Duration::ZERO,
            slow_call_threshold: Some(Duration::ZERO),
            max_keys: 0,
            ..CircuitBreakerConfig::default()
        };
        assert!(c.validate().is_err());
        assert_eq!(c.sanitized().validate(), Ok(()));
    }
}

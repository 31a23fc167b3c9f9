//! Configuration: TOML, defaults, validation and the three constructors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rampart_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, ConfigError};

#[test]
fn toml_with_human_durations() {
    let c: CircuitBreakerConfig = toml::from_str(
        r#"
        window = "30s"
        min_calls = 5
        failure_rate_threshold = 0.25
        slow_call_threshold = "1500ms"
        open_base = "2s"
        open_max = "1m"
        half_open_probes = 1
        "#,
    )
    .unwrap();
    assert_eq!(c.window, Duration::from_secs(30));
    assert_eq!(c.min_calls, 5);
    assert_eq!(c.slow_call_threshold, Some(Duration::from_millis(1500)));
    assert_eq!(c.open_max, Duration::from_secs(60));
    // Everything else is the default.
    assert_eq!(c.consecutive_failures, 5);
    assert_eq!(c.max_keys, 10_000);
    assert_eq!(c.validate(), Ok(()));

    let empty: CircuitBreakerConfig = toml::from_str("").unwrap();
    assert_eq!(empty, CircuitBreakerConfig::default());
    assert!(toml::from_str::<CircuitBreakerConfig>("windw = \"1s\"").is_err());
    assert!(toml::from_str::<CircuitBreakerConfig>("window = \"soon\"").is_err());
}

#[test]
fn defaults() {
    let c = CircuitBreakerConfig::default();
    assert_eq!(c.window, Duration::from_secs(60));
    assert_eq!(c.window_buckets, 10);
    assert_eq!(c.min_calls, 20);
    assert_eq!(c.failure_rate_threshold, 0.5);
    assert_eq!(c.consecutive_failures, 5);
    assert_eq!(c.slow_call_threshold, None);
    assert_eq!(c.slow_call_rate_threshold, 0.8);
    assert_eq!(c.open_base, Duration::from_secs(10));
    assert_eq!(c.open_max, Duration::from_secs(300));
    assert_eq!(c.jitter, 0.2);
    assert_eq!(c.half_open_probes, 3);
    assert_eq!(c.probe_timeout, Duration::from_secs(30));
    assert_eq!(c.rate_limit_cooldown, Duration::from_secs(1));
    assert_eq!(c.rate_limit_cooldown_max, Duration::from_secs(60));
    assert_eq!(c.max_keys, 10_000);
}

#[test]
fn builder_and_from_config_validate() {
    let cases: Vec<(CircuitBreakerConfig, ConfigError)> = vec![
        (
            CircuitBreakerConfig {
                failure_rate_threshold: 1.5,
                ..Default::default()
            },
            ConfigError::Rate {
                field: "failure_rate_threshold",
                value: 1.5,
            },
        ),
        (
            CircuitBreakerConfig {
                jitter: -0.1,
                ..Default::default()
            },
            ConfigError::Rate {
                field: "jitter",
                value: -0.1,
            },
        ),
        (
            CircuitBreakerConfig {
                half_open_probes: 0,
                ..Default::default()
            },
            ConfigError::TooSmall {
                field: "half_open_probes",
                min: 1,
                value: 0,
            },
        ),
        (
            CircuitBreakerConfig {
                min_calls: 0,
                ..Default::default()
            },
            ConfigError::TooSmall {
                field: "min_calls",
                min: 1,
                value: 0,
            },
        ),
        (
            CircuitBreakerConfig {
                probe_timeout: Duration::ZERO,
                ..Default::default()
            },
            ConfigError::ZeroDuration {
                field: "probe_timeout",
            },
        ),
        (
            CircuitBreakerConfig {
                open_max: Duration::from_secs(1),
                ..Default::default()
            },
            ConfigError::OpenMaxBelowBase {
                open_base: Duration::from_secs(10),
                open_max: Duration::from_secs(1),
            },
        ),
        (
            CircuitBreakerConfig {
                window: Duration::from_millis(5),
                ..Default::default()
            },
            ConfigError::WindowTooShort {
                window: Duration::from_millis(5),
                buckets: 10,
            },
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(
            CircuitBreakerLayer::from_config(config.clone()).unwrap_err(),
            expected
        );
        assert_eq!(
            CircuitBreakerLayer::builder()
                .config(config.clone())
                .build()
                .unwrap_err(),
            expected
        );
        // `new` clamps instead.
        assert_eq!(CircuitBreakerLayer::new(config).config().validate(), Ok(()));
    }
    let err = CircuitBreakerLayer::builder()
        .slow_call_rate_threshold(f64::NAN)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("slow_call_rate_threshold"),
        "{err}"
    );
    let layer = CircuitBreakerLayer::builder()
        .window(Duration::from_secs(5))
        .window_buckets(5)
        .min_calls(3)
        .failure_rate_threshold(0.3)
        .consecutive_failures(0)
        .slow_call_threshold(Duration::from_secs(2))
        .slow_call_rate_threshold(0.9)
        .open_base(Duration::from_secs(1))
        .open_max(Duration::from_secs(8))
        .jitter(0.0)
        .half_open_probes(2)
        .probe_timeout(Duration::from_secs(4))
        .rate_limit_cooldown(Duration::from_secs(2))
        .rate_limit_cooldown_max(Duration::from_secs(9))
        .max_keys(7)
        .build()
        .unwrap();
    assert_eq!(
        layer.config().slow_call_threshold,
        Some(Duration::from_secs(2))
    );
    assert_eq!(layer.config().max_keys, 7);
}

//! Configuration: TOML shape, defaults, validation and clamping; a budget invariant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proptest::prelude::*;
use rampart_fallback::{
    BudgetConfig, ConfigError, FallbackConfig, FallbackLayer, MAX_ATTEMPTS_CAP, RetryBudget,
};

#[test]
fn toml_with_durations_and_chains() {
    let c: FallbackConfig = toml::from_str(
        r#"
        deadline = "90s"
        max_attempts = 4
        retries_per_candidate = 1
        context_length_fallback = true
        [chains]
        "gpt-4.1" = ["claude-sonnet-4.5", "deepseek-v3.2"]
        [backoff]
        base = "50ms"
        cap = "2s"
        [budget]
        ratio = 0.1
        min_per_second = 5
        ttl = "20s"
        [stream]
        first_token_timeout = "15s"
        idle_timeout = "5s"
        max_held_bytes = 1024
        "#,
    )
    .unwrap();
    assert_eq!(c.deadline, Duration::from_secs(90));
    assert_eq!(c.max_attempts, 4);
    assert_eq!(c.chains["gpt-4.1"], ["claude-sonnet-4.5", "deepseek-v3.2"]);
    assert_eq!(c.backoff.base, Duration::from_millis(50));
    assert_eq!(c.budget.min_per_second, 5.0);
    assert_eq!(c.stream.max_held_bytes, 1024);
    c.validate().unwrap();
    FallbackLayer::from_config(c).unwrap();
}

#[test]
fn defaults() {
    let c: FallbackConfig = toml::from_str("").unwrap();
    assert_eq!(c, FallbackConfig::default());
    assert_eq!(c.deadline, Duration::from_secs(120));
    assert_eq!(c.max_attempts, 3);
    assert_eq!(c.retries_per_candidate, 0);
    assert!(!c.context_length_fallback);
    assert_eq!(c.budget.ratio, 0.2);
    assert_eq!(c.budget.min_per_second, 10.0);
    assert_eq!(c.budget.ttl, Duration::from_secs(10));
    c.validate().unwrap();
}

#[test]
fn unknown_fields_are_refused() {
    assert!(toml::from_str::<FallbackConfig>("max_retries = 3").is_err());
    assert!(toml::from_str::<FallbackConfig>("[budget]\npercent = 3").is_err());
}

#[test]
fn validation_and_clamping() {
    let bad = FallbackConfig {
        max_attempts: 11,
        ..FallbackConfig::default()
    };
    assert_eq!(
        bad.validate(),
        Err(ConfigError::MaxAttempts {
            value: 11,
            cap: MAX_ATTEMPTS_CAP
        })
    );
    assert!(FallbackLayer::from_config(bad.clone()).is_err());
    assert!(FallbackLayer::builder().max_attempts(0).build().is_err());
    // `new` clamps instead.
    assert_eq!(
        FallbackLayer::new(bad).config().max_attempts,
        MAX_ATTEMPTS_CAP
    );

    assert!(
        FallbackLayer::builder()
            .deadline(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        FallbackLayer::builder()
            .backoff(Duration::from_secs(2), Duration::from_secs(1))
            .build()
            .is_err()
    );
    assert!(
        FallbackLayer::builder()
            .budget(-1.0, 10.0, Duration::from_secs(10))
            .build()
            .is_err()
    );
    assert!(
        FallbackLayer::builder()
            .budget(0.2, 10.0, Duration::from_secs(600))
            .build()
            .is_err()
    );
    assert!(FallbackLayer::builder().max_held_bytes(0).build().is_err());
    assert!(FallbackLayer::builder().chain("a", [""]).build().is_err());
    let clamped = FallbackLayer::new(FallbackConfig {
        budget: BudgetConfig {
            ratio: f64::NAN,
            min_per_second: -3.0,
            ttl: Duration::ZERO,
        },
        ..FallbackConfig::default()
    });
    clamped.config().validate().unwrap();
}

proptest! {
    /// Within one window, withdrawals never exceed `ratio × deposits + min_per_second × ttl`.
    #[test]
    fn withdrawals_stay_within_the_budget(
        ops in proptest::collection::vec(any::<bool>(), 0..400),
        ratio in 0.0f64..1.0,
        min in 0.0f64..5.0,
    ) {
        let ttl = Duration::from_secs(10);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let b = RetryBudget::new(BudgetConfig { ratio, min_per_second: min, ttl });
            let (mut deposits, mut withdrawals) = (0u32, 0u32);
            for deposit in ops {
                if deposit {
                    b.deposit();
                    deposits += 1;
                } else if b.try_withdraw() {
                    withdrawals += 1;
                }
                prop_assert!(f64::from(withdrawals) <= ratio * f64::from(deposits) + min * 10.0 + 1e-9);
            }
            Ok(())
        })?;
    }
}

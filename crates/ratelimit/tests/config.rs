//! Configuration: TOML, defaults, validation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rampart_ratelimit::{
    ConfigError, KeySource, Limits, RateLimitConfig, RateLimitLayer, StoreFailure,
};

#[test]
fn defaults() {
    let c = RateLimitConfig::default();
    assert_eq!(c.scope, "tenant");
    assert_eq!(c.key, KeySource::Tenant);
    assert_eq!(c.limits, Limits::none());
    assert_eq!(c.default_output_tokens, 256);
    assert_eq!(c.queue.max_wait, Duration::ZERO);
    assert_eq!(c.on_store_error, StoreFailure::FailOpen);
    assert_eq!(c.concurrency_retry_after, Duration::from_secs(1));
    assert_eq!(c.sweep_interval, Duration::from_secs(10));
    assert_eq!(toml::from_str::<RateLimitConfig>("").unwrap(), c);
}

#[test]
fn full_toml() {
    let c: RateLimitConfig = toml::from_str(
        r#"
        scope = "target"
        key = { header = "x-user-id" }
        default_output_tokens = 128
        on_store_error = "fail_closed"
        concurrency_retry_after = "2s"
        sweep_interval = "30s"
        [limits]
        requests_per_minute = 1000
        tokens_per_minute = 100000
        concurrency = 10
        request_burst = 50
        token_burst = 20000
        [models."gpt-4.1"]
        requests_per_minute = 500
        [overrides."acme"]
        concurrency = 2
        [output_tokens]
        "gpt-4.1" = 1024
        [queue]
        max_wait = "1500ms"
        [edge]
        max_body_bytes = 1000
        body_timeout = "5s"
        "#,
    )
    .unwrap();
    assert_eq!(c.key, KeySource::Header("x-user-id".into()));
    assert_eq!(c.limits.request_burst, Some(50));
    assert_eq!(c.models["gpt-4.1"].requests_per_minute, Some(500));
    assert_eq!(c.overrides["acme"].concurrency, Some(2));
    assert_eq!(c.output_tokens["gpt-4.1"], 1024);
    assert_eq!(c.queue.max_wait, Duration::from_millis(1500));
    assert_eq!(c.edge.max_body_bytes, 1000);
    assert_eq!(c.on_store_error, StoreFailure::FailClosed);
    // Per-model limits under a key without the model would share one bucket: refused.
    assert!(matches!(
        RateLimitLayer::from_config(c.clone()),
        Err(ConfigError::ModelsNeedModelKey)
    ));
    let c = RateLimitConfig {
        key: KeySource::TenantModel,
        ..c
    };
    let layer = RateLimitLayer::from_config(c).unwrap();
    assert_eq!(layer.scope(), "target");

    for key in ["tenant", "tenant_model", "target"] {
        let c: RateLimitConfig = toml::from_str(&format!("key = \"{key}\"")).unwrap();
        RateLimitLayer::from_config(c).unwrap();
    }
}

#[test]
fn unknown_fields_are_refused() {
    assert!(toml::from_str::<RateLimitConfig>("rpm = 3").is_err());
    assert!(toml::from_str::<RateLimitConfig>("[limits]\nrequests_per_second = 3").is_err());
    assert!(toml::from_str::<RateLimitConfig>("key = \"ip\"").is_err());
    assert!(toml::from_str::<RateLimitConfig>("[queue]\nmax_wait = \"soon\"").is_err());
}

#[test]
fn the_gateway_per_target_table_builds() {
    let c: RateLimitConfig = toml::from_str(
        r#"
        scope = "target"
        key = "target"
        [models."gpt-4.1"]
        requests_per_minute = 500
        [models."claude-sonnet-4.5"]
        requests_per_minute = 300
        [models."gemini-2.5-flash"]
        requests_per_minute = 1000
        [models."deepseek-v3.2"]
        requests_per_minute = 2000
        "#,
    )
    .unwrap();
    assert_eq!(c.models.len(), 4);
    RateLimitLayer::from_config(c).unwrap();
}

#[test]
fn builder_validates() {
    let zero = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(0))
        .build()
        .unwrap_err();
    assert!(matches!(
        zero,
        ConfigError::Zero {
            field: "requests_per_minute",
            ..
        }
    ));
    let zero = RateLimitLayer::builder()
        .model_limits("m", Limits::none().concurrency(0))
        .build()
        .unwrap_err();
    assert_eq!(
        zero.to_string(),
        "models.m: `concurrency` must be at least 1 (leave it out for no limit)"
    );
    let burst = RateLimitLayer::builder()
        .limits(Limits::none().token_burst(5))
        .build()
        .unwrap_err();
    assert!(matches!(
        burst,
        ConfigError::BurstWithoutRate {
            field: "token_burst",
            ..
        }
    ));
    // A burst override on top of a default rate is fine.
    RateLimitLayer::builder()
        .limits(Limits::none().tokens_per_minute(100))
        .key_limits("k", Limits::none().token_burst(500))
        .build()
        .unwrap();
    let header = RateLimitLayer::builder()
        .key(KeySource::Header("bad header".into()))
        .build()
        .unwrap_err();
    assert!(matches!(header, ConfigError::BadHeader(_)));
    assert_eq!(
        RateLimitLayer::builder().scope(" ").build().unwrap_err(),
        ConfigError::EmptyScope
    );
}

#[test]
fn merging_overrides() {
    let base = Limits::none()
        .requests_per_minute(100)
        .request_burst(10)
        .tokens_per_minute(1000)
        .concurrency(5);
    let m = Limits::none().requests_per_minute(50).merged_over(&base);
    // A rate set in the override brings its own burst (default: the rate).
    assert_eq!(m.quota().requests.unwrap().burst, 50);
    assert_eq!(m.tokens_per_minute, Some(1000));
    assert_eq!(m.concurrency, Some(5));
    let b = Limits::none().request_burst(3).merged_over(&base);
    assert_eq!(b.quota().requests.unwrap().per_minute, 100);
    assert_eq!(b.quota().requests.unwrap().burst, 3);
}

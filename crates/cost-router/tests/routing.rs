#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Catalog, routes, strategies, context-window filtering and request hints.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rampart_core::{Price, Target};
use rampart_cost_router::{
    Catalog, CostRouterConfig, CostRouterLayer, ModelConfig, ModelInfo, RouteConfig, RuleConfig,
    Strategy, Tier,
};

fn handle(config: CostRouterConfig) -> rampart_cost_router::CostRouterHandle {
    CostRouterLayer::from_config(config).unwrap().handle()
}

const SIMPLE: &str = "What is the capital of France?";
const MEDIUM: &str = "Write a short poem about the sea.";
const COMPLEX: &str = "Prove step by step that the square root of two is irrational.";

#[test]
fn default_catalog_has_the_design_figures() {
    let c = Catalog::default();
    let names: Vec<&str> = c.models().iter().map(ModelInfo::name).collect();
    assert_eq!(names, MODELS);
    let ds = c.get("deepseek-v3.2").unwrap();
    assert_eq!(
        (ds.price.input, ds.price.cached_input, ds.price.output),
        (0.28, Some(0.028), 0.42)
    );
    assert_eq!((ds.context_window, ds.tier), (128_000, Tier::Simple));
    assert_eq!(ds.provider(), "deepseek");
    let g = c.get("gemini-2.5-flash").unwrap();
    assert_eq!(
        (g.price.input, g.price.cached_input, g.price.output),
        (0.30, Some(0.075), 2.50)
    );
    assert_eq!((g.context_window, g.tier), (1_000_000, Tier::Medium));
    let o = c.get("gpt-4.1").unwrap();
    assert_eq!(
        (o.price.input, o.price.cached_input, o.price.output),
        (2.0, Some(0.5), 8.0)
    );
    assert_eq!(
        (o.context_window, o.tier, o.provider()),
        (128_000, Tier::Complex, "openai")
    );
    let a = c.get("claude-sonnet-4.5").unwrap();
    assert_eq!(
        (a.price.input, a.price.cached_input, a.price.output),
        (3.0, Some(0.3), 15.0)
    );
    assert_eq!(
        (a.context_window, a.tier, a.provider()),
        (200_000, Tier::Complex, "anthropic")
    );
    assert!(o.supports("tools") && o.supports("vision"));
    assert_eq!(c.cheapest().unwrap().name(), "deepseek-v3.2");
}

#[test]
fn catalog_config_renames_overrides_adds_and_removes() {
    let mut cfg = CostRouterConfig::default();
    cfg.providers.insert("openai".into(), "openai-sim".into());
    cfg.models.insert(
        "gpt-4.1".into(),
        ModelConfig {
            price: Some(Price {
                input: 1.0,
                cached_input: None,
                output: 4.0,
            }),
            ..ModelConfig::default()
        },
    );
    cfg.models.insert(
        "llama".into(),
        ModelConfig {
            provider: Some("groq".into()),
            price: Some(Price {
                input: 0.1,
                cached_input: None,
                output: 0.2,
            }),
            context_window: Some(8192),
            tier: Some(Tier::Simple),
            capabilities: Some(vec!["tools".into()]),
            enabled: None,
        },
    );
    cfg.models.insert(
        "claude-sonnet-4.5".into(),
        ModelConfig {
            enabled: Some(false),
            ..ModelConfig::default()
        },
    );
    let h = handle(cfg);
    let c = h.catalog();
    let gpt = c.get("gpt-4.1").unwrap();
    assert_eq!(gpt.provider(), "openai-sim");
    assert_eq!(gpt.price.output, 4.0);
    assert_eq!(c.get("llama").unwrap().provider(), "groq");
    assert!(c.get("claude-sonnet-4.5").is_none());
    assert_eq!(h.routes(), vec!["auto", "cheap", "fast", "smart"]);
}

#[test]
fn config_errors_name_the_key() {
    let err = |f: &dyn Fn(&mut CostRouterConfig)| {
        let mut c = CostRouterConfig::default();
        f(&mut c);
        CostRouterLayer::from_config(c).unwrap_err().key
    };
    assert_eq!(
        err(&|c| {
            c.models.insert("new".into(), ModelConfig::default());
        }),
        "models.\"new\".provider"
    );
    assert_eq!(
        err(&|c| {
            c.fallbacks.insert(
                "gpt-4.1".into(),
                vec!["claude-sonnet-4.5".into(), "nope".into()],
            );
        }),
        "fallbacks.\"gpt-4.1\"[1]"
    );
    assert_eq!(
        err(&|c| {
            c.routes.insert(
                "x".into(),
                RouteConfig {
                    models: vec!["nope".into()],
                    ..RouteConfig::default()
                },
            );
        }),
        "routes.x.models[0]"
    );
    assert_eq!(
        err(&|c| c.rules.push(RuleConfig {
            regex: Some("(".into()),
            route: Some("smart".into()),
            ..Default::default()
        })),
        "rules[0].regex"
    );
    assert_eq!(
        err(&|c| c.rules.push(RuleConfig {
            keyword: Some("x".into()),
            route: Some("nowhere".into()),
            ..Default::default()
        })),
        "rules[0].route"
    );
    assert_eq!(
        err(&|c| {
            c.budgets.tenants.insert(
                "acme".into(),
                rampart_cost_router::BudgetLimit::daily(1.0).status(500),
            );
        }),
        "budgets.tenants.acme.status"
    );
    assert_eq!(
        err(&|c| {
            c.routes.insert("gpt-4.1".into(), RouteConfig::default());
        }),
        "routes.gpt-4.1"
    );
    assert_eq!(err(&|c| c.ewma_alpha = 0.0), "ewma_alpha");
    assert_eq!(
        err(&|c| {
            c.weights.insert("gpt-4.1".into(), -1.0);
        }),
        "weights.\"gpt-4.1\""
    );
}

#[test]
fn config_parses_from_toml() {
    let cfg: CostRouterConfig = toml::from_str(
        r#"
        providers = { openai = "openai-sim", anthropic = "anthropic-sim", gemini = "gemini-sim", deepseek = "deepseek-sim" }
        seed = 3
        [fallbacks]
        "gpt-4.1" = ["claude-sonnet-4.5"]
        [routes.support]
        models = ["gemini-2.5-flash", "gpt-4.1"]
        strategy = "weighted"
        [[rules]]
        keyword = "refund"
        route = "support"
        [budgets.tenants.acme]
        daily_usd = 5.0
        action = "downgrade"
        status = 402
        "#,
    )
    .unwrap();
    let h = handle(cfg);
    assert_eq!(h.catalog().get("gpt-4.1").unwrap().provider(), "openai-sim");
    assert_eq!(h.routes(), vec!["auto", "support"]);
    let bad = toml::from_str::<CostRouterConfig>("unknown_key = 1");
    assert!(bad.is_err());
}

#[tokio::test]
async fn explicit_model_with_fallbacks() {
    let mut cfg = CostRouterConfig::default();
    cfg.fallbacks
        .insert("gpt-4.1".into(), vec!["claude-sonnet-4.5".into()]);
    let h = handle(cfg);
    let d = decide(&h, &body("gpt-4.1", "hi", None), &[]).await.unwrap();
    assert_eq!(&*d.route, "explicit");
    assert_eq!(models(&d), ["gpt-4.1", "claude-sonnet-4.5"]);
    assert_eq!(d.candidates[0].context_window, Some(128_000));
    assert_eq!(d.candidates[0].target, Target::new("openai", "gpt-4.1"));
    let d = decide(&h, &body("deepseek-v3.2", "hi", None), &[])
        .await
        .unwrap();
    assert_eq!(models(&d), ["deepseek-v3.2"]);
}

#[tokio::test]
async fn unknown_model_is_a_404_listing_models_and_routes() {
    let h = handle(CostRouterConfig::default());
    let e = decide(&h, &body("gpt-9", "hi", None), &[])
        .await
        .unwrap_err();
    assert_eq!(e.status(), 404);
    assert_eq!(e.code().unwrap(), "model_not_found");
    for name in MODELS.iter().chain(&["auto", "cheap", "fast", "smart"]) {
        assert!(e.message().contains(name), "{}", e.message());
    }
}

#[tokio::test]
async fn auto_routes_by_tier_cheapest_first() {
    let h = handle(CostRouterConfig::default());
    let d = decide(&h, &body("auto", SIMPLE, None), &[]).await.unwrap();
    assert_eq!(&*d.route, "auto:simple:cheapest");
    // The tier's models, then the other tiers (nearest first, stronger before weaker).
    assert_eq!(
        models(&d),
        [
            "deepseek-v3.2",
            "gemini-2.5-flash",
            "gpt-4.1",
            "claude-sonnet-4.5"
        ]
    );
    let d = decide(&h, &body("auto", MEDIUM, None), &[]).await.unwrap();
    assert_eq!(&*d.route, "auto:medium:cheapest");
    assert_eq!(
        models(&d),
        [
            "gemini-2.5-flash",
            "gpt-4.1",
            "claude-sonnet-4.5",
            "deepseek-v3.2"
        ]
    );
    let d = decide(&h, &body("auto", COMPLEX, None), &[]).await.unwrap();
    assert_eq!(&*d.route, "auto:complex:cheapest");
    // gpt-4.1 (2 + 8) is cheaper than claude (3 + 15).
    assert_eq!(
        models(&d),
        [
            "gpt-4.1",
            "claude-sonnet-4.5",
            "gemini-2.5-flash",
            "deepseek-v3.2"
        ]
    );
}

#[tokio::test]
async fn cross_tier_fallback_can_be_disabled() {
    let cfg = CostRouterConfig {
        cross_tier_fallback: false,
        ..CostRouterConfig::default()
    };
    let h = handle(cfg);
    let d = decide(&h, &body("auto", COMPLEX, None), &[]).await.unwrap();
    assert_eq!(models(&d), ["gpt-4.1", "claude-sonnet-4.5"]);
}

#[tokio::test]
async fn groups_serve_their_models_and_nearest_tier() {
    let h = handle(CostRouterConfig::default());
    // `smart` holds only complex models: a simple prompt still goes there.
    let d = decide(&h, &body("smart", SIMPLE, None), &[]).await.unwrap();
    assert_eq!(&*d.route, "group:smart:simple:cheapest");
    assert_eq!(models(&d), ["gpt-4.1", "claude-sonnet-4.5"]);
    // `cheap` (simple + medium) for a complex prompt: the nearest tier, medium.
    let d = decide(&h, &body("cheap", COMPLEX, None), &[])
        .await
        .unwrap();
    assert_eq!(&*d.route, "group:cheap:complex:cheapest");
    assert_eq!(models(&d), ["gemini-2.5-flash", "deepseek-v3.2"]);
    // `fast` does not classify: every model by latency (none observed: cheapest first).
    let d = decide(&h, &body("fast", COMPLEX, None), &[]).await.unwrap();
    assert_eq!(&*d.route, "group:fast:simple:lowest_latency");
    assert_eq!(models(&d)[0], "deepseek-v3.2");
}

#[tokio::test]
async fn weighted_is_deterministic_when_seeded_and_follows_weights() {
    let mk = || {
        let mut cfg = CostRouterConfig {
            seed: Some(42),
            ..CostRouterConfig::default()
        };
        cfg.routes.insert(
            "mix".into(),
            RouteConfig {
                models: vec!["gemini-2.5-flash".into(), "gpt-4.1".into()],
                strategy: Strategy::Weighted,
                classify: false,
                ..RouteConfig::default()
            },
        );
        cfg.weights.insert("gemini-2.5-flash".into(), 3.0);
        cfg.weights.insert("gpt-4.1".into(), 1.0);
        handle(cfg)
    };
    let (a, b) = (mk(), mk());
    let mut seq_a = Vec::new();
    let mut seq_b = Vec::new();
    let mut gemini_first = 0;
    for _ in 0..4000 {
        let da = decide(&a, &body("mix", "hi", None), &[]).await.unwrap();
        let db = decide(&b, &body("mix", "hi", None), &[]).await.unwrap();
        assert_eq!(da.candidates.len(), 2);
        if da.candidates[0].target.model.as_ref() == "gemini-2.5-flash" {
            gemini_first += 1;
        }
        assert!(da.route.ends_with(":weighted"));
        seq_a.push(models(&da)[0].clone());
        seq_b.push(models(&db)[0].clone());
    }
    assert_eq!(seq_a, seq_b, "same seed, same order");
    let share = f64::from(gemini_first) / 4000.0;
    assert!((0.72..0.78).contains(&share), "gemini first {share}");
}

#[tokio::test]
async fn weight_zero_is_never_first() {
    let mut cfg = CostRouterConfig {
        seed: Some(1),
        ..CostRouterConfig::default()
    };
    cfg.auto.strategy = Strategy::Weighted;
    cfg.weights.insert("gpt-4.1".into(), 0.0);
    let h = handle(cfg);
    for _ in 0..200 {
        let d = decide(&h, &body("auto", COMPLEX, None), &[]).await.unwrap();
        assert_eq!(models(&d)[0], "claude-sonnet-4.5");
    }
}

#[tokio::test]
async fn lowest_latency_uses_the_observed_ewma() {
    let mut cfg = CostRouterConfig::default();
    cfg.auto.strategy = Strategy::LowestLatency;
    let h = handle(cfg);
    let gpt = Target::new("openai", "gpt-4.1");
    let claude = Target::new("anthropic", "claude-sonnet-4.5");
    h.observe_latency(&gpt, Duration::from_millis(400));
    h.observe_latency(&claude, Duration::from_millis(100));
    let d = decide(&h, &body("auto", COMPLEX, None), &[]).await.unwrap();
    assert_eq!(&*d.route, "auto:complex:lowest_latency");
    assert_eq!(models(&d)[..2], ["claude-sonnet-4.5", "gpt-4.1"]);
    // EWMA (alpha 0.2): gpt moves towards 10 ms slowly.
    for _ in 0..20 {
        h.observe_latency(&gpt, Duration::from_millis(10));
    }
    let ewma = h.latency(&gpt).unwrap();
    assert!(ewma < Duration::from_millis(100), "{ewma:?}");
    let d = decide(&h, &body("auto", COMPLEX, None), &[]).await.unwrap();
    assert_eq!(models(&d)[..2], ["gpt-4.1", "claude-sonnet-4.5"]);
    // One sample of 500 ms: 0.2 * 500 + 0.8 * ewma.
    let before = h.latency(&gpt).unwrap().as_secs_f64() * 1000.0;
    h.observe_latency(&gpt, Duration::from_millis(500));
    let after = h.latency(&gpt).unwrap().as_secs_f64() * 1000.0;
    assert!((after - (0.2 * 500.0 + 0.8 * before)).abs() < 1e-6);
}

#[tokio::test]
async fn unobserved_targets_come_first_for_lowest_latency() {
    let mut cfg = CostRouterConfig::default();
    cfg.auto.strategy = Strategy::LowestLatency;
    let h = handle(cfg);
    h.observe_latency(&Target::new("openai", "gpt-4.1"), Duration::from_millis(5));
    let d = decide(&h, &body("auto", COMPLEX, None), &[]).await.unwrap();
    assert_eq!(models(&d)[..2], ["claude-sonnet-4.5", "gpt-4.1"]);
}

#[tokio::test]
async fn context_window_drops_small_models() {
    let h = handle(CostRouterConfig::default());
    // ~150K tokens of prompt: only gemini (1M) and claude (200K) hold it.
    let big = "word ".repeat(120_000);
    let d = decide(&h, &body("auto", &big, Some(100)), &[])
        .await
        .unwrap();
    let m = models(&d);
    assert!(
        !m.contains(&"gpt-4.1".to_owned()) && !m.contains(&"deepseek-v3.2".to_owned()),
        "{m:?}"
    );
    assert!(m.contains(&"gemini-2.5-flash".to_owned()));
    // max_tokens counts too.
    // (a simple prompt: no simple model fits, the nearest tier serves, stronger ones follow)
    let d = decide(&h, &body("auto", "hi", Some(190_000)), &[])
        .await
        .unwrap();
    assert_eq!(models(&d), ["gemini-2.5-flash", "claude-sonnet-4.5"]);
    // Explicit model too small: its fallback takes over.
    let mut cfg = CostRouterConfig::default();
    cfg.fallbacks
        .insert("gpt-4.1".into(), vec!["claude-sonnet-4.5".into()]);
    let h2 = handle(cfg);
    let d = decide(&h2, &body("gpt-4.1", "hi", Some(150_000)), &[])
        .await
        .unwrap();
    assert_eq!(models(&d), ["claude-sonnet-4.5"]);
    // Nothing holds it: 400 context_length_exceeded.
    let e = decide(&h, &body("auto", "hi", Some(2_000_000)), &[])
        .await
        .unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(e.code().unwrap(), "context_length_exceeded");
    let e = decide(&h, &body("gpt-4.1", "hi", Some(200_000)), &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap(), "context_length_exceeded");
}

#[tokio::test]
async fn default_output_allowance_is_used_without_max_tokens() {
    let cfg = CostRouterConfig {
        default_output_tokens: 150_000,
        ..CostRouterConfig::default()
    };
    let h = handle(cfg);
    let d = decide(&h, &body("auto", "hi", None), &[]).await.unwrap();
    assert_eq!(models(&d), ["gemini-2.5-flash", "claude-sonnet-4.5"]);
}

#[tokio::test]
async fn priority_hint() {
    let h = handle(CostRouterConfig::default());
    // low: every model, cheapest first, whatever the tier.
    let d = decide(
        &h,
        &body("auto", COMPLEX, None),
        &[("x-rampart-priority", "low")],
    )
    .await
    .unwrap();
    assert_eq!(&*d.route, "auto:simple:cheapest");
    assert_eq!(
        models(&d),
        [
            "deepseek-v3.2",
            "gemini-2.5-flash",
            "gpt-4.1",
            "claude-sonnet-4.5"
        ]
    );
    // high: the strongest tier, strongest first.
    let d = decide(
        &h,
        &body("auto", SIMPLE, None),
        &[("x-rampart-priority", "high")],
    )
    .await
    .unwrap();
    assert_eq!(&*d.route, "auto:complex:strongest");
    assert_eq!(models(&d)[..2], ["claude-sonnet-4.5", "gpt-4.1"]);
    // medium: as without the header.
    let d = decide(
        &h,
        &body("auto", SIMPLE, None),
        &[("x-rampart-priority", "medium")],
    )
    .await
    .unwrap();
    assert_eq!(&*d.route, "auto:simple:cheapest");
    // Explicit models ignore it.
    let d = decide(
        &h,
        &body("gpt-4.1", SIMPLE, None),
        &[("x-rampart-priority", "low")],
    )
    .await
    .unwrap();
    assert_eq!(models(&d), ["gpt-4.1"]);
    let e = decide(
        &h,
        &body("auto", SIMPLE, None),
        &[("x-rampart-priority", "urgent")],
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.status().as_u16(), e.code().unwrap().as_ref()),
        (400, "invalid_header")
    );
}

#[tokio::test]
async fn max_price_hint() {
    let h = handle(CostRouterConfig::default());
    let d = decide(
        &h,
        &body("auto", COMPLEX, None),
        &[("x-rampart-max-price", "10")],
    )
    .await
    .unwrap();
    // claude (15/M output) is dropped; the complex tier keeps gpt-4.1.
    assert_eq!(models(&d), ["gpt-4.1", "gemini-2.5-flash", "deepseek-v3.2"]);
    let d = decide(
        &h,
        &body("auto", COMPLEX, None),
        &[("x-rampart-max-price", "2.5")],
    )
    .await
    .unwrap();
    // No complex model left: the nearest tier serves.
    assert_eq!(models(&d), ["gemini-2.5-flash", "deepseek-v3.2"]);
    assert_eq!(&*d.route, "auto:complex:cheapest");
    let e = decide(
        &h,
        &body("auto", COMPLEX, None),
        &[("x-rampart-max-price", "0.1")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(e.code().unwrap(), "no_model_within_max_price");
    assert!(e.message().contains("deepseek-v3.2"), "{}", e.message());
    let e = decide(
        &h,
        &body("gpt-4.1", "hi", None),
        &[("x-rampart-max-price", "1")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code().unwrap(), "no_model_within_max_price");
    let e = decide(
        &h,
        &body("auto", "hi", None),
        &[("x-rampart-max-price", "cheap")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code().unwrap(), "invalid_header");
}

#[tokio::test]
async fn latency_budget_hint() {
    let h = handle(CostRouterConfig::default());
    for (t, ms) in [
        (Target::new("deepseek", "deepseek-v3.2"), 300),
        (Target::new("gemini", "gemini-2.5-flash"), 50),
        (Target::new("openai", "gpt-4.1"), 100),
        (Target::new("anthropic", "claude-sonnet-4.5"), 200),
    ] {
        h.observe_latency(&t, Duration::from_millis(ms));
    }
    let hint = [("x-rampart-latency-budget-ms", "120")];
    let d = decide(&h, &body("auto", SIMPLE, None), &hint)
        .await
        .unwrap();
    // Fitting targets first in the strategy's order, the rest fastest first.
    assert_eq!(
        models(&d),
        [
            "gemini-2.5-flash",
            "gpt-4.1",
            "claude-sonnet-4.5",
            "deepseek-v3.2"
        ]
    );
    // Nothing fits: all kept, fastest first.
    let d = decide(
        &h,
        &body("auto", SIMPLE, None),
        &[("x-rampart-latency-budget-ms", "1")],
    )
    .await
    .unwrap();
    assert_eq!(
        models(&d),
        [
            "gemini-2.5-flash",
            "gpt-4.1",
            "claude-sonnet-4.5",
            "deepseek-v3.2"
        ]
    );
    let e = decide(
        &h,
        &body("auto", SIMPLE, None),
        &[("x-rampart-latency-budget-ms", "-3")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code().unwrap(), "invalid_header");
}

#[tokio::test]
async fn content_rules_are_checked_first() {
    let mut cfg = CostRouterConfig::default();
    cfg.routes.insert(
        "support".into(),
        RouteConfig {
            models: vec!["gemini-2.5-flash".into()],
            ..RouteConfig::default()
        },
    );
    cfg.rules = vec![
        RuleConfig {
            keyword: Some("Refund".into()),
            route: Some("support".into()),
            ..Default::default()
        },
        RuleConfig {
            regex: Some("(?i)stack trace".into()),
            route: Some("smart".into()),
            ..Default::default()
        },
        RuleConfig {
            keyword: Some("urgent".into()),
            tier: Some(Tier::Complex),
            ..Default::default()
        },
    ];
    let h = handle(cfg);
    let d = decide(&h, &body("auto", "I want a REFUND now", None), &[])
        .await
        .unwrap();
    assert!(d.route.starts_with("group:support:"), "{}", d.route);
    assert_eq!(models(&d), ["gemini-2.5-flash"]);
    let d = decide(&h, &body("cheap", "here is the Stack Trace", None), &[])
        .await
        .unwrap();
    assert!(d.route.starts_with("group:smart:"), "{}", d.route);
    let d = decide(&h, &body("auto", "urgent: hello", None), &[])
        .await
        .unwrap();
    assert_eq!(&*d.route, "auto:complex:cheapest");
    // Explicit models are not subject to rules.
    let d = decide(&h, &body("deepseek-v3.2", "refund", None), &[])
        .await
        .unwrap();
    assert_eq!(models(&d), ["deepseek-v3.2"]);
}

#[tokio::test]
async fn capabilities_prefer_capable_models() {
    let h = handle(CostRouterConfig::default());
    let b = serde_json::json!({
        "model": "auto",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]}],
    })
    .to_string();
    let d = decide(&h, &b, &[]).await.unwrap();
    // deepseek has no vision: dropped while capable models remain.
    assert!(
        !models(&d).contains(&"deepseek-v3.2".to_owned()),
        "{:?}",
        models(&d)
    );
}

#[test]
fn tier_names() {
    assert_eq!(Tier::parse(" Complex "), Some(Tier::Complex));
    assert_eq!(Tier::parse("huge"), None);
    assert_eq!(Tier::Medium.to_string(), "medium");
}

#[test]
fn new_with_an_empty_catalog_answers_404() {
    let layer = CostRouterLayer::new(Catalog::empty());
    assert!(layer.handle().names().is_empty());
    let layer = CostRouterLayer::new(Catalog::default());
    assert_eq!(layer.handle().names().len(), 8);
    let _ = BTreeMap::<String, u64>::new();
}

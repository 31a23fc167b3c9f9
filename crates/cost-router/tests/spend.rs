#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Exact spend: cost headers on JSON, route/model headers on streams, cached-token pricing, the
//! served target's price after a fallback, settle rules, hot reload.

mod common;

use std::time::Duration;

use common::*;
use http::Response;
use rampart_core::{Body, BoxError, RouteDecision, Target};
use rampart_cost_router::{BudgetLimit, CostRouterConfig, CostRouterLayer, ModelConfig};
use rampart_mock::Fault;
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn json_response_carries_exact_cost_model_and_route() {
    let (layer, mock, svc) = setup(CostRouterConfig::default());
    let resp = call(
        &svc,
        req_for(Some("acme"), &body("gpt-4.1", "hi", Some(10))),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["x-rampart-route"], "explicit");
    assert_eq!(h["x-rampart-model"], "gpt-4.1");
    // Mock usage: prompt = ceil(2/4) + 4 + 3 = 8, completion = 10.
    // 8 × 2.00 + 10 × 8.00 = 96 micro-USD.
    assert_eq!(mock_prompt_tokens("hi"), 8);
    assert_eq!(h["x-rampart-cost-usd"], "0.000096");
    assert!(
        resp.extensions()
            .get::<rampart_core::ResponseFacts>()
            .is_some()
    );
    let v = json(resp).await;
    assert_eq!(v["usage"]["completion_tokens"], 10);
    let handle = layer.handle();
    assert_eq!(handle.spend("acme"), 96);
    assert_eq!(handle.spend_by_model()["gpt-4.1"], 96);
    assert_eq!(handle.spend_by_tenant()["acme"], 96);
    assert_eq!(mock.calls("gpt-4.1"), 1);
}

#[tokio::test]
async fn auto_rewrites_the_model_and_sets_target_and_decision() {
    let (layer, mock, svc) = setup(CostRouterConfig::default());
    let content = "What is the capital of France?";
    let resp = call(&svc, req_for(None, &body("auto", content, Some(20))))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-rampart-route"], "auto:simple:cheapest");
    assert_eq!(resp.headers()["x-rampart-model"], "deepseek-v3.2");
    // prompt = ceil(30/4) + 4 + 3 = 15; 15 × 0.28 + 20 × 0.42 = 4.2 + 8.4 = 12.6 → 13 (rounded up).
    assert_eq!(mock_prompt_tokens(content), 15);
    assert_eq!(resp.headers()["x-rampart-cost-usd"], "0.000013");
    assert_eq!(mock.calls("deepseek-v3.2"), 1);
    assert_eq!(
        mock.last_request().unwrap().json().unwrap()["model"],
        "deepseek-v3.2"
    );
    // No tenant: the anonymous tenant.
    assert_eq!(layer.handle().spend("default"), 13);

    // What the inner service sees.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s2 = seen.clone();
    let inner = tower::service_fn(move |req: http::Request<Body>| {
        let s2 = s2.clone();
        async move {
            let chat = rampart_core::chat_request(&req).unwrap().model().to_owned();
            let target = req.extensions().get::<Target>().cloned().unwrap();
            let decision = req.extensions().get::<RouteDecision>().cloned().unwrap();
            *s2.lock().unwrap() = Some((chat, target, decision));
            Ok::<_, BoxError>(completion(
                Target::new("deepseek", "deepseek-v3.2"),
                1,
                1,
                0,
            ))
        }
    });
    layer
        .layer(inner)
        .oneshot(req_for(None, &body("auto", content, None)))
        .await
        .unwrap();
    let (model, target, decision) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(model, "deepseek-v3.2");
    assert_eq!(target, Target::new("deepseek", "deepseek-v3.2"));
    assert_eq!(decision.primary().unwrap().target, target);
    assert_eq!(&*decision.route, "auto:simple:cheapest");
}

fn fixed(
    target: Target,
    prompt: u64,
    out: u64,
    cached: u64,
) -> impl tower::Service<
    http::Request<Body>,
    Response = Response<Body>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_req: http::Request<Body>| {
        let t = target.clone();
        async move { Ok::<_, BoxError>(completion(t, prompt, out, cached)) }
    })
}

#[tokio::test]
async fn cached_tokens_are_priced_at_the_cached_price() {
    let layer = CostRouterLayer::from_config(CostRouterConfig::default()).unwrap();
    let svc = layer.layer(fixed(Target::new("openai", "gpt-4.1"), 1000, 500, 400));
    let resp = svc
        .oneshot(req_for(Some("t"), &body("gpt-4.1", "hi", None)))
        .await
        .unwrap();
    // 600 × 2.00 + 400 × 0.50 + 500 × 8.00 = 1200 + 200 + 4000 = 5400 micro-USD.
    assert_eq!(resp.headers()["x-rampart-cost-usd"], "0.005400");
    // deepseek: 600 × 0.28 + 400 × 0.028 + 500 × 0.42 = 168 + 11.2 + 210 = 389.2 → 390.
    let svc = layer.layer(fixed(
        Target::new("deepseek", "deepseek-v3.2"),
        1000,
        500,
        400,
    ));
    let resp = svc
        .oneshot(req_for(Some("t"), &body("deepseek-v3.2", "hi", None)))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-rampart-cost-usd"], "0.000390");
    assert_eq!(layer.handle().spend("t"), 5790);
}

#[tokio::test]
async fn the_served_target_is_priced_after_a_fallback() {
    let layer = CostRouterLayer::from_config(CostRouterConfig::default()).unwrap();
    // Asked for gpt-4.1; a fallback below served claude.
    let svc = layer.layer(fixed(
        Target::new("anthropic", "claude-sonnet-4.5"),
        1000,
        500,
        400,
    ));
    let resp = svc
        .oneshot(req_for(Some("t"), &body("gpt-4.1", "hi", None)))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-rampart-model"], "claude-sonnet-4.5");
    // 600 × 3.00 + 400 × 0.30 + 500 × 15.00 = 1800 + 120 + 7500 = 9420.
    assert_eq!(resp.headers()["x-rampart-cost-usd"], "0.009420");
    let by_model = layer.handle().spend_by_model();
    assert_eq!(by_model.get("claude-sonnet-4.5"), Some(&9420));
    assert_eq!(by_model.get("gpt-4.1"), None);
}

#[tokio::test]
async fn streams_carry_route_and_model_and_settle_at_the_end() {
    let (layer, _mock, svc) = setup(CostRouterConfig::default());
    let resp = call(&svc, req_for(Some("s"), &stream_body("gpt-4.1", "hi", 10)))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-rampart-route"], "explicit");
    assert_eq!(resp.headers()["x-rampart-model"], "gpt-4.1");
    assert!(resp.headers().get("x-rampart-cost-usd").is_none());
    assert_eq!(layer.handle().spend("s"), 0, "not settled before the end");
    let text = String::from_utf8(bytes(resp).await.to_vec()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(
        !text.contains("\"usage\":{"),
        "usage chunk hidden from a client that did not ask"
    );
    assert_eq!(layer.handle().spend("s"), 96);
}

#[tokio::test]
async fn routed_streams_too() {
    let (layer, mock, svc) = setup(CostRouterConfig::default());
    let resp = call(
        &svc,
        req_for(
            Some("s"),
            &stream_body("auto", "Write a poem about rain", 5),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["x-rampart-route"], "auto:medium:cheapest");
    assert_eq!(resp.headers()["x-rampart-model"], "gemini-2.5-flash");
    bytes(resp).await;
    assert_eq!(mock.calls("gemini-2.5-flash"), 1);
    // prompt = ceil(23/4) + 7 = 13; 13 × 0.30 + 5 × 2.50 = 3.9 + 12.5 = 16.4 → 17.
    assert_eq!(layer.handle().spend("s"), 17);
}

#[tokio::test]
async fn upstream_errors_cost_nothing_and_release_the_reservation() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(1.0));
    let (layer, mock, svc) = setup(cfg);
    mock.set_fault(
        Some("gpt-4.1"),
        Fault::status_code(http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    let resp = call(&svc, req_for(Some("e"), &body("gpt-4.1", "hi", Some(10))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-rampart-cost-usd"], "0.000000");
    assert_eq!(resp.headers()["x-rampart-route"], "explicit");
    bytes(resp).await;
    let b = layer.handle().budget("e").await.unwrap();
    assert_eq!((b.day_spent, b.day_reserved), (0, 0));
    assert_eq!(layer.handle().spend("e"), 0);
}

#[tokio::test]
async fn inner_errors_release_the_reservation() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(1.0));
    let layer = CostRouterLayer::from_config(cfg).unwrap();
    let failing = tower::service_fn(|_req: http::Request<Body>| async {
        Err::<Response<Body>, BoxError>("connect failed".into())
    });
    let e = layer
        .layer(failing)
        .oneshot(req_for(Some("e"), &body("gpt-4.1", "hi", None)))
        .await;
    assert!(e.is_err());
    let b = layer.handle().budget("e").await.unwrap();
    assert_eq!((b.day_spent, b.day_reserved), (0, 0));
}

#[tokio::test]
async fn a_stream_cut_before_usage_keeps_the_reservation_as_spent() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(1.0));
    let (layer, mock, svc) = setup(cfg);
    mock.set_fault(Some("gpt-4.1"), Fault::cut_after(2));
    let b = stream_body("gpt-4.1", "hi", 10);
    // Estimate: prompt estimate × 2.00 + 10 × 8.00.
    let est = parse(&b).estimate_prompt_tokens() * 2 + 80;
    let resp = call(&svc, req_for(Some("c"), &b)).await.unwrap();
    let _ = resp.into_body().collect_limited(1 << 20).await;
    let state = layer.handle().budget("c").await.unwrap();
    assert_eq!((state.day_spent, state.day_reserved), (est, 0));
    assert_eq!(layer.handle().spend("c"), est);
}

#[tokio::test]
async fn a_dropped_response_keeps_the_reservation_as_spent() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(1.0));
    let (layer, _mock, svc) = setup(cfg);
    let b = stream_body("gpt-4.1", "hi", 10);
    let est = parse(&b).estimate_prompt_tokens() * 2 + 80;
    let resp = call(&svc, req_for(Some("d"), &b)).await.unwrap();
    let state = layer.handle().budget("d").await.unwrap();
    assert_eq!(state.day_reserved, est, "reserved while in flight");
    drop(resp); // the client went away
    let state = layer.handle().budget("d").await.unwrap();
    assert_eq!((state.day_spent, state.day_reserved), (est, 0));
}

#[tokio::test]
async fn a_client_gone_before_any_response_releases_the_reservation() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(1.0));
    let layer = CostRouterLayer::from_config(cfg).unwrap();
    // An upstream (or a fallback loop) that has not answered yet.
    let hanging = tower::service_fn(|_req: http::Request<Body>| async {
        std::future::pending::<Result<Response<Body>, BoxError>>().await
    });
    let svc = layer.layer(hanging);
    let call = tokio::spawn(svc.oneshot(req_for(Some("g"), &body("gpt-4.1", "hi", Some(10)))));
    // Wait until the reservation is in place, then the client leaves.
    let mut reserved = 0;
    for _ in 0..100 {
        reserved = layer.handle().budget("g").await.unwrap().day_reserved;
        if reserved > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(reserved > 0, "reserved while in flight");
    call.abort();
    let _ = call.await;
    let b = layer.handle().budget("g").await.unwrap();
    assert_eq!(
        (b.day_spent, b.day_reserved),
        (0, 0),
        "nothing served, nothing spent"
    );
}

#[tokio::test]
async fn hot_reload_applies_valid_and_keeps_old_on_error() {
    let (layer, _mock, svc) = setup(CostRouterConfig::default());
    let handle = layer.handle();
    let r = || req_for(Some("r"), &body("gpt-4.1", "hi", Some(10)));
    assert_eq!(
        call(&svc, r()).await.unwrap().headers()["x-rampart-cost-usd"],
        "0.000096"
    );

    // Valid: gpt-4.1 at half price, a new route.
    let mut cfg = CostRouterConfig::default();
    cfg.models.insert(
        "gpt-4.1".into(),
        ModelConfig {
            price: Some(rampart_core::Price {
                input: 1.0,
                cached_input: None,
                output: 4.0,
            }),
            ..ModelConfig::default()
        },
    );
    cfg.routes.insert(
        "premium".into(),
        rampart_cost_router::RouteConfig {
            models: vec!["claude-sonnet-4.5".into()],
            ..Default::default()
        },
    );
    handle.reload(cfg.clone()).unwrap();
    assert_eq!(
        call(&svc, r()).await.unwrap().headers()["x-rampart-cost-usd"],
        "0.000048"
    );
    let resp = call(&svc, req_for(Some("r"), &body("premium", "hi", Some(1))))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-rampart-model"], "claude-sonnet-4.5");
    assert_eq!(handle.config(), cfg);

    // Invalid: refused, naming the key; the running config stays.
    let mut bad = cfg.clone();
    bad.fallbacks.insert("gpt-4.1".into(), vec!["gpt-5".into()]);
    let err = handle.reload(bad).unwrap_err();
    assert_eq!(err.key, "fallbacks.\"gpt-4.1\"[0]");
    assert!(err.to_string().contains("gpt-5"));
    assert_eq!(
        call(&svc, r()).await.unwrap().headers()["x-rampart-cost-usd"],
        "0.000048"
    );
    assert!(handle.routes().contains(&"premium".to_owned()));
    // Spend totals survive reloads.
    assert_eq!(
        handle.spend("r"),
        96 + 48 + 48 + handle.spend_by_model()["claude-sonnet-4.5"]
    );
}

#[tokio::test(start_paused = true)]
async fn observed_ttfb_feeds_the_latency_strategy() {
    use rampart_mock::{Latency, MockConfig, MockProvider};
    use rampart_upstream::{Timeouts, Upstream};
    let mut cfg = CostRouterConfig::default();
    cfg.auto.strategy = rampart_cost_router::Strategy::LowestLatency;
    let layer = CostRouterLayer::from_config(cfg).unwrap();
    let fast = MockProvider::new(MockConfig {
        latency: Latency::fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    });
    let slow = MockProvider::new(MockConfig {
        latency: Latency::fixed(Duration::from_millis(300)),
        ..MockConfig::default()
    });
    let up = Upstream::builder()
        .service_provider("openai", slow.service(), Timeouts::default())
        .service_provider("anthropic", fast.service(), Timeouts::default())
        .model("gpt-4.1", "openai", None)
        .model("claude-sonnet-4.5", "anthropic", None)
        .build()
        .unwrap();
    let svc = tower::util::BoxCloneSyncService::new(layer.layer(up));
    let complex = "Prove step by step that 2 is prime.";
    // Nothing observed: cheapest first (gpt-4.1), then claude gets measured, then the faster wins.
    let mut served = Vec::new();
    for _ in 0..4 {
        let resp = call(&svc, req_for(None, &body("auto", complex, Some(1))))
            .await
            .unwrap();
        served.push(
            resp.headers()["x-rampart-model"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let _ = bytes(resp).await;
        // Measure the other one too (explicit requests feed the EWMA as well).
        let other = if served.len() == 1 {
            "claude-sonnet-4.5"
        } else {
            "gpt-4.1"
        };
        let resp = call(&svc, req_for(None, &body(other, complex, Some(1))))
            .await
            .unwrap();
        let _ = bytes(resp).await;
    }
    assert_eq!(served[0], "gpt-4.1");
    assert_eq!(
        served[1..],
        [
            "claude-sonnet-4.5",
            "claude-sonnet-4.5",
            "claude-sonnet-4.5"
        ]
    );
    let h = layer.handle();
    let claude = h
        .latency(&Target::new("anthropic", "claude-sonnet-4.5"))
        .unwrap();
    assert!(claude < Duration::from_millis(50), "{claude:?}");
}

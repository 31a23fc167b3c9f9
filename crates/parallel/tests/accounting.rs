//! Budgets and spend across parallel calls, with the real cost router and simulated providers:
//! a fan-out above the router charges every call; a hedge below it charges the answer served;
//! a call cancelled because another won is charged its prompt estimate at its input price.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use rampart_core::pricing::format_usd;
use rampart_core::{Body, BoxError, ChatRequest, Tenant};
use rampart_cost_router::{CostRouterConfig, CostRouterHandle, CostRouterLayer};
use rampart_mock::{Latency, MockConfig, MockProvider};
use rampart_parallel::{FanOutConfig, FanOutLayer, HedgeLayer, HedgePolicy};
use rampart_upstream::{Timeouts, Upstream};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

type Svc = BoxCloneSyncService<Request<Body>, http::Response<Body>, BoxError>;

const PROVIDERS: [&str; 4] = ["deepseek", "gemini", "openai", "anthropic"];

/// The router over four simulated providers (openai's with `openai_latency`).
fn routed(
    router_toml: &str,
    openai_latency: Duration,
) -> (CostRouterLayer, Upstream, MockProvider) {
    routed_with(router_toml, Latency::fixed(openai_latency))
}

/// The router over four simulated providers (openai's with `openai_latency`).
fn routed_with(
    router_toml: &str,
    openai_latency: Latency,
) -> (CostRouterLayer, Upstream, MockProvider) {
    let config: CostRouterConfig = toml::from_str(router_toml).unwrap();
    let router = CostRouterLayer::from_config(config).unwrap();
    let fast = MockProvider::new(MockConfig::default());
    let slow = MockProvider::new(MockConfig {
        latency: openai_latency,
        ..MockConfig::default()
    });
    let mut upstream = Upstream::builder();
    for m in router.handle().catalog().models() {
        upstream = upstream.model(m.name(), m.provider(), None);
    }
    for p in PROVIDERS {
        let mock = if p == "openai" { &slow } else { &fast };
        upstream = upstream.service_provider(p, mock.service(), Timeouts::default());
    }
    (router, upstream.build().unwrap(), slow)
}

fn chat(body: &str) -> Request<Body> {
    let chat = Arc::new(ChatRequest::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap());
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat);
    req.extensions_mut().insert(Tenant::new("acme"));
    req
}

fn cost_header(resp: &http::Response<Body>) -> String {
    resp.headers()["x-rampart-cost-usd"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn model_spend(h: &CostRouterHandle, model: &str) -> u64 {
    h.spend_by_model().get(model).copied().unwrap_or(0)
}

fn duo(strategy: &str) -> FanOutLayer {
    let config: FanOutConfig = toml::from_str(&format!(
        r#"routes.duo = {{ models = ["gpt-4.1", "claude-sonnet-4.5"], strategy = "{strategy}" }}"#
    ))
    .unwrap();
    FanOutLayer::from_config(config).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_fan_out_above_the_router_charges_every_call() {
    let (router, upstream, _) = routed("", Duration::ZERO);
    let handle = router.handle();
    let svc: Svc = BoxCloneSyncService::new(duo("cheapest").layer(router.layer(upstream)));
    let resp = svc
        .oneshot(chat(
            r#"{"model":"duo","max_tokens":40,"messages":[{"role":"user","content":"Compare two sorting algorithms."}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let gpt = model_spend(&handle, "gpt-4.1");
    let claude = model_spend(&handle, "claude-sonnet-4.5");
    assert!(
        gpt > 0 && claude > 0,
        "both calls are charged: {gpt} {claude}"
    );
    // The answer is the cheaper one; the cost is both.
    assert_eq!(resp.headers()["x-rampart-model"], "gpt-4.1");
    assert_eq!(cost_header(&resp), format_usd(gpt + claude));
    assert_eq!(handle.spend("acme"), gpt + claude);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["model"], "gpt-4.1");
}

#[tokio::test(start_paused = true)]
async fn each_call_reserves_its_own_budget_so_a_budget_can_refuse_one_of_them() {
    // $0.02 a day: each call reserves its estimate (~$0.008 for gpt-4.1, ~$0.015 for claude with
    // 1,000 output tokens): both together do not fit.
    let (router, upstream, _) = routed(
        r#"
        [budgets.default]
        daily_usd = 0.02
        action = "refuse"
        "#,
        Duration::from_millis(50),
    );
    let handle = router.handle();
    let svc: Svc = BoxCloneSyncService::new(duo("all").layer(router.layer(upstream)));
    let resp = svc
        .oneshot(chat(
            r#"{"model":"duo","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-rampart-models-called"],
        "gpt-4.1,claude-sonnet-4.5"
    );
    let cost = cost_header(&resp);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"].as_array().unwrap().len(), 1, "{v}");
    let calls = v["x_rampart_fanout"].as_array().unwrap();
    let refused: Vec<_> = calls.iter().filter(|c| c["status"] == 429).collect();
    assert_eq!(refused.len(), 1, "{v}");
    assert_eq!(refused[0]["error"]["code"], "budget_exceeded");
    assert_eq!(cost, format_usd(handle.spend("acme")));
    assert!(handle.spend("acme") > 0);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_below_the_router_charges_the_answer_served() {
    // gpt-4.1 (openai) takes 10 s; its fallback claude answers at once.
    let (router, upstream, openai) = routed(
        r#"
        [fallbacks]
        "gpt-4.1" = ["claude-sonnet-4.5"]
        [budgets.default]
        daily_usd = 10.0
        "#,
        Duration::from_secs(10),
    );
    let handle = router.handle();
    let hedge = HedgeLayer::with_policy(HedgePolicy {
        delay: Duration::from_millis(100),
        ..HedgePolicy::default()
    })
    .unwrap();
    let svc: Svc = BoxCloneSyncService::new(router.layer(hedge.layer(upstream)));
    let t0 = tokio::time::Instant::now();
    let resp = svc.oneshot(chat(HI)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    assert_eq!(resp.headers()["x-rampart-model"], "claude-sonnet-4.5");
    assert_eq!(
        resp.headers()["x-rampart-models-called"],
        "gpt-4.1,claude-sonnet-4.5"
    );
    let claude = model_spend(&handle, "claude-sonnet-4.5");
    assert!(claude > 0);
    // The cancelled primary reported no usage: it is charged its prompt estimate at gpt-4.1's
    // input price, in the spend and in the cost header.
    let loser = prompt_charge(&handle, "gpt-4.1", HI);
    assert!(loser > 0);
    assert_eq!(model_spend(&handle, "gpt-4.1"), loser);
    assert_eq!(cost_header(&resp), format_usd(claude + loser));
    assert_eq!(handle.spend("acme"), claude + loser);
    // The budget (one reservation for the request) is settled to the same sum, after the fact.
    let budget = handle.budget("acme").await.unwrap();
    assert_eq!((budget.day_spent, budget.day_reserved), (claude + loser, 0));
    assert_eq!(openai.calls("gpt-4.1"), 1);
}

const HI: &str =
    r#"{"model":"gpt-4.1","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#;

/// What a cancelled call of `body` to `model` is charged: the prompt estimate at the input price
/// (micro-USD per token), rounded up.
fn prompt_charge(h: &CostRouterHandle, model: &str, body: &str) -> u64 {
    let chat = ChatRequest::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap();
    let input = h.catalog().get(model).unwrap().price.input;
    (chat.estimate_prompt_tokens() as f64 * input).ceil() as u64
}

#[tokio::test(start_paused = true)]
async fn a_fastest_fan_out_charges_the_cancelled_call_its_prompt() {
    // gpt-4.1 (openai) takes 10 s; claude answers at once and wins.
    let (router, upstream, openai) = routed(
        r#"
        [budgets.default]
        daily_usd = 10.0
        "#,
        Duration::from_secs(10),
    );
    let handle = router.handle();
    let svc: Svc = BoxCloneSyncService::new(duo("fastest").layer(router.layer(upstream)));
    let body = r#"{"model":"duo","max_tokens":20,"messages":[{"role":"user","content":"Name three rivers."}]}"#;
    let resp = svc.oneshot(chat(body)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-rampart-model"], "claude-sonnet-4.5");
    let claude = model_spend(&handle, "claude-sonnet-4.5");
    assert!(claude > 0);
    let loser = prompt_charge(&handle, "gpt-4.1", body);
    assert!(loser > 0);
    assert_eq!(model_spend(&handle, "gpt-4.1"), loser);
    assert_eq!(cost_header(&resp), format_usd(claude + loser));
    assert_eq!(handle.spend("acme"), claude + loser);
    // Its reservation (its own, above the fan-out's other call) is settled to the prompt charge.
    let budget = handle.budget("acme").await.unwrap();
    assert_eq!((budget.day_spent, budget.day_reserved), (claude + loser, 0));
    assert_eq!(openai.calls("gpt-4.1"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_loser_whose_answer_had_begun_is_charged_its_prompt_not_its_estimate() {
    // gpt-4.1's head comes at once but its first token after 10 s: the router has served it
    // (its whole estimate would be kept) when claude's first chunk wins and the call is dropped.
    let (router, upstream, openai) = routed_with(
        "",
        Latency {
            first_token: Duration::from_secs(10),
            ..Latency::ZERO
        },
    );
    let handle = router.handle();
    let svc: Svc = BoxCloneSyncService::new(duo("fastest").layer(router.layer(upstream)));
    let body = r#"{"model":"duo","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"Name three rivers."}]}"#;
    let resp = svc.oneshot(chat(body)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-rampart-model"], "claude-sonnet-4.5");
    resp.into_body().collect().await.unwrap();
    let loser = prompt_charge(&handle, "gpt-4.1", body);
    assert_eq!(model_spend(&handle, "gpt-4.1"), loser);
    let claude = model_spend(&handle, "claude-sonnet-4.5");
    assert!(claude > 0);
    assert_eq!(handle.spend("acme"), claude + loser);
    assert_eq!(openai.calls("gpt-4.1"), 1);
}

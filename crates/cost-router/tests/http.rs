#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! HTTP level: core `Edge` → auth → CostRouterLayer → Upstream → simulated provider, asserting
//! status, headers and error JSON.

mod common;

use common::*;
use http::{Request, StatusCode};
use rampart_core::{AuthLayer, Body, Edge, EdgeConfig, Tenant, VirtualKeys};
use rampart_cost_router::{BudgetLimit, CostRouterConfig, CostRouterLayer};
use rampart_mock::{MockConfig, MockProvider};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

type Gateway = Edge<BoxCloneSyncService<Req, Resp, rampart_core::BoxError>>;

fn gateway(cfg: CostRouterConfig) -> (Gateway, CostRouterLayer, MockProvider) {
    let layer = CostRouterLayer::from_config(cfg).unwrap();
    let mock = MockProvider::new(MockConfig::default());
    let keys = VirtualKeys::from_digests([
        (VirtualKeys::digest("sk-acme").as_str(), Tenant::new("acme")),
        (VirtualKeys::digest("sk-beta").as_str(), Tenant::new("beta")),
    ])
    .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(keys))
        .layer(layer.clone())
        .service(upstream(&mock));
    (
        Edge::new(BoxCloneSyncService::new(svc), EdgeConfig::default()),
        layer,
        mock,
    )
}

async fn post(gw: &Gateway, key: &str, body: String, hints: &[(&str, &str)]) -> Resp {
    let mut b = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json");
    for (k, v) in hints {
        b = b.header(*k, *v);
    }
    gw.clone()
        .oneshot(b.body(Body::from(body)).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn json_answer_has_cost_model_and_route_headers() {
    let (gw, layer, _mock) = gateway(CostRouterConfig::default());
    let resp = post(
        &gw,
        "sk-acme",
        body("auto", "Write a haiku about tea", Some(12)),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["x-rampart-route"], "auto:medium:cheapest");
    assert_eq!(h["x-rampart-model"], "gemini-2.5-flash");
    assert_eq!(h["x-rampart-provider"], "gemini");
    // prompt = ceil(23/4) + 7 = 13; 13 × 0.30 + 12 × 2.50 = 3.9 + 30 = 33.9 → 34.
    assert_eq!(h["x-rampart-cost-usd"], "0.000034");
    let v = json(resp).await;
    assert_eq!(v["usage"]["prompt_tokens"], 13);
    assert_eq!(v["model"], "gemini-2.5-flash");
    assert_eq!(layer.handle().spend("acme"), 34);
}

#[tokio::test]
async fn streamed_answer_has_route_and_model_headers() {
    let (gw, layer, _mock) = gateway(CostRouterConfig::default());
    let resp = post(
        &gw,
        "sk-beta",
        stream_body("claude-sonnet-4.5", "hello", 4),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-rampart-route"], "explicit");
    assert_eq!(resp.headers()["x-rampart-model"], "claude-sonnet-4.5");
    assert!(resp.headers().get("x-rampart-cost-usd").is_none());
    let text = String::from_utf8(bytes(resp).await.to_vec()).unwrap();
    assert!(text.contains("data: [DONE]"));
    // prompt = ceil(5/4) + 7 = 9; 9 × 3 + 4 × 15 = 87.
    assert_eq!(layer.handle().spend("beta"), 87);
}

#[tokio::test]
async fn unknown_model_is_a_404_openai_error() {
    let (gw, _layer, mock) = gateway(CostRouterConfig::default());
    let resp = post(&gw, "sk-acme", body("gpt-7", "hi", None), &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["x-rampart-error-source"], "gateway");
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("gpt-4.1") && msg.contains("auto") && msg.contains("smart"),
        "{msg}"
    );
    assert_eq!(mock.total_calls(), 0);
}

#[tokio::test]
async fn budget_refusal_is_an_openai_error() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets
        .tenants
        .insert("acme".into(), BudgetLimit::daily(0.0001).status(402));
    let (gw, _layer, mock) = gateway(cfg);
    let resp = post(&gw, "sk-acme", body("gpt-4.1", "hi", Some(100)), &[]).await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(resp.headers()["x-rampart-error-source"], "budget");
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], "budget_exceeded");
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert!(v["error"]["message"].as_str().unwrap().contains("acme"));
    assert_eq!(mock.total_calls(), 0);
    // beta has no budget.
    let resp = post(&gw, "sk-beta", body("gpt-4.1", "hi", Some(100)), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_hints_and_unroutable_requests_are_400s() {
    let (gw, _layer, _mock) = gateway(CostRouterConfig::default());
    let resp = post(
        &gw,
        "sk-acme",
        body("auto", "hi", None),
        &[("x-rampart-priority", "asap")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], "invalid_header");
    assert_eq!(v["error"]["param"], "x-rampart-priority");

    let resp = post(
        &gw,
        "sk-acme",
        body("auto", "hi", None),
        &[("x-rampart-max-price", "0.01")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], "no_model_within_max_price");

    let resp = post(&gw, "sk-acme", body("auto", "hi", Some(5_000_000)), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(resp).await["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn hints_change_the_served_model() {
    let (gw, _layer, _mock) = gateway(CostRouterConfig::default());
    let resp = post(
        &gw,
        "sk-acme",
        body("auto", "hi", Some(3)),
        &[("x-rampart-priority", "high")],
    )
    .await;
    assert_eq!(resp.headers()["x-rampart-model"], "claude-sonnet-4.5");
    assert_eq!(resp.headers()["x-rampart-route"], "auto:complex:strongest");
    let resp = post(
        &gw,
        "sk-acme",
        body("smart", "hi", Some(3)),
        &[("x-rampart-max-price", "9")],
    )
    .await;
    assert_eq!(resp.headers()["x-rampart-model"], "gpt-4.1");
}

#[tokio::test]
async fn works_without_the_edge_adapter() {
    // A raw body (no parsed extension): the layer parses it once itself.
    let layer = CostRouterLayer::from_config(CostRouterConfig::default()).unwrap();
    let mock = MockProvider::new(MockConfig::default());
    let svc = stack(&layer, &mock);
    let req = Request::post("/v1/chat/completions")
        .body(Body::from(body("auto", "hi", Some(2))))
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["x-rampart-model"], "deepseek-v3.2");
}

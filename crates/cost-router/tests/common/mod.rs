//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use rampart_core::error::find_error;
use rampart_core::tap::tap_response;
use rampart_core::{Body, BoxError, ChatRequest, Error, RouteDecision, Target, Tenant};
use rampart_cost_router::{CostRouterConfig, CostRouterHandle, CostRouterLayer};
use rampart_mock::{MockConfig, MockProvider};
use rampart_upstream::{Timeouts, Upstream};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

pub type Req = Request<Body>;
pub type Resp = Response<Body>;
pub type Svc = BoxCloneSyncService<Req, Resp, BoxError>;

/// The built-in catalog's providers.
pub const PROVIDERS: [&str; 4] = ["deepseek", "gemini", "openai", "anthropic"];
/// The built-in catalog's models, in the order of `PROVIDERS`.
pub const MODELS: [&str; 4] = [
    "deepseek-v3.2",
    "gemini-2.5-flash",
    "gpt-4.1",
    "claude-sonnet-4.5",
];

/// A chat body for `model` with one user message and `max_tokens` when given.
pub fn body(model: &str, content: &str, max_tokens: Option<u64>) -> String {
    let mut v = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
    });
    if let Some(m) = max_tokens {
        v["max_tokens"] = m.into();
    }
    v.to_string()
}

/// A streamed chat body.
pub fn stream_body(model: &str, content: &str, max_tokens: u64) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": true,
    })
    .to_string()
}

pub fn parse(body: &str) -> Arc<ChatRequest> {
    Arc::new(ChatRequest::parse(Bytes::from(body.to_owned())).unwrap())
}

/// A parsed request (as the edge adapter hands it on) for `tenant`.
pub fn req_for(tenant: Option<&str>, body: &str) -> Req {
    let chat = parse(body);
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat);
    if let Some(t) = tenant {
        req.extensions_mut().insert(Tenant::new(t));
    }
    req
}

/// Headers with the given pairs.
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// The decision for `body` with `hints` headers.
pub async fn decide(
    handle: &CostRouterHandle,
    body: &str,
    hints: &[(&str, &str)],
) -> Result<RouteDecision, Error> {
    handle.decide(&parse(body), &headers(hints)).await
}

/// The models of a decision, in order.
pub fn models(d: &RouteDecision) -> Vec<String> {
    d.candidates
        .iter()
        .map(|c| c.target.model.to_string())
        .collect()
}

/// An upstream serving the built-in catalog's four models from one simulated provider registered
/// under each provider name.
pub fn upstream(mock: &MockProvider) -> Upstream {
    let mut b = Upstream::builder();
    for p in PROVIDERS {
        b = b.service_provider(p, mock.service(), Timeouts::default());
    }
    for (m, p) in MODELS.iter().zip(PROVIDERS) {
        b = b.model(m, p, None);
    }
    b.build().unwrap()
}

/// The router over upstream + mock.
pub fn stack(layer: &CostRouterLayer, mock: &MockProvider) -> Svc {
    BoxCloneSyncService::new(layer.layer(upstream(mock)))
}

/// A layer from config and a fresh mock, with the stack.
pub fn setup(config: CostRouterConfig) -> (CostRouterLayer, MockProvider, Svc) {
    let layer = CostRouterLayer::from_config(config).unwrap();
    let mock = MockProvider::new(MockConfig::default());
    let svc = stack(&layer, &mock);
    (layer, mock, svc)
}

pub async fn call(svc: &Svc, req: Req) -> Result<Resp, BoxError> {
    svc.clone().oneshot(req).await
}

pub async fn bytes(resp: Resp) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

pub async fn json(resp: Resp) -> serde_json::Value {
    serde_json::from_slice(&bytes(resp).await).unwrap()
}

/// The typed gateway error in a `BoxError`.
pub fn gateway_error(e: &BoxError) -> &Error {
    find_error(e).unwrap_or_else(|| panic!("not a gateway error: {e}"))
}

/// The mock's prompt tokens for a single user message of `content`.
pub fn mock_prompt_tokens(content: &str) -> u64 {
    (content.chars().count() as u64).div_ceil(4) + 4 + 3
}

/// A JSON completion with this usage, tapped as served by `target`.
pub fn completion(target: Target, prompt: u64, completion: u64, cached: u64) -> Resp {
    let b = serde_json::json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": &*target.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}
        }
    })
    .to_string();
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(b))
        .unwrap();
    let model = target.model.clone();
    tap_response(resp, target, model, Instant::now(), false)
}

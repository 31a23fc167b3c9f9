//! Routing decision (explicit model, `auto`) and the full layer call against the bare inner
//! service, in the same run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use rampart_core::tap::tap_response;
use rampart_core::{Body, BoxError, ChatRequest, Target, Tenant};
use rampart_cost_router::{BudgetLimit, CostRouterConfig, CostRouterHandle, CostRouterLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

fn main() {
    divan::main();
}

/// Polls a future that completes without waiting (the router's sync fast path).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("pending"),
    }
}

fn chat(model: &str, content: &str) -> Arc<ChatRequest> {
    let body = serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": content},
        ],
        "max_tokens": 256,
    });
    Arc::new(ChatRequest::parse(Bytes::from(body.to_string())).unwrap())
}

fn handle() -> CostRouterHandle {
    CostRouterLayer::from_config(CostRouterConfig::default())
        .unwrap()
        .handle()
}

const PROMPT: &str = "Write a Python function that parses a CSV file and explain why the \
    approach handles quoted fields correctly. Keep it short, and compare it with the csv module.";

#[divan::bench]
fn decide_explicit(b: divan::Bencher) {
    let h = handle();
    let headers = HeaderMap::new();
    b.with_inputs(|| chat("gpt-4.1", PROMPT))
        .bench_local_values(|c| now(h.decide(&c, &headers)).unwrap());
}

#[divan::bench]
fn decide_auto(b: divan::Bencher) {
    let h = handle();
    let headers = HeaderMap::new();
    // A fresh request each time: `messages` is typed once per request, as in the gateway.
    b.with_inputs(|| chat("auto", PROMPT))
        .bench_local_values(|c| now(h.decide(&c, &headers)).unwrap());
}

fn completion() -> Response<Body> {
    let b = r#"{"id":"x","object":"chat.completion","created":1,"model":"gemini-2.5-flash","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"completion_tokens":20,"total_tokens":60}}"#;
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(b))
        .unwrap();
    let t = Target::new("gemini", "gemini-2.5-flash");
    let m = t.model.clone();
    tap_response(resp, t, m, Instant::now(), false)
}

fn request(model: &str) -> Request<Body> {
    let c = chat(model, PROMPT);
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(c.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(c);
    req.extensions_mut().insert(Tenant::new("bench"));
    req
}

fn inner()
-> impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|_req: Request<Body>| async { Ok::<_, BoxError>(completion()) })
}

async fn drain(resp: Response<Body>) {
    resp.into_body().collect_limited(1 << 20).await.unwrap();
}

#[divan::bench]
fn call_bare_inner(b: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let svc = inner();
    b.with_inputs(|| request("auto")).bench_local_values(|req| {
        rt.block_on(async { drain(svc.clone().oneshot(req).await.unwrap()).await })
    });
}

#[divan::bench]
fn call_layer_auto(b: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = CostRouterLayer::from_config(CostRouterConfig::default()).unwrap();
    let svc = layer.layer(inner());
    b.with_inputs(|| request("auto")).bench_local_values(|req| {
        rt.block_on(async { drain(svc.clone().oneshot(req).await.unwrap()).await })
    });
}

#[divan::bench]
fn call_layer_auto_with_budget(b: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(1e9));
    let layer = CostRouterLayer::from_config(cfg).unwrap();
    let svc = layer.layer(inner());
    b.with_inputs(|| request("auto")).bench_local_values(|req| {
        rt.block_on(async { drain(svc.clone().oneshot(req).await.unwrap()).await })
    });
}

//! The success path (the first candidate answers at once) through `FallbackLayer` vs the bare
//! inner service, in the same run, for a parsed JSON request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use rampart_core::{Body, BoxError, Candidate, ChatRequest, RouteDecision, Target};
use rampart_fallback::FallbackLayer;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

type Svc = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

const ANSWER: &str = r#"{"id":"x","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;

fn main() {
    divan::main();
}

fn inner() -> Svc {
    BoxCloneSyncService::new(tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, BoxError>(
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_bytes(Bytes::from_static(ANSWER.as_bytes())))
                .unwrap(),
        )
    }))
}

fn chat() -> Arc<ChatRequest> {
    let raw = Bytes::from_static(
        br#"{"model":"gpt-4.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"temperature":0.2}"#,
    );
    Arc::new(ChatRequest::parse(raw).unwrap())
}

fn request(chat: &Arc<ChatRequest>, decision: Option<&RouteDecision>) -> Request<Body> {
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat.clone());
    if let Some(d) = decision {
        req.extensions_mut().insert(d.clone());
    }
    req
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn run(bencher: divan::Bencher, svc: Svc, decision: Option<RouteDecision>) {
    let rt = runtime();
    let chat = chat();
    bencher
        .with_inputs(|| request(&chat, decision.as_ref()))
        .bench_local_values(|req| {
            let resp = rt.block_on(svc.clone().oneshot(req)).unwrap();
            divan::black_box(resp)
        });
}

/// The inner service alone.
#[divan::bench(sample_count = 500, sample_size = 20)]
fn bare(bencher: divan::Bencher) {
    run(bencher, inner(), None);
}

/// Through the layer, a static chain resolved by a closure.
#[divan::bench(sample_count = 500, sample_size = 20)]
fn fallback_static_chain(bencher: divan::Bencher) {
    let layer = FallbackLayer::builder()
        .chain("gpt-4.1", ["claude-sonnet-4.5", "deepseek-v3.2"])
        .resolver(|m: &str| Some(Candidate::new(Target::new("p", m)).with_context_window(128_000)))
        .build()
        .unwrap();
    run(
        bencher,
        BoxCloneSyncService::new(layer.layer(inner())),
        None,
    );
}

/// Through the layer, candidates from a router's decision.
#[divan::bench(sample_count = 500, sample_size = 20)]
fn fallback_route_decision(bencher: divan::Bencher) {
    let decision = RouteDecision::new(
        ["gpt-4.1", "claude-sonnet-4.5", "deepseek-v3.2"]
            .into_iter()
            .map(|m| Candidate::new(Target::new("p", m)))
            .collect(),
        "explicit",
    )
    .unwrap();
    let layer = FallbackLayer::default();
    run(
        bencher,
        BoxCloneSyncService::new(layer.layer(inner())),
        Some(decision),
    );
}

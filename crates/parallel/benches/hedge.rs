//! What the layers cost a request they do not hedge or fan out, against the bare inner service
//! in the same run; and a hedged request whose primary answers before the delay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use rampart_core::{Body, BoxError, Candidate, ChatRequest, RouteDecision, Target};
use rampart_parallel::{FanOutConfig, FanOutLayer, HedgeConfig, HedgeLayer, HedgePolicy};
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

fn decision() -> RouteDecision {
    RouteDecision::new(
        ["gpt-4.1", "claude-sonnet-4.5"]
            .into_iter()
            .map(|m| Candidate::new(Target::new("p", m)))
            .collect(),
        "explicit",
    )
    .unwrap()
}

fn run(bencher: divan::Bencher, svc: Svc) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let chat = chat();
    let decision = decision();
    bencher
        .with_inputs(|| {
            let mut req = Request::post("/v1/chat/completions")
                .body(Body::from_bytes(chat.raw().clone()))
                .unwrap();
            req.extensions_mut().insert(chat.clone());
            req.extensions_mut().insert(decision.clone());
            req
        })
        .bench_local_values(|req| {
            let resp = rt.block_on(svc.clone().oneshot(req)).unwrap();
            divan::black_box(resp)
        });
}

/// The inner service alone.
#[divan::bench(sample_count = 500, sample_size = 20)]
fn bare(bencher: divan::Bencher) {
    run(bencher, inner());
}

/// HedgeLayer with policies for other models: looked up, not hedged.
#[divan::bench(sample_count = 500, sample_size = 20)]
fn hedge_no_policy_match(bencher: divan::Bencher) {
    let config: HedgeConfig = toml::from_str(
        r#"
        models."deepseek-v3.2" = { delay = "1s" }
        routes.auto = { percentile = 95.0 }
        "#,
    )
    .unwrap();
    let layer = HedgeLayer::from_config(config).unwrap();
    run(bencher, BoxCloneSyncService::new(layer.layer(inner())));
}

/// HedgeLayer with a policy whose primary answers before the delay (the hedged path, no hedge).
#[divan::bench(sample_count = 500, sample_size = 20)]
fn hedge_primary_first(bencher: divan::Bencher) {
    let layer = HedgeLayer::with_policy(HedgePolicy {
        delay: Duration::from_secs(1),
        ..HedgePolicy::default()
    })
    .unwrap();
    run(bencher, BoxCloneSyncService::new(layer.layer(inner())));
}

/// FanOutLayer with a route and the header enabled, on a request for a plain model.
#[divan::bench(sample_count = 500, sample_size = 20)]
fn fanout_pass_through(bencher: divan::Bencher) {
    let config: FanOutConfig = toml::from_str(
        r#"
        routes.panel = { models = ["gpt-4.1", "claude-sonnet-4.5"], strategy = "all" }
        header = { enabled = true }
        "#,
    )
    .unwrap();
    let layer = FanOutLayer::from_config(config).unwrap();
    run(bencher, BoxCloneSyncService::new(layer.layer(inner())));
}

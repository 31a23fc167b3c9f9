//! The whole gateway in process: nanoseconds per request through `full_gateway`'s router (every
//! layer, metrics observer included) against the simulated provider as an in-process service
//! with zero latency, next to the simulated provider alone in the same run. The difference is
//! the gateway's own cost per request, without sockets.
//!
//! `cargo bench -p full_gateway --bench stack`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use rampart_mock::{MockConfig, MockProvider};
use tower::ServiceExt;

fn main() {
    divan::main();
}

const JSON: &str = r#"{"model":"gpt-4.1","max_tokens":16,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise the benefits of a gateway in front of LLM providers."}]}"#;
const CACHED: &str = r#"{"model":"gpt-4.1","max_tokens":16,"temperature":0,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise the benefits of a gateway in front of LLM providers."}]}"#;
const STREAM: &str = r#"{"model":"gpt-4.1","max_tokens":20,"stream":true,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise the benefits of a gateway in front of LLM providers."}]}"#;

/// The full stack in memory, as `benches/load.sh` runs it: tenant limits, cache, router,
/// fallback, per-target limits, breaker; limits high enough never to refuse.
const FULL: &str = r#"
[rate_limits.tenant]
limits = { requests_per_minute = 100000000, tokens_per_minute = 100000000000, concurrency = 100000 }

[cache]
ttl = "10m"

[[providers]]
name = "sim"
kind = "mock"

[[models]]
name = "gpt-4.1"
provider = "sim"
price = { input = 2.00, cached_input = 0.50, output = 8.00 }
context_window = 128000
tier = "complex"
limits = { requests_per_minute = 100000000, tokens_per_minute = 100000000000 }
"#;

/// Only what every request needs: edge, auth, router, fallback, breaker, upstream (no limits,
/// no cache).
const MINIMAL: &str = r#"
[[providers]]
name = "sim"
kind = "mock"

[[models]]
name = "gpt-4.1"
provider = "sim"
price = { input = 2.00, cached_input = 0.50, output = 8.00 }
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn gateway(rt: &tokio::runtime::Runtime, toml: &str) -> Router {
    let _guard = rt.enter();
    let config = full_gateway::GatewayConfig::parse(toml, "bench").unwrap();
    full_gateway::build(config).unwrap().router
}

async fn through_router(router: &Router, body: &'static str) -> usize {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.into_body().collect().await.unwrap().to_bytes().len()
}

fn bench_router(bencher: divan::Bencher, toml: &str, body: &'static str) {
    let rt = runtime();
    let router = gateway(&rt, toml);
    // Warm: fills the cache for the cached case, resolves metric handles.
    rt.block_on(through_router(&router, body));
    bencher.bench_local(|| rt.block_on(through_router(&router, body)));
}

fn bench_mock(bencher: divan::Bencher, body: &'static str) {
    let rt = runtime();
    let mock = MockProvider::new(MockConfig::default());
    let svc = mock.service();
    bencher.bench_local(|| {
        rt.block_on(async {
            let req = Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(rampart_core::Body::from_bytes(Bytes::from_static(
                    body.as_bytes(),
                )))
                .unwrap();
            let resp = svc.clone().oneshot(req).await.unwrap();
            resp.into_body().collect().await.unwrap().to_bytes().len()
        })
    });
}

/// The simulated provider alone (the baseline to subtract), JSON answer.
#[divan::bench(sample_count = 200, sample_size = 20)]
fn json_mock_alone(bencher: divan::Bencher) {
    bench_mock(bencher, JSON);
}

/// Through the full stack, JSON answer (the cache decides and bypasses: no temperature).
#[divan::bench(sample_count = 200, sample_size = 20)]
fn json_full_stack(bencher: divan::Bencher) {
    bench_router(bencher, FULL, JSON);
}

/// Through edge, auth, router, fallback and breaker only.
#[divan::bench(sample_count = 200, sample_size = 20)]
fn json_minimal_stack(bencher: divan::Bencher) {
    bench_router(bencher, MINIMAL, JSON);
}

/// A cache hit through the full stack (no upstream call).
#[divan::bench(sample_count = 200, sample_size = 20)]
fn json_full_stack_cache_hit(bencher: divan::Bencher) {
    bench_router(bencher, FULL, CACHED);
}

/// The simulated provider alone, a 20-chunk stream.
#[divan::bench(sample_count = 200, sample_size = 10)]
fn stream_mock_alone(bencher: divan::Bencher) {
    bench_mock(bencher, STREAM);
}

/// A 20-chunk stream through the full stack.
#[divan::bench(sample_count = 200, sample_size = 10)]
fn stream_full_stack(bencher: divan::Bencher) {
    bench_router(bencher, FULL, STREAM);
}

//! Rate-limit decision latency, Redis against memory, in the same run: the store's `acquire`
//! for a request that passes every dimension (RPM, TPM, concurrency), then its release (queued
//! by the Redis store, written in the background); and a whole call through `RateLimitLayer`
//! around an immediate upstream, with the response's completion (settle and release).
//!
//! The Redis side talks to a throw-away `redis-server` on loopback (started by the bench).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use divan::Bencher;
use http::{Request, Response};
use rampart_core::{
    Body, BoxError, ChatRequest, Completion, CompletionReport, Outcome, ResponseFacts, Target,
    Tenant, Usage,
};
use rampart_ratelimit::{
    Decision, Limits, MemoryStore, Quota, Rate, RateLimitLayer, RateLimitStore,
};
use rampart_redis::testing::RedisServer;
use rampart_redis::{RedisConfig, RedisRateLimitConfig, RedisRateLimitStore, RedisState};
use tower::{Layer, Service};

fn main() {
    divan::main();
}

/// A runtime whose worker thread runs the Redis store's background writer while the bench
/// thread blocks on each call.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

struct Redis {
    _server: RedisServer,
    store: Arc<RedisRateLimitStore>,
}

fn redis(rt: &tokio::runtime::Runtime) -> Redis {
    rt.block_on(async {
        let server = RedisServer::start().await.unwrap();
        let state = RedisState::new(RedisConfig {
            redis_url: server.url(),
            timeout: Duration::from_secs(1),
            ..RedisConfig::default()
        })
        .unwrap();
        let store = RedisRateLimitStore::new(state, RedisRateLimitConfig::default()).unwrap();
        Redis {
            _server: server,
            store: Arc::new(store),
        }
    })
}

fn quota() -> Quota {
    Quota {
        requests: Some(Rate::new(1_000_000_000, 1_000_000_000)),
        tokens: Some(Rate::new(1_000_000_000, 1_000_000_000)),
        concurrency: Some(1_000_000),
    }
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tenant-{i}")).collect()
}

/// One decision and its release, `keys` keys in turn.
fn decide(
    bencher: Bencher,
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn RateLimitStore>,
    n: usize,
) {
    let keys = keys(n);
    let quota = quota();
    let next = AtomicUsize::new(0);
    bencher.bench_local(|| {
        let key = &keys[next.fetch_add(1, Ordering::Relaxed) % keys.len()];
        rt.block_on(async {
            match store.acquire(key, &quota, 100).await.unwrap() {
                Decision::Admitted(a) => store.release(key, a.id),
                Decision::Refused(r) => panic!("refused: {r:?}"),
            }
        });
    });
    rt.block_on(store.flush());
}

#[divan::bench(args = [1, 1000], sample_count = 100, sample_size = 20)]
fn acquire_memory(bencher: Bencher, n: usize) {
    let rt = runtime();
    decide(bencher, &rt, Arc::new(MemoryStore::new()), n);
}

#[divan::bench(args = [1, 1000], sample_count = 100, sample_size = 20)]
fn acquire_redis(bencher: Bencher, n: usize) {
    let rt = runtime();
    let r = redis(&rt);
    decide(bencher, &rt, r.store.clone(), n);
}

// ---------------------------------------------------------------------------------------------
// Through the layer

const BODY: &str = r#"{"model":"gpt-4.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Explain rate limiting in one sentence."}],"max_tokens":64}"#;

#[derive(Clone)]
struct Upstream;

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<Body>, BoxError>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<Body>) -> Self::Future {
        let mut resp = Response::new(Body::from_bytes(Bytes::from_static(b"{}")));
        resp.extensions_mut().insert(ResponseFacts {
            target: Target::new("p", "gpt-4.1"),
            upstream_model: "gpt-4.1".into(),
            ttfb: Duration::ZERO,
            stream: false,
            completion: Completion::new(),
        });
        std::future::ready(Ok(resp))
    }
}

fn through_layer(bencher: Bencher, rt: &tokio::runtime::Runtime, store: Arc<dyn RateLimitStore>) {
    let layer = RateLimitLayer::builder()
        .limits(
            Limits::none()
                .requests_per_minute(1_000_000_000)
                .tokens_per_minute(1_000_000_000)
                .concurrency(1_000_000),
        )
        .store(store.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(Upstream);
    let chat = Arc::new(ChatRequest::parse(Bytes::from_static(BODY.as_bytes())).unwrap());
    chat.estimate_prompt_tokens();
    let tenant = Tenant::new("acme");
    let mut report = CompletionReport::bare(Outcome::Complete);
    report.usage = Some(Usage {
        prompt_tokens: 20,
        completion_tokens: 30,
        total_tokens: 50,
        ..Usage::default()
    });
    bencher
        .with_inputs(|| {
            let mut req = Request::post("/v1/chat/completions")
                .body(Body::from_bytes(chat.raw().clone()))
                .unwrap();
            req.extensions_mut().insert(chat.clone());
            req.extensions_mut().insert(tenant.clone());
            req
        })
        .bench_local_values(|req| {
            let resp = rt.block_on(async {
                poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
                svc.call(req).await.unwrap()
            });
            if let Some(f) = resp.extensions().get::<ResponseFacts>() {
                f.completion.resolve(report.clone());
            }
            resp
        });
    rt.block_on(store.flush());
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn layer_memory(bencher: Bencher) {
    let rt = runtime();
    through_layer(bencher, &rt, Arc::new(MemoryStore::new()));
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn layer_redis(bencher: Bencher) {
    let rt = runtime();
    let r = redis(&rt);
    through_layer(bencher, &rt, r.store.clone());
}

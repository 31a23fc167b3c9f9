//! The admit path: a call through the layer around a trivial immediate inner service, with the
//! response settle (the completion resolving with usage), for 1 key and for 100,000 keys; and the
//! bare inner service in the same run for the difference.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
use rampart_ratelimit::{Limits, RateLimitLayer};
use tower::{Layer, Service};

fn main() {
    divan::main();
}

const BODY: &str = r#"{"model":"gpt-4.1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Explain rate limiting in one sentence."}],"max_tokens":64}"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn chat() -> Arc<ChatRequest> {
    let chat = Arc::new(ChatRequest::parse(Bytes::from_static(BODY.as_bytes())).unwrap());
    // Type `messages` once (cached), as the first layer that needs them would.
    chat.estimate_prompt_tokens();
    chat
}

fn request(chat: &Arc<ChatRequest>, tenant: &Tenant) -> Request<Body> {
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat.clone());
    req.extensions_mut().insert(tenant.clone());
    req
}

/// An upstream that answers at once, with `ResponseFacts` like the real one.
fn inner() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = BoxError,
    Future = std::future::Ready<Result<Response<Body>, BoxError>>,
> + Clone
+ Send
+ Sync
+ 'static {
    let target = Target::new("p", "gpt-4.1");
    tower::service_fn(move |_req: Request<Body>| {
        let mut resp = Response::new(Body::from_static_str());
        resp.extensions_mut().insert(ResponseFacts {
            target: target.clone(),
            upstream_model: target.model.clone(),
            ttfb: Duration::ZERO,
            stream: false,
            completion: Completion::new(),
        });
        std::future::ready(Ok(resp))
    })
}

trait FromStatic {
    fn from_static_str() -> Body;
}
impl FromStatic for Body {
    fn from_static_str() -> Body {
        Body::from_bytes(Bytes::from_static(b"{}"))
    }
}

fn report() -> CompletionReport {
    let mut r = CompletionReport::bare(Outcome::Complete);
    r.usage = Some(Usage {
        prompt_tokens: 20,
        completion_tokens: 30,
        total_tokens: 50,
        ..Usage::default()
    });
    r
}

fn run<S>(bencher: Bencher, mut svc: S, keys: usize)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    let rt = runtime();
    let chat = chat();
    let tenants: Vec<Tenant> = (0..keys)
        .map(|i| Tenant::new(format!("tenant-{i}")))
        .collect();
    let next = AtomicUsize::new(0);
    let report = report();
    bencher
        .with_inputs(|| {
            let i = next.fetch_add(1, Ordering::Relaxed) % tenants.len();
            request(&chat, &tenants[i])
        })
        .bench_local_values(|req| {
            let resp = rt.block_on(svc.call(req)).unwrap();
            // The body ends: settle and release run.
            if let Some(f) = resp.extensions().get::<ResponseFacts>() {
                f.completion.resolve(report.clone());
            }
            resp
        });
}

fn layer() -> RateLimitLayer {
    RateLimitLayer::new(
        Limits::none()
            .requests_per_minute(1_000_000_000)
            .tokens_per_minute(1_000_000_000_000)
            .concurrency(1_000_000),
    )
}

#[divan::bench(sample_count = 200, sample_size = 500)]
fn bare_inner(bencher: Bencher) {
    run(bencher, inner(), 1);
}

#[divan::bench(sample_count = 200, sample_size = 500)]
fn layer_1_key(bencher: Bencher) {
    let _rt = runtime();
    run(bencher, layer().layer(inner()), 1);
}

#[divan::bench(sample_count = 200, sample_size = 500)]
fn layer_100k_keys(bencher: Bencher) {
    run(bencher, layer().layer(inner()), 100_000);
}

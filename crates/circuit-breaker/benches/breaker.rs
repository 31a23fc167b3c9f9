//! The closed-state hot path of the breaker, against the bare inner service in the same run:
//! the layer's own cost is the difference.
//!
//! `cargo bench -p rampart-circuit-breaker`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use rampart_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use rampart_core::{Body, BoxError, Completion, CompletionReport, Outcome, ResponseFacts, Target};
use tower::{Layer, Service};

fn main() {
    divan::main();
}

/// An inner service that answers at once with facts whose completion is pending.
#[derive(Clone)]
struct Immediate;

impl Service<Request<Body>> for Immediate {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Ready<Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        let mut resp = Response::new(Body::empty());
        resp.extensions_mut().insert(ResponseFacts {
            target: Target::new("p", "m"),
            upstream_model: "m".into(),
            ttfb: Duration::from_millis(1),
            stream: false,
            completion: Completion::new(),
        });
        ready(Ok(resp))
    }
}

fn request(target: &Target) -> Request<Body> {
    let mut r = Request::new(Body::empty());
    r.extensions_mut().insert(target.clone());
    r
}

/// Calls `svc` once, polls the future to its (immediate) end, then ends the body.
fn one<S>(svc: &mut S, req: Request<Body>)
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = pin!(svc.call(req));
    let Poll::Ready(resp) = fut.poll(&mut cx) else {
        panic!("the inner service answers at once");
    };
    let resp = resp.unwrap();
    let facts = resp.extensions().get::<ResponseFacts>().unwrap();
    facts
        .completion
        .resolve(CompletionReport::bare(Outcome::Complete));
    divan::black_box(resp);
}

#[divan::bench(sample_count = 300, sample_size = 200)]
fn bare_inner(bencher: divan::Bencher) {
    let target = Target::new("openai", "gpt-4.1");
    let mut svc = Immediate;
    bencher
        .with_inputs(|| request(&target))
        .bench_local_values(|req| one(&mut svc, req));
}

#[divan::bench(sample_count = 300, sample_size = 200)]
fn closed_through_layer(bencher: divan::Bencher) {
    let target = Target::new("openai", "gpt-4.1");
    let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let mut svc = layer.layer(Immediate);
    bencher
        .with_inputs(|| request(&target))
        .bench_local_values(|req| one(&mut svc, req));
}

/// The refusal path (breaker forced open), for reference.
#[divan::bench(sample_count = 300, sample_size = 200)]
fn open_refusal(bencher: divan::Bencher) {
    let target = Target::new("openai", "gpt-4.1");
    let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    layer.handle().force_open("openai/gpt-4.1");
    let mut svc = layer.layer(Immediate);
    bencher
        .with_inputs(|| request(&target))
        .bench_local_values(|req| {
            let mut cx = Context::from_waker(Waker::noop());
            let fut = pin!(svc.call(req));
            let _ = divan::black_box(fut.poll(&mut cx));
        });
}

//! Shared test helpers: a scripted inner service, requests, a manual clock, a mock upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use rampart_circuit_breaker::CircuitBreakerConfig;
use rampart_core::{
    Body, BoxError, ChatRequest, Completion, CompletionReport, Error, ErrorKind, Outcome,
    ResponseFacts, Target,
};
use tokio::time::Instant;
use tower::Service;

/// The key of [`req`].
pub const KEY: &str = "p/m";

/// What the scripted service answers, carried as a request extension.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with facts whose completion resolves at once with `outcome`.
    Ok { ttfb: Duration, outcome: Outcome },
    /// 200 with facts whose completion is this one (resolved by the test).
    OkWith(Completion, Duration),
    /// That status, no facts (`retry-after` seconds when given).
    Status(u16, Option<u64>),
    /// That error.
    Err(ErrKind),
    /// Never answers.
    Hang,
}

/// Errors the scripted service can return.
#[derive(Clone, Copy, Debug)]
pub enum ErrKind {
    Connect,
    Timeout,
    Io,
    Refusal,
    BadRequest,
}

impl Reply {
    pub fn ok() -> Self {
        Reply::Ok {
            ttfb: Duration::from_millis(10),
            outcome: Outcome::Complete,
        }
    }
    pub fn slow(ttfb: Duration) -> Self {
        Reply::Ok {
            ttfb,
            outcome: Outcome::Complete,
        }
    }
    pub fn ended(outcome: Outcome) -> Self {
        Reply::Ok {
            ttfb: Duration::from_millis(10),
            outcome,
        }
    }
    pub fn status(s: u16) -> Self {
        Reply::Status(s, None)
    }
}

/// A request for target `p/m` that the scripted service answers with `reply`.
pub fn req(reply: Reply) -> Request<Body> {
    req_for("p", "m", reply)
}

pub fn req_for(provider: &str, model: &str, reply: Reply) -> Request<Body> {
    let mut r = Request::post("/v1/chat/completions")
        .body(Body::empty())
        .unwrap();
    r.extensions_mut().insert(Target::new(provider, model));
    r.extensions_mut().insert(reply);
    r
}

/// A parsed chat request for `model` (no `Target`).
pub fn chat(model: &str, stream: bool) -> Request<Body> {
    let raw = format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hello there"}}]}}"#
    );
    let chat = Arc::new(ChatRequest::parse(raw.clone().into()).unwrap());
    let mut r = Request::post("/v1/chat/completions")
        .body(Body::from(raw))
        .unwrap();
    r.extensions_mut().insert(chat);
    r
}

pub fn facts_response(completion: Completion, ttfb: Duration) -> Response<Body> {
    let mut resp = Response::new(Body::from("{}"));
    resp.extensions_mut().insert(ResponseFacts {
        target: Target::new("p", "m"),
        upstream_model: "m".into(),
        ttfb,
        stream: false,
        completion,
    });
    resp
}

/// A service answering each request as its [`Reply`] says and counting calls.
#[derive(Clone, Default)]
pub struct Scripted {
    pub calls: Arc<AtomicUsize>,
}

impl Scripted {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

impl Service<Request<Body>> for Scripted {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> BoxFut {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = req
            .extensions()
            .get::<Reply>()
            .cloned()
            .unwrap_or_else(Reply::ok);
        Box::pin(async move {
            match reply {
                Reply::Ok { ttfb, outcome } => {
                    let c = Completion::new();
                    let mut report = CompletionReport::bare(outcome);
                    report.first_byte = Some(ttfb);
                    c.resolve(report);
                    Ok(facts_response(c, ttfb))
                }
                Reply::OkWith(c, ttfb) => Ok(facts_response(c, ttfb)),
                Reply::Status(s, retry_after) => {
                    let mut b = Response::builder().status(StatusCode::from_u16(s).unwrap());
                    if let Some(secs) = retry_after {
                        b = b.header("retry-after", secs.to_string());
                    }
                    Ok(b.body(Body::from("{}")).unwrap())
                }
                Reply::Err(kind) => Err(match kind {
                    ErrKind::Connect => Error::new(ErrorKind::UpstreamConnect, "refused").into(),
                    ErrKind::Timeout => Error::new(ErrorKind::UpstreamTimeout, "slow").into(),
                    ErrKind::Io => Box::new(std::io::Error::other("reset")) as BoxError,
                    ErrKind::Refusal => Error::rate_limited(
                        "requests",
                        "target",
                        "slow down",
                        Duration::from_secs(1),
                    )
                    .into(),
                    ErrKind::BadRequest => Error::invalid_request("invalid_json", "bad").into(),
                }),
                Reply::Hang => std::future::pending().await,
            }
        })
    }
}

/// A config with no jitter and small, round numbers; tests override what they exercise.
pub fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        window: Duration::from_secs(10),
        window_buckets: 10,
        min_calls: 4,
        failure_rate_threshold: 0.5,
        consecutive_failures: 0,
        slow_call_threshold: None,
        slow_call_rate_threshold: 0.5,
        open_base: Duration::from_secs(10),
        open_max: Duration::from_secs(25),
        jitter: 0.0,
        half_open_probes: 2,
        probe_timeout: Duration::from_secs(5),
        rate_limit_cooldown: Duration::from_secs(1),
        rate_limit_cooldown_max: Duration::from_secs(30),
        max_keys: 100,
    }
}

/// A clock the test moves by hand (for multi-thread runtimes, which cannot pause time).
#[derive(Clone)]
pub struct ManualClock {
    base: Instant,
    offset_ms: Arc<AtomicU64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            offset_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// Keeps values alive for the test's duration.
#[derive(Clone, Default)]
pub struct Keep<T>(pub Arc<Mutex<Vec<T>>>);

impl<T> Keep<T> {
    pub fn push(&self, v: T) {
        self.0.lock().unwrap().push(v);
    }
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

//! The behavioural suite every [`RateLimitStore`] passes (feature `testing`): one suite, run
//! against the in-memory store here and against Redis in `rampart-redis`.
//!
//! Each case is an `async fn(Arc<dyn RateLimitStore>)`; [`store_suite!`](crate::store_suite)
//! turns them into one `#[tokio::test]` per case over a factory of fresh stores. The cases run
//! on real time (a Redis server has its own clock), so they use rates slow enough that refill
//! during a case is negligible (6 per minute: one unit every 10 s) and assert durations with a
//! margin; the one case about refill uses waits of about 100 ms. Writes that a store may apply
//! in the background (settle, refund, release) are awaited with [`RateLimitStore::flush`]
//! before their effect is checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use rampart_core::{
    Body, BoxError, ChatRequest, Completion, CompletionReport, Error, Outcome, ResponseFacts,
    Target, Tenant, Usage,
};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::store::{
    Admission, Decision, LimitKind, Quota, Rate, RateLimitStore, Refusal, Snapshot,
};
use crate::{Limits, RateLimitLayer, TokenReservation};

/// A store under test.
pub type Store = Arc<dyn RateLimitStore>;

/// Generates one `#[tokio::test]` per case of the suite. `$factory` is an async fn returning
/// `(Arc<dyn RateLimitStore>, G)`: a fresh store, and anything that must live as long as the
/// test (a server).
///
/// ```text
/// async fn memory() -> (Arc<dyn RateLimitStore>, ()) {
///     (Arc::new(MemoryStore::new()), ())
/// }
/// rampart_ratelimit::store_suite!(memory);
/// ```
#[macro_export]
macro_rules! store_suite {
    ($factory:path) => {
        $crate::store_suite!(@cases $factory;
            requests_are_admitted_up_to_the_burst,
            a_refusal_charges_nothing,
            refill_admits_again,
            oversized_requests_are_refused_without_retry_after,
            concurrency_is_limited_until_released,
            a_concurrency_refusal_also_reports_the_rate_wait,
            settle_refunds_the_unused_tokens,
            settle_charges_the_overage_into_debt,
            refunds_never_fill_past_the_burst,
            refund_request_gives_the_request_back,
            keys_never_collide,
            a_rate_change_keeps_the_time_until_full,
            peek_charges_nothing,
            zero_tokens_are_admitted,
            wait_returns_by_its_deadline,
            layer_reports_headers_and_settles_to_usage,
            layer_settle_is_idempotent,
            layer_holds_the_slot_until_the_response_ends,
            layer_gives_the_request_back_after_a_refusal_below,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (store, _keep) = $factory().await;
                $crate::testing::$case(store).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// One unit every 10 s: no refill worth counting during a case.
const SLOW: u64 = 6;
/// Slack for durations measured on real time.
const SLACK: Duration = Duration::from_secs(3);

fn requests(burst: u64) -> Quota {
    Quota {
        requests: Some(Rate::new(SLOW, burst)),
        ..Quota::default()
    }
}

fn tokens(burst: u64) -> Quota {
    Quota {
        tokens: Some(Rate::new(SLOW, burst)),
        ..Quota::default()
    }
}

fn concurrency(n: u32) -> Quota {
    Quota {
        concurrency: Some(n),
        ..Quota::default()
    }
}

async fn acquire(store: &Store, key: &str, quota: &Quota, tokens: u64) -> Decision {
    store
        .acquire(key, quota, tokens)
        .await
        .expect("the store decides")
}

async fn admit(store: &Store, key: &str, quota: &Quota, tokens: u64) -> Admission {
    match acquire(store, key, quota, tokens).await {
        Decision::Admitted(a) => {
            assert!(!a.degraded, "a healthy store is not degraded");
            a
        }
        Decision::Refused(r) => panic!("expected an admission for {key:?}, got {r:?}"),
    }
}

async fn refuse(store: &Store, key: &str, quota: &Quota, tokens: u64) -> Refusal {
    match acquire(store, key, quota, tokens).await {
        Decision::Refused(r) => {
            assert!(!r.degraded, "a healthy store is not degraded");
            r
        }
        Decision::Admitted(a) => panic!("expected a refusal for {key:?}, got {a:?}"),
    }
}

async fn peek(store: &Store, key: &str, quota: &Quota) -> Snapshot {
    store.peek(key, quota).await.expect("the store answers")
}

fn req_remaining(s: &Snapshot) -> u64 {
    s.requests.expect("requests are limited").remaining
}

fn tok_remaining(s: &Snapshot) -> u64 {
    s.tokens.expect("tokens are limited").remaining
}

/// `actual` is `expected`, give or take what real time may have moved (up to [`SLACK`] less,
/// 1 ms more for rounding).
#[track_caller]
fn assert_about(actual: Duration, expected: Duration) {
    assert!(
        actual <= expected + Duration::from_millis(1) && actual + SLACK >= expected,
        "expected about {expected:?}, got {actual:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Store cases

/// A full bucket admits `burst` requests, counting down; the next one is refused with the
/// time one request takes to refill.
pub async fn requests_are_admitted_up_to_the_burst(store: Store) {
    let q = requests(3);
    for (remaining, reset) in [(2, 10), (1, 20), (0, 30)] {
        let a = admit(&store, "k", &q, 0).await;
        let s = a.snapshot.requests.unwrap();
        assert_eq!(s.limit, SLOW);
        assert_eq!(s.remaining, remaining);
        assert_about(s.reset, Duration::from_secs(reset));
        assert!(a.snapshot.tokens.is_none());
    }
    let r = refuse(&store, "k", &q, 0).await;
    assert_eq!(r.kind, LimitKind::Requests);
    assert_about(r.retry_after.unwrap(), Duration::from_secs(10));
    assert_eq!(req_remaining(&r.snapshot), 0);
}

/// All or nothing: a request refused on tokens is not charged a request either.
pub async fn a_refusal_charges_nothing(store: Store) {
    let q = Quota {
        requests: Some(Rate::new(SLOW, 5)),
        tokens: Some(Rate::new(SLOW, 100)),
        concurrency: Some(10),
    };
    let a = admit(&store, "k", &q, 60).await;
    assert_eq!(req_remaining(&a.snapshot), 4);
    assert_eq!(tok_remaining(&a.snapshot), 40);
    let r = refuse(&store, "k", &q, 50).await;
    assert_eq!(r.kind, LimitKind::Tokens);
    // Ten tokens short, at one token per 10 s.
    assert_about(r.retry_after.unwrap(), Duration::from_secs(100));
    assert_eq!(req_remaining(&r.snapshot), 4);
    assert_eq!(tok_remaining(&r.snapshot), 40);
    let a = admit(&store, "k", &q, 10).await;
    assert_eq!(req_remaining(&a.snapshot), 3);
    assert_eq!(tok_remaining(&a.snapshot), 30);
}

/// After the refusal's `retry_after`, the request is admitted.
pub async fn refill_admits_again(store: Store) {
    // Ten per second, one at a time.
    let q = Quota {
        requests: Some(Rate::new(600, 1)),
        ..Quota::default()
    };
    admit(&store, "k", &q, 0).await;
    let r = refuse(&store, "k", &q, 0).await;
    let wait = r.retry_after.unwrap();
    assert!(wait <= Duration::from_millis(100), "{wait:?}");
    tokio::time::sleep(wait + Duration::from_millis(30)).await;
    admit(&store, "k", &q, 0).await;
}

/// A request larger than the whole token burst can never pass: refused without a retry time,
/// and nothing is charged.
pub async fn oversized_requests_are_refused_without_retry_after(store: Store) {
    let q = tokens(100);
    let r = refuse(&store, "k", &q, 101).await;
    assert_eq!(r.kind, LimitKind::Tokens);
    assert_eq!(r.retry_after, None);
    assert_eq!(tok_remaining(&peek(&store, "k", &q).await), 100);
    admit(&store, "k", &q, 100).await;
}

/// Concurrency: at most `n` admissions hold a slot; a release frees one.
pub async fn concurrency_is_limited_until_released(store: Store) {
    let q = concurrency(2);
    let a = admit(&store, "k", &q, 0).await;
    let b = admit(&store, "k", &q, 0).await;
    let r = refuse(&store, "k", &q, 0).await;
    assert_eq!(r.kind, LimitKind::Concurrency);
    assert_eq!(r.retry_after, None, "nobody knows when a slot frees");
    store.release("k", a.id);
    store.flush().await;
    let c = admit(&store, "k", &q, 0).await;
    refuse(&store, "k", &q, 0).await;
    store.release("k", b.id);
    store.release("k", c.id);
    store.flush().await;
    admit(&store, "k", &q, 0).await;
    admit(&store, "k", &q, 0).await;
}

/// A refusal names concurrency first, but its retry time still covers the rate.
pub async fn a_concurrency_refusal_also_reports_the_rate_wait(store: Store) {
    let q = Quota {
        requests: Some(Rate::new(SLOW, 1)),
        concurrency: Some(1),
        ..Quota::default()
    };
    admit(&store, "k", &q, 0).await;
    let r = refuse(&store, "k", &q, 0).await;
    assert_eq!(r.kind, LimitKind::Concurrency);
    assert_about(r.retry_after.unwrap(), Duration::from_secs(10));
}

/// Settling below the reservation gives the difference back.
pub async fn settle_refunds_the_unused_tokens(store: Store) {
    let q = tokens(1000);
    let rate = q.tokens.unwrap();
    let a = admit(&store, "k", &q, 300).await;
    assert_eq!(tok_remaining(&a.snapshot), 700);
    store.settle("k", a.id, &rate, 300, 100);
    store.flush().await;
    assert_eq!(tok_remaining(&peek(&store, "k", &q).await), 900);
    let b = admit(&store, "k", &q, 200).await;
    assert_eq!(tok_remaining(&b.snapshot), 700);
}

/// Settling above the reservation charges the overage, into debt if need be.
pub async fn settle_charges_the_overage_into_debt(store: Store) {
    let q = tokens(1000);
    let rate = q.tokens.unwrap();
    let a = admit(&store, "k", &q, 300).await;
    store.settle("k", a.id, &rate, 300, 500);
    store.flush().await;
    assert_eq!(tok_remaining(&peek(&store, "k", &q).await), 500);
    let b = admit(&store, "k", &q, 100).await;
    store.settle("k", b.id, &rate, 100, 2000);
    store.flush().await;
    let s = peek(&store, "k", &q).await;
    assert_eq!(tok_remaining(&s), 0);
    // 2,500 tokens owed: full again in 25,000 s; one more token fits after 15,010 s.
    assert_about(s.tokens.unwrap().reset, Duration::from_secs(25_000));
    let r = refuse(&store, "k", &q, 1).await;
    assert_about(r.retry_after.unwrap(), Duration::from_secs(15_010));
}

/// A refund never fills a bucket past its burst.
pub async fn refunds_never_fill_past_the_burst(store: Store) {
    let q = tokens(1000);
    let rate = q.tokens.unwrap();
    let a = admit(&store, "k", &q, 10).await;
    assert_eq!(tok_remaining(&a.snapshot), 990);
    store.settle("k", a.id, &rate, 500, 0);
    store.flush().await;
    assert_eq!(tok_remaining(&peek(&store, "k", &q).await), 1000);
    admit(&store, "k", &q, 1000).await;
    refuse(&store, "k", &q, 1).await;
}

/// A request that never reached an upstream is given back.
pub async fn refund_request_gives_the_request_back(store: Store) {
    let q = requests(2);
    let rate = q.requests.unwrap();
    let a = admit(&store, "k", &q, 0).await;
    admit(&store, "k", &q, 0).await;
    refuse(&store, "k", &q, 0).await;
    store.refund_request("k", a.id, &rate);
    store.flush().await;
    let c = admit(&store, "k", &q, 0).await;
    assert_eq!(req_remaining(&c.snapshot), 0);
    refuse(&store, "k", &q, 0).await;
}

/// Keys are independent, whatever bytes they hold: no key can reach another's state.
pub async fn keys_never_collide(store: Store) {
    let long = "x".repeat(300);
    let longer = "x".repeat(301);
    let keys = [
        "acme",
        "acme:x",
        "acme}:x",
        "{acme}",
        "acme%7D%3Ax",
        "a/b",
        "a:b",
        "",
        " ",
        "é",
        "~x",
        "%7Ex",
        "line\nbreak",
        long.as_str(),
        longer.as_str(),
    ];
    let q = requests(1);
    for k in keys {
        admit(&store, k, &q, 0).await;
    }
    for k in keys {
        refuse(&store, k, &q, 0).await;
    }
    admit(&store, "acme2", &q, 0).await;
}

/// A new rate for a key (a config reload) keeps the time until its bucket is full.
pub async fn a_rate_change_keeps_the_time_until_full(store: Store) {
    let before = requests(2);
    admit(&store, "k", &before, 0).await;
    admit(&store, "k", &before, 0).await;
    let r = refuse(&store, "k", &before, 0).await;
    assert_about(r.retry_after.unwrap(), Duration::from_secs(10));
    // 20 s until full at 12 per minute is 4 units owed against a burst of 2: one more fits
    // after 15 s.
    let after = Quota {
        requests: Some(Rate::new(12, 2)),
        ..Quota::default()
    };
    let r = refuse(&store, "k", &after, 0).await;
    assert_about(r.retry_after.unwrap(), Duration::from_secs(15));
    assert_eq!(r.snapshot.requests.unwrap().limit, 12);
}

/// `peek` reports the buckets and charges nothing.
pub async fn peek_charges_nothing(store: Store) {
    let q = Quota {
        requests: Some(Rate::new(SLOW, 3)),
        tokens: Some(Rate::new(SLOW, 100)),
        concurrency: None,
    };
    for _ in 0..3 {
        let s = peek(&store, "k", &q).await;
        assert_eq!(req_remaining(&s), 3);
        assert_eq!(tok_remaining(&s), 100);
        assert_eq!(s.tokens.unwrap().reset, Duration::ZERO);
    }
    admit(&store, "k", &q, 10).await;
    let s = peek(&store, "k", &q).await;
    assert_eq!(req_remaining(&s), 2);
    assert_eq!(tok_remaining(&s), 90);
    assert_about(s.tokens.unwrap().reset, Duration::from_secs(100));
}

/// A request estimated at zero tokens passes a tokens limit and leaves it as it was.
pub async fn zero_tokens_are_admitted(store: Store) {
    let q = tokens(100);
    let a = admit(&store, "k", &q, 0).await;
    assert_eq!(tok_remaining(&a.snapshot), 100);
    store.settle("k", a.id, &q.tokens.unwrap(), 0, 30);
    store.release("k", a.id);
    store.flush().await;
    assert_eq!(tok_remaining(&peek(&store, "k", &q).await), 70);
}

/// `wait` returns by its deadline (early when a slot frees, for stores that can tell).
pub async fn wait_returns_by_its_deadline(store: Store) {
    let q = concurrency(1);
    let a = admit(&store, "k", &q, 0).await;
    let r = refuse(&store, "k", &q, 0).await;
    let start = Instant::now();
    store
        .wait("k", &r, start + Duration::from_millis(200))
        .await;
    assert!(start.elapsed() < Duration::from_millis(400));
    store.release("k", a.id);
    store.flush().await;
    let start = Instant::now();
    store.wait("k", &r, start + Duration::from_secs(5)).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a released slot ends the wait: {:?}",
        start.elapsed()
    );
    admit(&store, "k", &q, 0).await;
}

// ---------------------------------------------------------------------------------------------
// Through the layer

const BODY: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":100}"#;

fn request(tenant: &str) -> Request<Body> {
    let chat = Arc::new(ChatRequest::parse(Bytes::from_static(BODY.as_bytes())).unwrap());
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat);
    req.extensions_mut().insert(Tenant::new(tenant));
    req
}

/// What the layer reserves for [`BODY`].
fn reserve() -> u64 {
    ChatRequest::parse(Bytes::from_static(BODY.as_bytes()))
        .unwrap()
        .estimate_prompt_tokens()
        + 100
}

type Handler = Arc<dyn Fn(&Request<Body>) -> Result<Response<Body>, BoxError> + Send + Sync>;

/// An upstream that answers at once with `handler`.
#[derive(Clone)]
struct Upstream(Handler);

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<Body>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Body>) -> Self::Future {
        std::future::ready((self.0)(&req))
    }
}

/// A 200 with `ResponseFacts`; its completion is handed to `completions`.
fn answer(completions: &Arc<Mutex<Vec<Completion>>>) -> Response<Body> {
    let completion = Completion::new();
    completions.lock().unwrap().push(completion.clone());
    let mut resp = Response::new(Body::from("{}"));
    resp.extensions_mut().insert(ResponseFacts {
        target: Target::new("p", "m"),
        upstream_model: "m".into(),
        ttfb: Duration::ZERO,
        stream: false,
        completion,
    });
    resp
}

fn report(total: u64) -> CompletionReport {
    let mut r = CompletionReport::bare(Outcome::Complete);
    r.usage = Some(Usage {
        prompt_tokens: total / 2,
        completion_tokens: total - total / 2,
        total_tokens: total,
        ..Usage::default()
    });
    r
}

async fn call<S>(svc: &mut S, req: Request<Body>) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

fn header(resp: &Response<Body>, name: &str) -> u64 {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn layer(store: &Store, limits: Limits) -> RateLimitLayer {
    RateLimitLayer::builder()
        .limits(limits)
        .store(store.clone())
        .build()
        .unwrap()
}

/// Success headers come from the store's snapshot; the completion settles to the usage.
pub async fn layer_reports_headers_and_settles_to_usage(store: Store) {
    let completions = Arc::new(Mutex::new(Vec::new()));
    let c = completions.clone();
    let limits = Limits::none()
        .requests_per_minute(SLOW)
        .request_burst(5)
        .tokens_per_minute(SLOW)
        .token_burst(10_000);
    let mut svc = layer(&store, limits).layer(Upstream(Arc::new(move |_| Ok(answer(&c)))));
    let r = call(&mut svc, request("acme")).await.unwrap();
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), SLOW);
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), 4);
    assert_eq!(
        header(&r, "x-ratelimit-remaining-tokens"),
        10_000 - reserve()
    );
    assert!(r.headers().get("x-rampart-degraded").is_none());
    let done = completions.lock().unwrap()[0].clone();
    done.resolve(report(50));
    store.flush().await;
    let r = call(&mut svc, request("acme")).await.unwrap();
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), 3);
    assert_eq!(
        header(&r, "x-ratelimit-remaining-tokens"),
        10_000 - 50 - reserve()
    );
}

/// The first settle of a reservation wins; a second one, and the completion's, change nothing.
pub async fn layer_settle_is_idempotent(store: Store) {
    let completions = Arc::new(Mutex::new(Vec::new()));
    let c = completions.clone();
    let limits = Limits::none().tokens_per_minute(SLOW).token_burst(10_000);
    let mut svc = layer(&store, limits).layer(Upstream(Arc::new(move |req| {
        let r = req.extensions().get::<TokenReservation>().unwrap();
        assert!(r.settle(0), "the first settle applies");
        assert!(!r.settle(7), "a second settle does nothing");
        assert!(!r.settle(0));
        Ok(answer(&c))
    })));
    call(&mut svc, request("acme")).await.unwrap();
    let done = completions.lock().unwrap()[0].clone();
    done.resolve(report(5_000));
    store.flush().await;
    let r = call(&mut svc, request("acme")).await.unwrap();
    assert_eq!(
        header(&r, "x-ratelimit-remaining-tokens"),
        10_000 - reserve()
    );
}

/// The concurrency slot is held until the response ends, then freed.
pub async fn layer_holds_the_slot_until_the_response_ends(store: Store) {
    let completions = Arc::new(Mutex::new(Vec::new()));
    let c = completions.clone();
    let mut svc = layer(&store, Limits::none().concurrency(1))
        .layer(Upstream(Arc::new(move |_| Ok(answer(&c)))));
    call(&mut svc, request("acme")).await.unwrap();
    let e = call(&mut svc, request("acme")).await.unwrap_err();
    let e = e.downcast::<Error>().unwrap();
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    let done = completions.lock().unwrap()[0].clone();
    done.resolve(report(1));
    store.flush().await;
    call(&mut svc, request("acme")).await.unwrap();
}

/// A refusal from below (an open breaker) gives the request unit back.
pub async fn layer_gives_the_request_back_after_a_refusal_below(store: Store) {
    let refuse_below = Arc::new(Mutex::new(true));
    let flag = refuse_below.clone();
    let completions = Arc::new(Mutex::new(Vec::new()));
    let c = completions.clone();
    let limits = Limits::none().requests_per_minute(SLOW).request_burst(1);
    let mut svc = layer(&store, limits).layer(Upstream(Arc::new(move |_| {
        if *flag.lock().unwrap() {
            Err(Error::circuit_open("p/m", Duration::from_secs(5)).into())
        } else {
            Ok(answer(&c))
        }
    })));
    for _ in 0..2 {
        let e = call(&mut svc, request("acme")).await.unwrap_err();
        assert_eq!(
            e.downcast::<Error>().unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        store.flush().await;
    }
    *refuse_below.lock().unwrap() = false;
    let r = call(&mut svc, request("acme")).await.unwrap();
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), 0);
    let e = call(&mut svc, request("acme")).await.unwrap_err();
    assert_eq!(
        e.downcast::<Error>().unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

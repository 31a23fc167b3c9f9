//! The Redis rate-limit store beyond the shared suite: idempotency by reservation id, key shape,
//! leases, several replicas on one Redis, and outages under each policy, against a real
//! redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use rampart_core::{
    Body, BoxError, ChatRequest, Completion, CompletionReport, Outcome, ResponseFacts, Target,
    Tenant, Usage,
};
use rampart_ratelimit::{
    Decision, Limits, Quota, Rate, RateLimitLayer, RateLimitStore, ReservationId, Snapshot,
};
use rampart_redis::testing::RedisServer;
use rampart_redis::{
    OutagePolicy, RedisConfig, RedisRateLimitConfig, RedisRateLimitStore, RedisState,
};
use tokio::time::{Instant, timeout};
use tower::Layer;
use tower::Service;

const TIMEOUT: Duration = Duration::from_millis(100);
/// What a request may take beyond the Redis timeout.
const MARGIN: Duration = Duration::from_millis(300);

fn state(server: &RedisServer, timeout: Duration) -> RedisState {
    RedisState::new(RedisConfig {
        redis_url: server.url(),
        timeout,
        breaker_failures: 2,
        breaker_cooldown: Duration::from_millis(300),
        key_prefix: "t".to_owned(),
    })
    .unwrap()
}

fn store(state: RedisState, outage: OutagePolicy, lease: Duration) -> Arc<RedisRateLimitStore> {
    Arc::new(
        RedisRateLimitStore::new(
            state,
            RedisRateLimitConfig {
                outage_policy: outage,
                local_fraction: 0.5,
                lease,
            },
        )
        .unwrap(),
    )
}

/// A healthy store (a generous timeout: these cases are not about outages).
async fn healthy(server: &RedisServer) -> Arc<RedisRateLimitStore> {
    store(
        state(server, Duration::from_secs(2)),
        OutagePolicy::LocalFallback,
        Duration::from_secs(600),
    )
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn admit(
    store: &RedisRateLimitStore,
    key: &str,
    quota: &Quota,
    tokens: u64,
) -> ReservationId {
    match store.acquire(key, quota, tokens).await.unwrap() {
        Decision::Admitted(a) => {
            assert!(!a.degraded);
            a.id
        }
        Decision::Refused(r) => panic!("refused: {r:?}"),
    }
}

async fn refused(store: &RedisRateLimitStore, key: &str, quota: &Quota, tokens: u64) {
    match store.acquire(key, quota, tokens).await.unwrap() {
        Decision::Refused(_) => {}
        Decision::Admitted(a) => panic!("admitted: {a:?}"),
    }
}

async fn peek(store: &RedisRateLimitStore, key: &str, quota: &Quota) -> Snapshot {
    store.peek(key, quota).await.unwrap()
}

fn all_limits() -> Quota {
    Quota {
        requests: Some(Rate::new(6, 5)),
        tokens: Some(Rate::new(6, 1000)),
        concurrency: Some(1),
    }
}

async fn flush(store: &RedisRateLimitStore) {
    timeout(Duration::from_secs(10), store.flush())
        .await
        .expect("background writes land");
}

// ---------------------------------------------------------------------------------------------
// Idempotency, keys, leases

#[tokio::test]
async fn settle_refund_and_release_apply_once_per_reservation_id() {
    let server = RedisServer::start().await.unwrap();
    let a = healthy(&server).await;
    // Another replica: its own connection, the same Redis.
    let b = healthy(&server).await;
    let q = all_limits();
    let (req_rate, tok_rate) = (q.requests.unwrap(), q.tokens.unwrap());
    let id = admit(&a, "acme", &q, 300).await;
    let s = peek(&a, "acme", &q).await;
    assert_eq!(
        (s.requests.unwrap().remaining, s.tokens.unwrap().remaining),
        (4, 700)
    );

    for replica in [&a, &a, &b] {
        replica.settle("acme", id, &tok_rate, 300, 100);
        replica.refund_request("acme", id, &req_rate);
        flush(replica).await;
    }
    let s = peek(&a, "acme", &q).await;
    assert_eq!(
        (s.requests.unwrap().remaining, s.tokens.unwrap().remaining),
        (5, 900),
        "each applied once"
    );
    // The slot is still held until the release; two releases free one slot only.
    refused(&a, "acme", &q, 1).await;
    a.release("acme", id);
    b.release("acme", id);
    flush(&a).await;
    flush(&b).await;
    let second = admit(&b, "acme", &q, 1).await;
    refused(&a, "acme", &q, 1).await;
    // After the release, a late settle or refund of the first reservation changes nothing.
    a.settle("acme", id, &tok_rate, 300, 0);
    a.refund_request("acme", id, &req_rate);
    flush(&a).await;
    let s = peek(&a, "acme", &q).await;
    assert_eq!(
        (s.requests.unwrap().remaining, s.tokens.unwrap().remaining),
        (4, 899)
    );
    b.release("acme", second);
    flush(&b).await;
}

#[tokio::test]
async fn keys_share_one_hash_tag_per_rate_limit_key_and_all_expire() {
    let server = RedisServer::start().await.unwrap();
    let s = healthy(&server).await;
    let q = all_limits();
    let long = "y".repeat(500);
    let keys = ["acme", "a}:x", "{b}", "", long.as_str()];
    for k in keys {
        let id = admit(&s, k, &q, 10).await;
        // Leave the slot and records in place for the inspection below.
        let _ = id;
    }
    let mut conn = raw(&server).await;
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored.len(), keys.len() * 3, "{stored:?}");
    for k in keys {
        let [b, c, r] = s.redis_keys(k);
        let tag = |key: &str| {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            key[open + 1..close].to_owned()
        };
        let t = tag(&b);
        assert!(!t.is_empty(), "an empty tag is no hash tag");
        assert_eq!(tag(&c), t);
        assert_eq!(tag(&r), t);
        assert!(b.starts_with("t:v1:rl:{"), "{b}");
        assert!(b.len() < 120, "long keys are hashed: {b}");
        for key in [&b, &c, &r] {
            assert!(stored.contains(key), "{key} missing from {stored:?}");
        }
    }
    for key in &stored {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn full_buckets_leave_nothing_behind() {
    let server = RedisServer::start().await.unwrap();
    let s = healthy(&server).await;
    let q = Quota {
        tokens: Some(Rate::new(6, 1000)),
        ..Quota::default()
    };
    let id = admit(&s, "acme", &q, 300).await;
    s.settle("acme", id, &q.tokens.unwrap(), 300, 0);
    s.release("acme", id);
    flush(&s).await;
    let mut conn = raw(&server).await;
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(stored.is_empty(), "{stored:?}");
}

#[tokio::test]
async fn a_dead_replicas_slot_frees_when_its_lease_ends() {
    let server = RedisServer::start().await.unwrap();
    let q = Quota {
        concurrency: Some(1),
        ..Quota::default()
    };
    let lease = Duration::from_millis(700);
    {
        let dying = store(
            state(&server, Duration::from_secs(2)),
            OutagePolicy::LocalFallback,
            lease,
        );
        admit(&dying, "acme", &q, 0).await;
        // The replica dies with its request in flight: no release is ever sent.
    }
    let other = store(
        state(&server, Duration::from_secs(2)),
        OutagePolicy::LocalFallback,
        lease,
    );
    refused(&other, "acme", &q, 0).await;
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    admit(&other, "acme", &q, 0).await;
}

#[tokio::test]
async fn an_admission_whose_reply_was_lost_is_undone() {
    let server = RedisServer::start().await.unwrap();
    let s = store(
        state(&server, TIMEOUT),
        OutagePolicy::FailClosed,
        Duration::from_secs(600),
    );
    let q = all_limits();
    // The script is loaded and the connection made.
    let first = admit(&s, "warm", &q, 1).await;
    s.release("warm", first);
    flush(&s).await;

    server.pause().unwrap();
    let start = Instant::now();
    assert!(s.acquire("acme", &q, 300).await.is_err());
    assert!(start.elapsed() < TIMEOUT + MARGIN);
    server.resume().unwrap();
    // Redis runs the admission it had received, then the cancel that followed it.
    flush(&s).await;
    let snap = peek(&s, "acme", &q).await;
    assert_eq!(snap.requests.unwrap().remaining, 5);
    assert_eq!(snap.tokens.unwrap().remaining, 1000);
    admit(&s, "acme", &q, 1).await;
}

// ---------------------------------------------------------------------------------------------
// Through the layer

const BODY: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":10}"#;

fn request(tenant: &str) -> Request<Body> {
    let chat = Arc::new(ChatRequest::parse(Bytes::from_static(BODY.as_bytes())).unwrap());
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat);
    req.extensions_mut().insert(Tenant::new(tenant));
    req
}

/// An upstream that answers at once; each response's completion is kept until the test
/// resolves it.
#[derive(Clone, Default)]
struct Upstream {
    open: Arc<Mutex<Vec<Completion>>>,
}

impl Upstream {
    /// Ends every response so far (settle and release run).
    fn finish_all(&self) {
        let mut report = CompletionReport::bare(Outcome::Complete);
        report.usage = Some(Usage {
            prompt_tokens: 5,
            completion_tokens: 5,
            total_tokens: 10,
            ..Usage::default()
        });
        for c in self.open.lock().unwrap().drain(..) {
            c.resolve(report.clone());
        }
    }
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<Body>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        let completion = Completion::new();
        self.open.lock().unwrap().push(completion.clone());
        let mut resp = Response::new(Body::from("{}"));
        resp.extensions_mut().insert(ResponseFacts {
            target: Target::new("p", "m"),
            upstream_model: "m".into(),
            ttfb: Duration::ZERO,
            stream: false,
            completion,
        });
        std::future::ready(Ok(resp))
    }
}

/// The status and headers of one call through `svc` (an error mapped as the edge maps it),
/// and how long it took.
async fn send<S>(svc: &mut S, tenant: &str) -> (StatusCode, HeaderMap, Duration)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    let start = Instant::now();
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let (status, headers) = match svc.call(request(tenant)).await {
        Ok(r) => (r.status(), r.headers().clone()),
        Err(e) => {
            let r = rampart_core::error_response(&e);
            (r.status(), r.headers().clone())
        }
    };
    (status, headers, start.elapsed())
}

fn degraded(h: &HeaderMap) -> bool {
    h.get("x-rampart-degraded")
        .is_some_and(|v| v == "ratelimit")
}

fn remaining(h: &HeaderMap) -> u64 {
    h["x-ratelimit-remaining-requests"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn layer(store: &Arc<RedisRateLimitStore>, limits: Limits) -> RateLimitLayer {
    RateLimitLayer::builder()
        .limits(limits)
        .store(store.clone())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_admit_exactly_the_limit_between_them() {
    let server = RedisServer::start().await.unwrap();
    // Two replicas: two connections, two stores, two layers, one Redis.
    let limits = Limits::none().requests_per_minute(10);
    let upstream = Upstream::default();
    let replicas = [
        layer(&healthy(&server).await, limits).layer(upstream.clone()),
        layer(&healthy(&server).await, limits).layer(upstream.clone()),
    ];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut svc = replicas[i % 2].clone();
        tasks.push(tokio::spawn(async move { send(&mut svc, "acme").await.0 }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (10, 30));
    upstream.finish_all();
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `SIGSTOP`: connections stay open, nothing answers (calls time out).
    Pause,
    /// `SIGKILL`: connections drop, new ones are refused; restarted empty.
    Kill,
}

/// One outage under `policy`: the documented behaviour while Redis is gone, every request
/// bounded by the Redis timeout plus a margin, then automatic recovery in which nothing leaked.
async fn outage(policy: OutagePolicy, how: Outage) {
    let mut server = RedisServer::start().await.unwrap();
    let state = state(&server, TIMEOUT);
    let store = store(state.clone(), policy, Duration::from_secs(600));
    let upstream = Upstream::default();
    // 10 per minute (5 per replica while Redis is down), 2 at a time (1 locally).
    let limits = Limits::none().requests_per_minute(10).concurrency(2);
    let mut svc = layer(&store, limits).layer(upstream.clone());

    // Healthy: decided in Redis. The first response stays open through the outage.
    let (status, h, _) = send(&mut svc, "acme").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!degraded(&h));
    assert_eq!(remaining(&h), 9);
    let held = upstream.open.lock().unwrap().pop().unwrap();

    match how {
        Outage::Pause => server.pause().unwrap(),
        Outage::Kill => server.kill().unwrap(),
    }
    // The open response ends while Redis is gone: its release waits for Redis.
    held.resolve(CompletionReport::bare(Outcome::Complete));

    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, h, took) = send(&mut svc, "acme").await;
        assert!(
            took < TIMEOUT + MARGIN,
            "{policy:?}/{how:?}: a request took {took:?}"
        );
        upstream.finish_all();
        match policy {
            OutagePolicy::LocalFallback | OutagePolicy::FailOpen => assert!(
                degraded(&h),
                "{policy:?}/{how:?}: {status} without x-rampart-degraded"
            ),
            OutagePolicy::FailClosed => {}
        }
        statuses.push(status.as_u16());
    }
    assert!(!state.is_up(), "the breaker is open");
    let expected: Vec<u16> = match policy {
        // Each replica's share: 5 of the 10 per minute.
        OutagePolicy::LocalFallback => [[200; 5].as_slice(), [429; 3].as_slice()].concat(),
        OutagePolicy::FailOpen => vec![200; 8],
        OutagePolicy::FailClosed => vec![503; 8],
    };
    assert_eq!(statuses, expected, "{policy:?}/{how:?}");

    match how {
        Outage::Pause => server.resume().unwrap(),
        Outage::Kill => server.restart().await.unwrap(),
    }
    // Recovery: within a few breaker cooldowns, decisions come from Redis again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let recovered = loop {
        let (status, h, _) = send(&mut svc, "acme").await;
        upstream.finish_all();
        if status == StatusCode::OK && !degraded(&h) {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "{policy:?}/{how:?}: not recovered ({status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(state.is_up());
    upstream.finish_all();
    flush(&store).await;
    // What Redis holds now: before a pause, the first request, the recovery one and this one;
    // after a restart (empty), the last two. Admissions cut off by the outage were undone.
    let (status, h, _) = send(&mut svc, "acme").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!degraded(&h));
    let used = match how {
        Outage::Pause => 3,
        Outage::Kill => 2,
    };
    assert_eq!(remaining(&h), 10 - used, "{policy:?}/{how:?}");
    drop(recovered);
    upstream.finish_all();
    flush(&store).await;
    // No slot leaked: the held response's release landed after the outage, so two requests
    // can be open at once again, not three.
    let (a, _, _) = send(&mut svc, "acme").await;
    let (b, _, _) = send(&mut svc, "acme").await;
    let (c, h, _) = send(&mut svc, "acme").await;
    assert_eq!(
        (a, b, c),
        (
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ),
        "{policy:?}/{how:?}"
    );
    assert!(!degraded(&h));
    upstream.finish_all();
}

#[tokio::test]
async fn local_fallback_through_a_pause() {
    outage(OutagePolicy::LocalFallback, Outage::Pause).await;
}

#[tokio::test]
async fn local_fallback_through_a_kill() {
    outage(OutagePolicy::LocalFallback, Outage::Kill).await;
}

#[tokio::test]
async fn fail_open_through_a_pause() {
    outage(OutagePolicy::FailOpen, Outage::Pause).await;
}

#[tokio::test]
async fn fail_open_through_a_kill() {
    outage(OutagePolicy::FailOpen, Outage::Kill).await;
}

#[tokio::test]
async fn fail_closed_through_a_pause() {
    outage(OutagePolicy::FailClosed, Outage::Pause).await;
}

#[tokio::test]
async fn fail_closed_through_a_kill() {
    outage(OutagePolicy::FailClosed, Outage::Kill).await;
}

#[tokio::test]
async fn reservations_are_settled_where_they_were_made() {
    let server = RedisServer::start().await.unwrap();
    let s = store(
        state(&server, TIMEOUT),
        OutagePolicy::LocalFallback,
        Duration::from_secs(600),
    );
    let q = Quota {
        tokens: Some(Rate::new(6, 1000)),
        ..Quota::default()
    };
    let rate = q.tokens.unwrap();
    let in_redis = admit(&s, "acme", &q, 300).await;

    server.pause().unwrap();
    let local = match s.acquire("acme", &q, 200).await.unwrap() {
        Decision::Admitted(a) if a.degraded => a,
        other => panic!("expected a local admission, got {other:?}"),
    };
    // The local store holds half the burst.
    assert_eq!(local.snapshot.tokens.unwrap().remaining, 300);
    // A Redis reservation settled while Redis is down: queued, no error, no wait.
    let start = Instant::now();
    s.settle("acme", in_redis, &rate, 300, 100);
    s.release("acme", in_redis);
    // The local one is settled locally, at once.
    s.settle("acme", local.id, &rate, 200, 50);
    s.release("acme", local.id);
    assert!(start.elapsed() < Duration::from_millis(20));
    let local_quota = Quota {
        tokens: Some(Rate::new(3, 500)),
        ..Quota::default()
    };
    assert_eq!(
        s.local_store()
            .peek_now("acme", &local_quota)
            .tokens
            .unwrap()
            .remaining,
        450
    );

    server.resume().unwrap();
    flush(&s).await;
    // Redis got its own settle (300 -> 100) and nothing of the local one. (Until the breaker
    // closes, peeks answer from the local store, at the local limit.)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snap = s.peek("acme", &q).await.unwrap().tokens.unwrap();
        if snap.limit == rate.per_minute {
            assert_eq!(snap.remaining, 900);
            break;
        }
        assert!(Instant::now() < deadline, "Redis did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bad_settings_and_a_missing_runtime_are_refused() {
    let server = RedisServer::start().await.unwrap();
    let s = state(&server, TIMEOUT);
    for fraction in [0.0, -0.5, 1.5, f64::NAN] {
        let config = RedisRateLimitConfig {
            local_fraction: fraction,
            ..RedisRateLimitConfig::default()
        };
        assert!(
            RedisRateLimitStore::new(s.clone(), config).is_err(),
            "{fraction}"
        );
    }
    let config = RedisRateLimitConfig {
        lease: Duration::ZERO,
        ..RedisRateLimitConfig::default()
    };
    assert!(RedisRateLimitStore::new(s.clone(), config).is_err());
    // Outside a runtime the background writer cannot start: an error, not a panic.
    let outside = std::thread::spawn(move || {
        RedisRateLimitStore::new(s, RedisRateLimitConfig::default()).map(|_| ())
    });
    let err = outside.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("runtime"), "{err}");
    // The configuration reads from TOML, with every default.
    let c: RedisRateLimitConfig = toml::from_str(
        r#"
        outage_policy = "fail_closed"
        local_fraction = 0.25
        lease = "90s"
    "#,
    )
    .unwrap();
    assert_eq!(c.outage_policy, OutagePolicy::FailClosed);
    assert_eq!(c.local_fraction, 0.25);
    assert_eq!(c.lease, Duration::from_secs(90));
    let d: RedisRateLimitConfig = toml::from_str("").unwrap();
    assert_eq!(d, RedisRateLimitConfig::default());
    assert!(toml::from_str::<RedisRateLimitConfig>("outage_policy = \"maybe\"").is_err());
}

#[tokio::test]
async fn scoped_stores_keep_their_buckets_apart() {
    let server = RedisServer::start().await.unwrap();
    let config = || RedisRateLimitConfig::default();
    let tenant =
        RedisRateLimitStore::scoped(state(&server, Duration::from_secs(2)), config(), "tenant")
            .unwrap();
    let target =
        RedisRateLimitStore::scoped(state(&server, Duration::from_secs(2)), config(), "target")
            .unwrap();
    let q = Quota {
        requests: Some(Rate::new(6, 1)),
        ..Quota::default()
    };
    // A tenant named like a target does not spend the target's limit.
    admit(&tenant, "openai/gpt-4.1", &q, 0).await;
    refused(&tenant, "openai/gpt-4.1", &q, 0).await;
    admit(&target, "openai/gpt-4.1", &q, 0).await;
    assert!(tenant.redis_keys("k")[0].starts_with("t:v1:rl:tenant:{k}"));
    assert!(target.redis_keys("k")[0].starts_with("t:v1:rl:target:{k}"));
    for bad in ["", "a b", "a:b", "{x}"] {
        assert!(
            RedisRateLimitStore::scoped(state(&server, TIMEOUT), config(), bad).is_err(),
            "{bad:?}"
        );
    }
}

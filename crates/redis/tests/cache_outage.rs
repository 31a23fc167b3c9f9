#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Redis stopped (`SIGSTOP`) and killed under each cache outage policy, through the
//! `CacheLayer`: every answer still correct, degraded answers marked `x-rampart-degraded:
//! cache`, no request waiting longer than the Redis timeout plus a small margin, then recovery.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use rampart_cache::{Cache, CacheHandle, CacheLayer};
use rampart_core::{Body, Tenant};
use rampart_mock::{MockConfig, MockProvider};
use rampart_redis::cache::MemoryTierConfig;
use rampart_redis::testing::RedisServer;
use rampart_redis::{OutagePolicy, RedisCacheConfig, RedisCacheStore, RedisConfig, RedisState};
use rampart_upstream::{Timeouts, Upstream};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const TIMEOUT: Duration = Duration::from_millis(100);
/// Scheduling slack on a shared test machine; a call never waits for Redis longer than
/// `TIMEOUT` + this.
const MARGIN: Duration = Duration::from_millis(250);

enum Outage {
    Pause,
    Kill,
}

struct Replica {
    svc: Cache<Upstream>,
    mock: MockProvider,
    handle: CacheHandle,
}

fn replica(server: &RedisServer, policy: OutagePolicy, tier: bool) -> Replica {
    let state = RedisState::new(RedisConfig {
        redis_url: server.url(),
        timeout: TIMEOUT,
        breaker_failures: 2,
        breaker_cooldown: Duration::from_millis(300),
        key_prefix: "rampart".to_owned(),
    })
    .unwrap();
    let store = Arc::new(
        RedisCacheStore::new(
            state,
            RedisCacheConfig {
                outage_policy: policy,
                memory: MemoryTierConfig {
                    enabled: tier,
                    ttl: Duration::from_secs(30),
                    ..MemoryTierConfig::default()
                },
                ..RedisCacheConfig::default()
            },
        )
        .unwrap(),
    );
    let mock = MockProvider::new(MockConfig::default());
    let upstream = Upstream::builder()
        .service_provider("sim", mock.service(), Timeouts::default())
        .model("m1", "sim", None)
        .build()
        .unwrap();
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .store(store.clone())
        .build()
        .unwrap();
    Replica {
        handle: layer.handle(),
        svc: layer.layer(upstream),
        mock,
    }
}

/// `x-rampart-cache`, and whether the answer was marked degraded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen(String, bool);

fn seen(status: &str, degraded: bool) -> Seen {
    Seen(status.to_owned(), degraded)
}

async fn ask(r: &Replica, question: &str) -> Seen {
    let body = serde_json::json!({
        "model": "m1",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
    });
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from(body.to_string()))
        .unwrap();
    req.extensions_mut().insert(Tenant::new("acme"));
    // A fill still storing its answer would share it with this request (single-flight): wait
    // for it, so that each request shows the store's answer.
    for _ in 0..100 {
        if r.handle.flights() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    let resp = r.svc.clone().oneshot(req).await.unwrap();
    let took = t.elapsed();
    assert!(took < TIMEOUT + MARGIN, "a request took {took:?}");
    assert_eq!(resp.status(), 200);
    let status = resp.headers()["x-rampart-cache"]
        .to_str()
        .unwrap()
        .to_owned();
    let degraded = match resp.headers().get("x-rampart-degraded") {
        Some(v) => {
            assert_eq!(v, "cache");
            true
        }
        None => false,
    };
    // Whatever the path, the answer is the provider's answer to this question.
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    Seen(status, degraded)
}

/// Asks until the answer is `want` (each ask within the latency bound), at most ~2 s.
async fn until(r: &Replica, question: &str, want: Seen) {
    let mut last = None;
    for _ in 0..40 {
        let got = ask(r, question).await;
        if got == want {
            return;
        }
        last = Some(got);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{question}: wanted {want:?}, last {last:?}");
}

async fn run(policy: OutagePolicy, outage: Outage) {
    run_with(policy, outage, true).await;
}

async fn run_with(policy: OutagePolicy, outage: Outage, tier: bool) {
    let mut server = RedisServer::start().await.unwrap();
    let r = replica(&server, policy, tier);
    assert_eq!(ask(&r, "known").await, seen("miss", false));
    until(&r, "known", seen("hit", false)).await;
    let upstream_before = r.mock.calls("m1");

    match outage {
        Outage::Pause => server.pause().unwrap(),
        Outage::Kill => server.kill().unwrap(),
    }
    // A question Redis cannot answer now (the first two lookups open the breaker).
    let first = ask(&r, "new").await;
    let second = ask(&r, "new").await;
    let known = ask(&r, "known").await;
    match policy {
        // A miss, served by the provider; nothing new stored; the memory tier still answers.
        OutagePolicy::FailOpen => {
            assert_eq!(first, seen("miss", true));
            assert_eq!(second, seen("miss", true));
            assert_eq!(known, seen("hit", false));
            assert_eq!(r.mock.calls("m1"), upstream_before + 2);
        }
        // The memory tier is the cache: the new answer is stored there and served from it —
        // as a tier hit when the tier is in front anyway, else as the fallback (degraded).
        OutagePolicy::LocalFallback if tier => {
            assert_eq!(first, seen("miss", true));
            assert_eq!(second, seen("hit", false));
            assert_eq!(known, seen("hit", false));
            assert_eq!(r.mock.calls("m1"), upstream_before + 1);
        }
        OutagePolicy::LocalFallback => {
            assert_eq!(first, seen("miss", true));
            assert_eq!(second, seen("hit", true));
            assert_eq!(known, seen("miss", true));
            assert_eq!(ask(&r, "known").await, seen("hit", true));
            assert_eq!(r.mock.calls("m1"), upstream_before + 2);
        }
        // The cache is bypassed entirely, the memory tier included once Redis is known down.
        OutagePolicy::FailClosed => {
            assert_eq!(first, seen("bypass", true));
            assert_eq!(second, seen("bypass", true));
            assert_eq!(known, seen("bypass", true));
            assert_eq!(r.mock.calls("m1"), upstream_before + 3);
        }
    }

    match outage {
        Outage::Pause => server.resume().unwrap(),
        Outage::Kill => server.restart().await.unwrap(),
    }
    // Recovery is automatic: once the breaker's probe goes through, answers are shared again
    // (a new question each time: under local_fallback a question asked during the outage is in
    // the memory tier).
    let mut after = None;
    for i in 0..40 {
        let q = format!("after {i}");
        if ask(&r, &q).await == seen("miss", false) {
            after = Some(q);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = after.expect("recovered");
    until(&r, &after, seen("hit", false)).await;
    // What another replica (no memory tier) finds in Redis: what was stored before a pause (a
    // kill lost it), and what was stored after the recovery.
    let other = replica(&server, policy, false);
    let expected = match outage {
        Outage::Pause => seen("hit", false),
        Outage::Kill => seen("miss", false),
    };
    assert_eq!(ask(&other, "known").await, expected);
    assert_eq!(ask(&other, &after).await, seen("hit", false));
    assert_eq!(other.mock.calls("m1"), u64::from(expected.0 == "miss"));
}

#[tokio::test]
async fn paused_redis_fail_open_is_a_miss_and_the_tier_still_answers() {
    run(OutagePolicy::FailOpen, Outage::Pause).await;
}

#[tokio::test]
async fn paused_redis_local_fallback_caches_in_memory() {
    run(OutagePolicy::LocalFallback, Outage::Pause).await;
}

#[tokio::test]
async fn paused_redis_local_fallback_without_a_front_tier_caches_in_memory() {
    run_with(OutagePolicy::LocalFallback, Outage::Pause, false).await;
}

#[tokio::test]
async fn paused_redis_fail_closed_bypasses_the_cache() {
    run(OutagePolicy::FailClosed, Outage::Pause).await;
}

#[tokio::test]
async fn killed_redis_fail_open_is_a_miss_and_the_tier_still_answers() {
    run(OutagePolicy::FailOpen, Outage::Kill).await;
}

#[tokio::test]
async fn killed_redis_local_fallback_caches_in_memory() {
    run(OutagePolicy::LocalFallback, Outage::Kill).await;
}

#[tokio::test]
async fn killed_redis_fail_closed_bypasses_the_cache() {
    run(OutagePolicy::FailClosed, Outage::Kill).await;
}

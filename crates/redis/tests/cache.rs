#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Redis cache store beyond the shared suite: an answer cached via one replica is a hit on
//! another, the size cap, the key layout (versioned prefix, hash tag per namespace, TTLs),
//! purges across replicas (and the memory tier's bound on them), unreadable entries.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use rampart_cache::testing::{entry, key};
use rampart_cache::{Cache, CacheLayer, CacheStore};
use rampart_core::{Body, Tenant};
use rampart_mock::{MockConfig, MockProvider};
use rampart_redis::cache::MemoryTierConfig;
use rampart_redis::testing::RedisServer;
use rampart_redis::{RedisCacheConfig, RedisCacheStore, RedisConfig, RedisState};
use rampart_upstream::{Timeouts, Upstream};
use tower::{Layer, ServiceExt};

fn state(server: &RedisServer) -> RedisState {
    RedisState::new(RedisConfig {
        redis_url: server.url(),
        timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    })
    .unwrap()
}

fn store(server: &RedisServer, config: RedisCacheConfig) -> Arc<RedisCacheStore> {
    Arc::new(RedisCacheStore::new(state(server), config).unwrap())
}

fn tier(enabled: bool, ttl: Duration) -> RedisCacheConfig {
    RedisCacheConfig {
        memory: MemoryTierConfig {
            enabled,
            ttl,
            ..MemoryTierConfig::default()
        },
        ..RedisCacheConfig::default()
    }
}

/// A replica: a cache layer on `store` in front of its own simulated provider.
struct Replica {
    svc: Cache<Upstream>,
    mock: MockProvider,
}

fn replica(store: Arc<RedisCacheStore>) -> Replica {
    let mock = MockProvider::new(MockConfig::default());
    let upstream = Upstream::builder()
        .service_provider("sim", mock.service(), Timeouts::default())
        .model("m1", "sim", None)
        .build()
        .unwrap();
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .store(store)
        .build()
        .unwrap();
    Replica {
        svc: layer.layer(upstream),
        mock,
    }
}

fn request(question: &str, stream: bool) -> Request<Body> {
    let body = serde_json::json!({
        "model": "m1",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "stream": stream,
    });
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from(body.to_string()))
        .unwrap();
    req.extensions_mut().insert(Tenant::new("acme"));
    req
}

async fn call(r: &Replica, question: &str, stream: bool) -> (String, Response<Body>) {
    let resp = r
        .svc
        .clone()
        .oneshot(request(question, stream))
        .await
        .unwrap();
    let status = resp.headers()["x-rampart-cache"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, resp)
}

async fn body(resp: Response<Body>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cached_via_one_replica_is_a_hit_on_another() {
    let server = RedisServer::start().await.unwrap();
    let a_store = store(&server, RedisCacheConfig::default());
    let a = replica(a_store.clone());
    let b = replica(store(&server, RedisCacheConfig::default()));
    let (status, resp) = call(&a, "shared question", false).await;
    assert_eq!(status, "miss");
    let original = body(resp).await;
    // A's tier takes the entry once Redis has it.
    for _ in 0..200 {
        if a_store.stats().entries > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a_store.stats().entries, 1, "stored via replica A");
    let (status, resp) = call(&b, "shared question", false).await;
    assert_eq!(status, "hit");
    assert!(resp.headers().get("x-rampart-degraded").is_none());
    assert_eq!(resp.headers()["x-rampart-model"], "m1");
    assert_eq!(body(resp).await, original);
    // Streamed on B: the same answer, replayed as SSE.
    let (status, resp) = call(&b, "shared question", true).await;
    assert_eq!(status, "hit");
    let sse = body(resp).await;
    let text = String::from_utf8(sse.to_vec()).unwrap();
    assert!(text.starts_with("data: ") && text.ends_with("data: [DONE]\n\n"));
    assert_eq!(b.mock.calls("m1"), 0, "B never asked its upstream");
    assert_eq!(a.mock.calls("m1"), 1);
}

#[tokio::test]
async fn entries_over_the_size_cap_are_counted_and_not_stored() {
    let server = RedisServer::start().await.unwrap();
    let s = store(
        &server,
        RedisCacheConfig {
            max_entry_bytes: 600,
            ..RedisCacheConfig::default()
        },
    );
    let small = entry("q", "short", Duration::from_secs(60));
    let large = entry("big", &"x".repeat(1000), Duration::from_secs(60));
    s.put(key("acme", "q"), small).await.unwrap();
    s.put(key("acme", "big"), large).await.unwrap();
    assert_eq!(s.oversize_count(), 1);
    assert!(s.get(&key("acme", "q")).await.unwrap().entry.is_some());
    let lookup = s.get(&key("acme", "big")).await.unwrap();
    assert!(lookup.entry.is_none() && !lookup.degraded);
    // Not in the memory tier either.
    assert_eq!(s.stats().entries, 1);
}

#[tokio::test]
async fn keys_are_versioned_tagged_per_namespace_and_expire() {
    let server = RedisServer::start().await.unwrap();
    let s = store(&server, tier(false, Duration::from_secs(5)));
    let k = key("evil}:{x", "q");
    s.put(k.clone(), entry("q", "a", Duration::from_secs(30)))
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let [g, e] = s.redis_keys(&k);
    let mut expected = vec![g.clone(), e.clone()];
    expected.sort();
    assert_eq!(keys, expected);
    let tag = &e[..e.find('}').unwrap() + 1];
    assert!(g.starts_with(tag), "one slot per namespace: {g} / {e}");
    assert!(e.starts_with("rampart:v1:cache:{"), "{e}");
    assert!(e.ends_with(&format!(":e:{}", k.hex())), "{e}");
    assert!(!e.contains("evil"), "{e}");
    assert_eq!(e.matches('{').count(), 1, "{e}");
    let ttl = |k: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg(k)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    // The generation first: read later, the entry's TTL can only have shrunk.
    let tg = ttl(g).await;
    let te = ttl(e).await;
    // Loose lower bound: the machine may be busy between the put and the PTTL.
    assert!(te > 15_000 && te <= 30_000, "entry TTL {te}");
    assert!(tg >= te, "the generation outlives the entry ({tg} < {te})");
}

#[tokio::test]
async fn a_purge_reaches_other_replicas_at_once_or_within_their_tier_ttl() {
    let server = RedisServer::start().await.unwrap();
    let a = store(&server, RedisCacheConfig::default());
    let plain = store(&server, tier(false, Duration::from_secs(5)));
    let tiered = store(&server, tier(true, Duration::from_millis(300)));
    let k = key("acme", "q");
    a.put(k.clone(), entry("q", "a", Duration::from_secs(60)))
        .await
        .unwrap();
    a.put(key("other", "q"), entry("q", "b", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(plain.get(&k).await.unwrap().entry.is_some());
    assert!(tiered.get(&k).await.unwrap().entry.is_some());
    a.purge_namespace("acme").await.unwrap();
    assert!(a.get(&k).await.unwrap().entry.is_none());
    assert!(
        plain.get(&k).await.unwrap().entry.is_none(),
        "no tier: at once"
    );
    assert!(
        tiered.get(&k).await.unwrap().entry.is_some(),
        "a tier keeps its copy until its TTL"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(tiered.get(&k).await.unwrap().entry.is_none());
    // Other namespaces are untouched; a purge_all reaches them.
    assert!(plain.get(&key("other", "q")).await.unwrap().entry.is_some());
    a.purge_all().await.unwrap();
    assert!(plain.get(&key("other", "q")).await.unwrap().entry.is_none());
    // New entries after a purge are served.
    a.put(k.clone(), entry("q", "new", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(plain.get(&k).await.unwrap().entry.is_some());
}

#[tokio::test]
async fn unreadable_entries_are_misses() {
    let server = RedisServer::start().await.unwrap();
    let s = store(&server, tier(false, Duration::from_secs(5)));
    let k = key("acme", "q");
    s.put(k.clone(), entry("q", "a", Duration::from_secs(60)))
        .await
        .unwrap();
    let [_, e] = s.redis_keys(&k);
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for garbage in [&b"00000000000000000000RCE9junk"[..], b"short", b""] {
        redis::cmd("SET")
            .arg(&e)
            .arg(garbage)
            .arg("PX")
            .arg(60_000)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let lookup = s.get(&k).await.unwrap();
        assert!(lookup.entry.is_none() && !lookup.degraded);
    }
}

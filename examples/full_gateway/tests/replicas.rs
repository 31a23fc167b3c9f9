//! Two `full_gateway` processes sharing one Redis and one simulated provider: limits, budgets
//! and the cache hold across replicas, and a Redis outage is handled as configured.

// Test code: a failed unwrap is a failed test, also in helpers outside #[test] functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart_mock::{MockConfig, MockProvider, MockServer};
use rampart_redis::testing::RedisServer;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_full_gateway");

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build_http()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A gateway process, killed on drop.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    async fn start(config: &std::path::Path) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(BIN)
            .args([
                "--config",
                config.to_str().unwrap(),
                "--listen",
                &addr.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut replica = Replica { child, addr };
        let c = client();
        for _ in 0..200 {
            if let Ok(Some(status)) = replica.child.try_wait() {
                panic!("gateway exited at start: {status}");
            }
            let req = Request::get(format!("http://{addr}/health"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Ok(resp) = c.request(req).await
                && resp.status() == StatusCode::OK
            {
                return replica;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = replica.child.kill();
        panic!("gateway on {addr} did not become healthy");
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(
    c: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    key: &str,
    body: &str,
) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn chat(c: &HttpClient, addr: SocketAddr, key: &str, body: &str) -> Answer {
    call(c, addr, Method::POST, "/v1/chat/completions", key, body).await
}

const PLAIN: &str =
    r#"{"model":"m1","messages":[{"role":"user","content":"hello"}],"max_tokens":16}"#;

struct Setup {
    redis: RedisServer,
    _mock_server: MockServer,
    mock: MockProvider,
    a: Replica,
    b: Replica,
}

async fn setup(name: &str, redis: RedisServer, state_extra: &str) -> Setup {
    let mock = MockProvider::new(MockConfig::default());
    let mock_server = mock.serve_local().await.unwrap();
    let text = format!(
        r#"
[[providers]]
name = "sim"
kind = "openai"
base_url = "{base}"

[[models]]
name = "m1"
provider = "sim"
price = {{ input = 1000.0, cached_input = 500.0, output = 2000.0 }}

[rate_limits.tenant]
limits = {{ requests_per_minute = 10 }}
overrides = {{ "spender" = {{ requests_per_minute = 100000 }}, "cacher" = {{ requests_per_minute = 100000 }} }}

[router]
budgets.tenants.spender = {{ daily_usd = 1.0, action = "refuse" }}

[cache]
ttl = "10m"

[state]
redis_url = "{redis}"
timeout = "100ms"
breaker_failures = 2
breaker_cooldown = "300ms"
key_prefix = "replicas-{name}"
{state_extra}

[[virtual_keys]]
tenant = "limited"
key_sha256 = "{k1}"

[[virtual_keys]]
tenant = "spender"
key_sha256 = "{k2}"

[[virtual_keys]]
tenant = "cacher"
key_sha256 = "{k3}"
"#,
        base = mock_server.base_url(),
        redis = redis.url(),
        k1 = digest("sk-limited"),
        k2 = digest("sk-spender"),
        k3 = digest("sk-cacher"),
    );
    let dir = std::env::temp_dir().join(format!("rampart-replicas-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let (a, b) = tokio::join!(Replica::start(&path), Replica::start(&path));
    Setup {
        redis,
        _mock_server: mock_server,
        mock,
        a,
        b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_budgets_and_cache_hold_across_two_replicas() {
    let redis = RedisServer::start().await.unwrap();
    let s = setup("shared", redis, "").await;
    let c = client();

    // A tenant limited to 10 requests per minute: 30 concurrent requests split across both
    // replicas, exactly 10 succeed in total.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let addr = if i % 2 == 0 { s.a.addr } else { s.b.addr };
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            chat(&c, addr, "sk-limited", PLAIN).await
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert!(a.header("retry-after").is_some());
                assert!(a.header("x-rampart-degraded").is_none());
            }
            other => panic!("unexpected {other}: {:?}", a.body),
        }
    }
    assert_eq!((ok, limited), (10, 20));
    assert_eq!(s.mock.calls("m1"), 10);

    // A response cached via replica A is a hit on replica B.
    let cached = r#"{"model":"m1","temperature":0,"messages":[{"role":"user","content":"cache me"}],"max_tokens":16}"#;
    let first = chat(&c, s.a.addr, "sk-cacher", cached).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-rampart-cache"), Some("miss"));
    let calls = s.mock.calls("m1");
    // The write to Redis ends after the answer: wait until the entry is there, then B must hit
    // at once. (Asking B earlier could make B miss and store its own answer.)
    for _ in 0..100 {
        if !s.redis.keys("*:cache:*:e:*").await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = chat(&c, s.b.addr, "sk-cacher", cached).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.header("x-rampart-cache"), Some("hit"));
    assert_eq!(second.body, first.body, "the same answer, byte for byte");
    assert_eq!(s.mock.calls("m1"), calls, "the hit made no upstream call");

    // A $1/day budget at $1000/$2000 per million tokens: concurrent requests on both replicas
    // never push the shared spend over the budget (every estimate covers the real cost, so the
    // overshoot bound — the reservations in flight — is zero once everything has settled).
    let mut tasks = Vec::new();
    for i in 0..40 {
        let addr = if i % 2 == 0 { s.a.addr } else { s.b.addr };
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            chat(&c, addr, "sk-spender", PLAIN).await
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYMENT_REQUIRED => refused += 1,
            other => panic!("unexpected {other}: {:?}", a.body),
        }
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    // Settles run when bodies end; wait until no reservation is left, then read the shared
    // spend from each replica: the same figure, within the budget.
    let mut spent = Vec::new();
    for replica in [&s.a, &s.b] {
        let mut last = None;
        for _ in 0..40 {
            let a = call(&c, replica.addr, Method::GET, "/v1/spend", "sk-spender", "").await;
            assert_eq!(a.status, StatusCode::OK);
            let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            let reserved: f64 = v["today"]["reserved_usd"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let day: f64 = v["today"]["spent_usd"].as_str().unwrap().parse().unwrap();
            last = Some(day);
            if reserved == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        spent.push(last.unwrap());
    }
    assert_eq!(spent[0], spent[1], "both replicas see one shared budget");
    assert!(spent[0] <= 1.0, "spent {} over the $1 budget", spent[0]);
    assert!(spent[0] > 0.0);
}

/// Under `local_fallback` (the default for limits), a frozen Redis costs each request at most the
/// Redis timeout, the answer is marked degraded, each replica enforces its share of the limit,
/// and the shared state is used again once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_local_fallback_is_bounded_marked_and_recovers() {
    let redis = RedisServer::start().await.unwrap();
    let s = setup(
        "outage",
        redis,
        "[state.rate_limits]\noutage_policy = \"local_fallback\"\nlocal_fraction = 0.5\n",
    )
    .await;
    let c = client();
    assert_eq!(
        chat(&c, s.a.addr, "sk-cacher", PLAIN).await.status,
        StatusCode::OK
    );

    s.redis.pause().unwrap();
    let mut worst = Duration::ZERO;
    let mut ok = 0;
    for _ in 0..8 {
        let t = Instant::now();
        let a = chat(&c, s.a.addr, "sk-limited", PLAIN).await;
        worst = worst.max(t.elapsed());
        if a.status == StatusCode::OK {
            ok += 1;
            assert!(
                a.header("x-rampart-degraded")
                    .is_some_and(|v| v.contains("ratelimit")),
                "{:?}",
                a.headers
            );
        } else {
            assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    // Local share: half of 10 per minute on this replica.
    assert_eq!(ok, 5, "local fallback at 0.5 of 10 rpm");
    // Each request waits at most for the Redis timeouts of its stores (100 ms each) plus margin.
    assert!(worst < Duration::from_millis(900), "worst {worst:?}");

    s.redis.resume().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut recovered = false;
    for _ in 0..20 {
        let a = chat(&c, s.b.addr, "sk-cacher", PLAIN).await;
        if a.status == StatusCode::OK && a.header("x-rampart-degraded").is_none() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "answers are no longer degraded after Redis resumes"
    );
}

/// Under `fail_closed`, a killed Redis makes limited requests fail fast with an OpenAI-shaped
/// 503 (never a hang, never an unlimited admission), and a restarted Redis is picked up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_fail_closed_refuses_fast_and_recovers_after_restart() {
    let redis = RedisServer::start().await.unwrap();
    let mut s = setup(
        "killed",
        redis,
        "[state.rate_limits]\noutage_policy = \"fail_closed\"\n",
    )
    .await;
    let c = client();
    assert_eq!(
        chat(&c, s.a.addr, "sk-limited", PLAIN).await.status,
        StatusCode::OK
    );

    s.redis.kill().unwrap();
    let calls = s.mock.calls("m1");
    let mut worst = Duration::ZERO;
    for addr in [s.a.addr, s.b.addr, s.a.addr, s.b.addr] {
        let t = Instant::now();
        let a = chat(&c, addr, "sk-limited", PLAIN).await;
        worst = worst.max(t.elapsed());
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", a.body);
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(
            !String::from_utf8_lossy(&a.body).contains("redis://"),
            "no URL leaked"
        );
    }
    assert_eq!(
        s.mock.calls("m1"),
        calls,
        "nothing reached the provider unlimited"
    );
    assert!(worst < Duration::from_millis(900), "worst {worst:?}");

    s.redis.restart().await.unwrap();
    let mut recovered = false;
    for _ in 0..30 {
        if chat(&c, s.a.addr, "sk-limited", PLAIN).await.status == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "admissions resume once Redis is back");
}

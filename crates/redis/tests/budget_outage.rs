#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Redis stopped (`SIGSTOP`) and killed under each budget outage policy, through the
//! `CostRouterLayer`: the documented behaviour, marked `x-rampart-degraded: budget`, no request
//! waiting longer than the Redis timeout plus a small margin, then recovery — and the spend
//! made meanwhile counted in the shared budget once Redis is back.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use rampart_core::error::find_error;
use rampart_core::{Body, BoxError, ChatRequest, Tenant};
use rampart_cost_router::{BudgetLimit, CostRouterConfig, CostRouterHandle, CostRouterLayer};
use rampart_mock::{MockConfig, MockProvider};
use rampart_redis::testing::RedisServer;
use rampart_redis::{OutagePolicy, RedisBudgetConfig, RedisBudgetStore, RedisConfig, RedisState};
use rampart_upstream::{Timeouts, Upstream};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

type Svc = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

const TIMEOUT: Duration = Duration::from_millis(100);
/// Scheduling slack on a shared test machine; a call never waits for Redis longer than
/// `TIMEOUT` + this.
const MARGIN: Duration = Duration::from_millis(250);
/// 2024-01-31T12:00:00Z.
const JAN_31: u64 = 1_706_702_400;
/// What one request reserves (gpt-4.1, "hi", max_tokens 50) and really costs.
const RESERVED: u64 = 430;
const COST: u64 = 416;

enum Outage {
    Pause,
    Kill,
}

struct Gateway {
    svc: Svc,
    handle: CostRouterHandle,
    store: Arc<RedisBudgetStore>,
}

fn gateway(server: &RedisServer, policy: OutagePolicy) -> Gateway {
    let state = RedisState::new(RedisConfig {
        redis_url: server.url(),
        timeout: TIMEOUT,
        breaker_failures: 2,
        breaker_cooldown: Duration::from_millis(300),
        key_prefix: "rampart".to_owned(),
    })
    .unwrap();
    let store = Arc::new(
        RedisBudgetStore::new(
            state,
            RedisBudgetConfig {
                outage_policy: policy,
                // $0.01 a day; alone, a replica may spend $0.001 of it (two requests).
                local_fraction: 0.1,
                ..RedisBudgetConfig::default()
            },
        )
        .unwrap(),
    );
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(0.01));
    let layer = CostRouterLayer::builder()
        .config(cfg)
        .budget_store(store.clone())
        .wall_clock(|| -> SystemTime { UNIX_EPOCH + Duration::from_secs(JAN_31) })
        .build()
        .unwrap();
    let mock = MockProvider::new(MockConfig::default());
    let mut up = Upstream::builder();
    for (m, p) in [
        ("deepseek-v3.2", "deepseek"),
        ("gemini-2.5-flash", "gemini"),
        ("gpt-4.1", "openai"),
        ("claude-sonnet-4.5", "anthropic"),
    ] {
        up = up
            .service_provider(p, mock.service(), Timeouts::default())
            .model(m, p, None);
    }
    Gateway {
        svc: BoxCloneSyncService::new(layer.layer(up.build().unwrap())),
        handle: layer.handle(),
        store,
    }
}

/// What a request came back as.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Served { degraded: bool },
    Refused { code: String, degraded: bool },
}

async fn request(gw: &Gateway) -> (Seen, Duration) {
    let chat = Arc::new(
        ChatRequest::parse(Bytes::from_static(
            br#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#,
        ))
        .unwrap(),
    );
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat);
    req.extensions_mut().insert(Tenant::new("acme"));
    let t = Instant::now();
    let seen = match gw.svc.clone().oneshot(req).await {
        Ok(resp) => {
            assert_eq!(resp.status(), 200);
            let degraded = match resp.headers().get("x-rampart-degraded") {
                Some(v) => {
                    assert_eq!(v, "budget");
                    true
                }
                None => false,
            };
            let _ = resp.into_body().collect().await.unwrap();
            Seen::Served { degraded }
        }
        Err(e) => {
            let e = find_error(&e).unwrap();
            let degraded = e.headers().get("x-rampart-degraded").is_some();
            Seen::Refused {
                code: e.code().unwrap().into_owned(),
                degraded,
            }
        }
    };
    (seen, t.elapsed())
}

async fn run(policy: OutagePolicy, outage: Outage) {
    let mut server = RedisServer::start().await.unwrap();
    let gw = gateway(&server, policy);
    assert_eq!(request(&gw).await.0, Seen::Served { degraded: false });
    let mut served = 1;
    settled(&gw, served, "before the outage").await;

    match outage {
        Outage::Pause => server.pause().unwrap(),
        Outage::Kill => {
            server.kill().unwrap();
            // Redis restarts empty (no persistence): only what is settled later counts.
            served = 0;
        }
    }
    let mut during = Vec::new();
    for _ in 0..5 {
        let (seen, took) = request(&gw).await;
        assert!(
            took < TIMEOUT + MARGIN,
            "{policy:?}: a request took {took:?}"
        );
        during.push(seen);
    }
    let open = Seen::Served { degraded: true };
    let expected = match policy {
        // The replica's own share: $0.001 holds two requests (416 + 430 <= 1000), not three.
        OutagePolicy::LocalFallback => {
            let refused = Seen::Refused {
                code: "budget_exceeded".to_owned(),
                degraded: true,
            };
            vec![
                open.clone(),
                open,
                refused.clone(),
                refused.clone(),
                refused,
            ]
        }
        OutagePolicy::FailOpen => vec![open; 5],
        OutagePolicy::FailClosed => {
            let closed = Seen::Refused {
                code: "state_store_unavailable".to_owned(),
                degraded: true,
            };
            vec![closed; 5]
        }
    };
    assert_eq!(during, expected, "{policy:?}");
    let outage_served = during
        .iter()
        .filter(|s| matches!(s, Seen::Served { .. }))
        .count() as u64;
    served += outage_served;
    if outage_served > 0 {
        // Their settles (run when each response ended) wait for Redis.
        let mut waiting = 0;
        for _ in 0..50 {
            waiting = gw.store.pending_settles();
            if waiting as u64 == outage_served {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(waiting as u64, outage_served, "{policy:?}");
    }

    match outage {
        Outage::Pause => server.resume().unwrap(),
        Outage::Kill => server.restart().await.unwrap(),
    }
    // Recovery is automatic: the breaker's probe goes through after its cooldown.
    let mut recovered = false;
    for _ in 0..50 {
        let (seen, took) = request(&gw).await;
        assert!(
            took < TIMEOUT + MARGIN,
            "{policy:?}: a request took {took:?}"
        );
        if let Seen::Served { .. } = seen {
            served += 1;
        }
        if seen == (Seen::Served { degraded: false }) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "{policy:?}: not recovered");

    // The shared budget ends up exact: the settles made while Redis was away have been sent,
    // and no reservation is left held (a reserve that ran late in Redis was settled or
    // cancelled).
    settled(&gw, served, &format!("{policy:?}")).await;
}

/// Waits (bounded) until the shared budget shows `served` requests settled and nothing held.
async fn settled(gw: &Gateway, served: u64, what: &str) {
    let mut last = None;
    for _ in 0..100 {
        let b = gw.handle.budget("acme").await.unwrap();
        if gw.store.pending_settles() == 0 && b.day_reserved == 0 && b.day_spent == served * COST {
            return;
        }
        last = Some(b);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: served {served} (reserved {RESERVED} each), budget {last:?}");
}

#[tokio::test]
async fn paused_redis_local_fallback_spends_the_replicas_share() {
    run(OutagePolicy::LocalFallback, Outage::Pause).await;
}

#[tokio::test]
async fn paused_redis_fail_open_admits_marked_degraded() {
    run(OutagePolicy::FailOpen, Outage::Pause).await;
}

#[tokio::test]
async fn paused_redis_fail_closed_refuses_with_503() {
    run(OutagePolicy::FailClosed, Outage::Pause).await;
}

#[tokio::test]
async fn killed_redis_local_fallback_spends_the_replicas_share() {
    run(OutagePolicy::LocalFallback, Outage::Kill).await;
}

#[tokio::test]
async fn killed_redis_fail_open_admits_marked_degraded() {
    run(OutagePolicy::FailOpen, Outage::Kill).await;
}

#[tokio::test]
async fn killed_redis_fail_closed_refuses_with_503() {
    run(OutagePolicy::FailClosed, Outage::Kill).await;
}

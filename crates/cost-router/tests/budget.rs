#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Budgets: calendar windows on an injected clock, refusal and downgrade at the limit, the
//! global scope, store failures, and concurrent requests racing for the last dollar. The store's
//! own behaviour is the shared suite (`store_suite.rs`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rampart_core::MicroUsd;
use rampart_cost_router::{
    BudgetAction, BudgetLimit, BudgetStore, CostRouterConfig, CostRouterLayer, MemoryBudgetStore,
    Periods, ReservationId, ReserveOutcome, ReserveReply, ScopeLimit, ScopeSpend, StoreError,
    StoreFailure, StoreFuture,
};
use rampart_mock::{MockConfig, MockProvider};

fn scope(name: &str, daily: Option<MicroUsd>, monthly: Option<MicroUsd>) -> ScopeLimit {
    ScopeLimit {
        scope: name.into(),
        daily,
        monthly,
    }
}

fn at(secs: u64) -> Periods {
    Periods::at(UNIX_EPOCH + Duration::from_secs(secs))
}

/// 2024-01-31T12:00:00Z.
const JAN_31: u64 = 1_706_702_400;

#[test]
fn periods_follow_the_utc_calendar() {
    let p = at(JAN_31);
    assert_eq!(p.day, JAN_31 / 86_400);
    assert_eq!(p.month, 2024 * 12);
    let feb1 = at(JAN_31 + 12 * 3600);
    assert_eq!(feb1.day, p.day + 1);
    assert_eq!(feb1.month, 2024 * 12 + 1);
    // 2024-02-29 (leap day) is still February; 2024-03-01 is March.
    assert_eq!(at(1_709_208_000).month, 2024 * 12 + 1);
    assert_eq!(at(1_709_294_400).month, 2024 * 12 + 2);
    // 1999-12-31T23:59:59Z and 2000-01-01T00:00:00Z.
    assert_eq!(at(946_684_799).month, 1999 * 12 + 11);
    assert_eq!(at(946_684_800).month, 2000 * 12);
}

async fn spend(store: &MemoryBudgetStore, s: &str, p: Periods) -> ScopeSpend {
    store.spend(s, p).await.unwrap()
}

#[tokio::test]
async fn store_in_memory_never_oversubscribes_under_races() {
    let store = Arc::new(MemoryBudgetStore::new());
    let p = at(JAN_31);
    let limit = 100_000;
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let store = store.clone();
        tasks.push(std::thread::spawn(move || {
            let s = [scope("tenant:x", Some(limit), None)];
            let mut granted = 0;
            for i in 0..2000u64 {
                let amount = 1 + (t * 7 + i * 13) % 97;
                let reply = store
                    .reserve(ReservationId::random(), &s, amount, p)
                    .into_ready();
                if let Ok(Ok(ReserveReply {
                    outcome: ReserveOutcome::Reserved,
                    degraded: false,
                })) = reply
                {
                    granted += amount;
                }
            }
            granted
        }));
    }
    let granted: u64 = tasks.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(granted <= limit, "{granted}");
    let s = spend(&store, "tenant:x", p).await;
    assert_eq!(s.day_reserved, granted);
    assert!(granted > limit - 97);
}

fn clock(
    start: u64,
) -> (
    Arc<AtomicU64>,
    impl Fn() -> SystemTime + Send + Sync + 'static,
) {
    let secs = Arc::new(AtomicU64::new(start));
    let s = secs.clone();
    (secs, move || {
        UNIX_EPOCH + Duration::from_secs(s.load(Ordering::SeqCst))
    })
}

fn layer_with(
    cfg: CostRouterConfig,
    start: u64,
) -> (CostRouterLayer, Arc<AtomicU64>, MockProvider, Svc) {
    let (secs, wall) = clock(start);
    let layer = CostRouterLayer::builder()
        .config(cfg)
        .wall_clock(wall)
        .build()
        .unwrap();
    let mock = MockProvider::new(MockConfig::default());
    let svc = stack(&layer, &mock);
    (layer, secs, mock, svc)
}

/// Estimate of `body` on gpt-4.1 with `out` output tokens.
fn gpt_estimate(b: &str, out: u64) -> u64 {
    parse(b).estimate_prompt_tokens() * 2 + out * 8
}

#[tokio::test]
async fn refuses_at_the_limit_with_429_or_402() {
    for status in [429u16, 402] {
        let mut cfg = CostRouterConfig::default();
        cfg.budgets
            .tenants
            .insert("acme".into(), BudgetLimit::daily(0.001).status(status));
        let (layer, _secs, mock, svc) = layer_with(cfg, JAN_31);
        let b = body("gpt-4.1", "hi", Some(50));
        let est = gpt_estimate(&b, 50);
        assert_eq!(est, 30 + 400);
        // 1000 micro-USD: the first two fit (430 reserved each, settled at 8×2 + 50×8 = 416).
        for _ in 0..2 {
            let resp = call(&svc, req_for(Some("acme"), &b)).await.unwrap();
            assert_eq!(resp.headers()["x-rampart-cost-usd"], "0.000416");
        }
        let err = call(&svc, req_for(Some("acme"), &b)).await.unwrap_err();
        let e = gateway_error(&err);
        assert_eq!(e.status().as_u16(), status);
        assert_eq!(e.code().unwrap(), "budget_exceeded");
        assert!(e.is_refusal());
        assert!(
            e.message().contains("acme") && e.message().contains("daily"),
            "{}",
            e.message()
        );
        assert_eq!(mock.calls("gpt-4.1"), 2, "refused before any upstream call");
        // Other tenants are not limited (no default budget).
        assert!(call(&svc, req_for(Some("other"), &b)).await.is_ok());
        let state = layer.handle().budget("acme").await.unwrap();
        assert_eq!((state.day_spent, state.day_reserved), (832, 0));
    }
}

#[tokio::test]
async fn downgrades_to_the_cheapest_model_that_fits() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(0.001).action(BudgetAction::Downgrade));
    let (layer, _secs, mock, svc) = layer_with(cfg, JAN_31);
    let b = body("gpt-4.1", "hi", Some(100));
    // gpt-4.1 estimate 30 + 800 = 830 fits the first time.
    let resp = call(&svc, req_for(Some("acme"), &b)).await.unwrap();
    assert_eq!(resp.headers()["x-rampart-route"], "explicit");
    assert_eq!(resp.headers()["x-rampart-cost-usd"], "0.000816");
    // 184 left: gpt-4.1 does not fit; deepseek (15 × 0.28 + 100 × 0.42 = 46.2 → 47) does.
    let resp = call(&svc, req_for(Some("acme"), &b)).await.unwrap();
    assert_eq!(
        resp.headers()["x-rampart-route"],
        "explicit;downgraded=budget"
    );
    assert_eq!(resp.headers()["x-rampart-model"], "deepseek-v3.2");
    assert_eq!(mock.calls("deepseek-v3.2"), 1);
    assert_eq!(
        mock.last_request().unwrap().json().unwrap()["model"],
        "deepseek-v3.2"
    );
    // Routed requests keep their label with the suffix.
    let resp = call(&svc, req_for(Some("acme"), &body("smart", "hi", Some(100))))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-rampart-route"],
        "group:smart:simple:cheapest;downgraded=budget"
    );
    // When not even the cheapest fits: refused.
    let mut refused = false;
    for _ in 0..10 {
        if let Err(e) = call(&svc, req_for(Some("acme"), &b)).await {
            assert_eq!(gateway_error(&e).code().unwrap(), "budget_exceeded");
            refused = true;
            break;
        }
    }
    assert!(refused);
    let state = layer.handle().budget("acme").await.unwrap();
    assert!(state.day_spent <= 1000, "{state:?}");
}

#[tokio::test]
async fn daily_limit_resets_next_utc_day_monthly_at_month_end() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit {
        daily_usd: Some(0.0005),
        monthly_usd: Some(0.001),
        ..BudgetLimit::default()
    });
    // 2024-01-30T12:00Z.
    let (_layer, secs, _mock, svc) = layer_with(cfg, JAN_31 - 86_400);
    let b = body("gpt-4.1", "hi", Some(50)); // 430 reserved, 416 spent
    assert!(call(&svc, req_for(Some("a"), &b)).await.is_ok());
    let err = call(&svc, req_for(Some("a"), &b)).await.unwrap_err();
    assert!(gateway_error(&err).message().contains("daily"), "{err}");
    secs.fetch_add(86_400, Ordering::SeqCst); // Jan 31: new day, same month (416 of 1000 spent)
    assert!(call(&svc, req_for(Some("a"), &b)).await.is_ok());
    assert!(call(&svc, req_for(Some("a"), &b)).await.is_err());
    secs.fetch_add(86_400, Ordering::SeqCst); // Feb 1: January's 832 no longer counts
    assert!(call(&svc, req_for(Some("a"), &b)).await.is_ok());
    secs.fetch_add(86_400, Ordering::SeqCst); // Feb 2: 416 + 430 fits the month
    assert!(call(&svc, req_for(Some("a"), &b)).await.is_ok());
    secs.fetch_add(86_400, Ordering::SeqCst); // Feb 3: the day has room, the month has not
    let err = call(&svc, req_for(Some("a"), &b)).await.unwrap_err();
    assert!(gateway_error(&err).message().contains("monthly"), "{err}");
}

#[tokio::test]
async fn global_budget_limits_everyone() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.global = Some(BudgetLimit::daily(0.001).status(402));
    let (layer, _secs, _mock, svc) = layer_with(cfg, JAN_31);
    let b = body("gpt-4.1", "hi", Some(50));
    assert!(call(&svc, req_for(Some("a"), &b)).await.is_ok());
    assert!(call(&svc, req_for(Some("b"), &b)).await.is_ok());
    let err = call(&svc, req_for(Some("c"), &b)).await.unwrap_err();
    let e = gateway_error(&err);
    assert_eq!(e.status(), 402);
    assert!(e.message().contains("gateway"), "{}", e.message());
    assert_eq!(layer.handle().global_budget().await.unwrap().day_spent, 832);
}

struct Broken;
impl BudgetStore for Broken {
    fn reserve(
        &self,
        _: ReservationId,
        _: &[ScopeLimit],
        _: MicroUsd,
        _: Periods,
    ) -> StoreFuture<Result<ReserveReply, StoreError>> {
        StoreFuture::Boxed(Box::pin(async { Err(StoreError("down".into())) }))
    }
    fn settle(
        &self,
        _: ReservationId,
        _: &[Arc<str>],
        _: Periods,
        _: MicroUsd,
    ) -> StoreFuture<Result<(), StoreError>> {
        StoreFuture::ready(Err(StoreError("down".into())))
    }
    fn spend(&self, _: &str, _: Periods) -> StoreFuture<Result<ScopeSpend, StoreError>> {
        StoreFuture::ready(Err(StoreError("down".into())))
    }
}

#[tokio::test]
async fn store_failures_follow_the_policy() {
    for (policy, ok) in [
        (StoreFailure::FailOpen, true),
        (StoreFailure::FailClosed, false),
    ] {
        let mut cfg = CostRouterConfig::default();
        cfg.budgets.default = Some(BudgetLimit::daily(1.0));
        cfg.budgets.on_store_error = policy;
        let layer = CostRouterLayer::builder()
            .config(cfg)
            .budget_store(Arc::new(Broken))
            .build()
            .unwrap();
        let mock = MockProvider::new(MockConfig::default());
        let svc = stack(&layer, &mock);
        let r = call(&svc, req_for(Some("a"), &body("gpt-4.1", "hi", Some(5)))).await;
        assert_eq!(r.is_ok(), ok);
        match r {
            Err(e) => {
                let e = gateway_error(&e);
                assert_eq!(e.status(), 503);
                assert_eq!(e.code().unwrap(), "state_store_unavailable");
                assert_eq!(e.headers()["x-rampart-degraded"], "budget");
            }
            Ok(resp) => {
                // Never silent: the response says the budget was not enforced.
                assert_eq!(resp.headers()["x-rampart-degraded"], "budget");
                assert!(layer.handle().spend("a") > 0, "spend totals still count");
            }
        }
    }
}

/// A store with an outage policy of its own: its errors mean "refuse", whatever the layer's
/// `on_store_error` says.
struct ClosedBroken;
impl BudgetStore for ClosedBroken {
    fn reserve(
        &self,
        id: ReservationId,
        s: &[ScopeLimit],
        a: MicroUsd,
        p: Periods,
    ) -> StoreFuture<Result<ReserveReply, StoreError>> {
        Broken.reserve(id, s, a, p)
    }
    fn settle(
        &self,
        id: ReservationId,
        s: &[Arc<str>],
        p: Periods,
        a: MicroUsd,
    ) -> StoreFuture<Result<(), StoreError>> {
        Broken.settle(id, s, p, a)
    }
    fn spend(&self, s: &str, p: Periods) -> StoreFuture<Result<ScopeSpend, StoreError>> {
        Broken.spend(s, p)
    }
    fn error_policy(&self) -> Option<StoreFailure> {
        Some(StoreFailure::FailClosed)
    }
}

#[tokio::test]
async fn a_store_with_its_own_policy_overrides_on_store_error() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(1.0));
    cfg.budgets.on_store_error = StoreFailure::FailOpen;
    let layer = CostRouterLayer::builder()
        .config(cfg)
        .budget_store(Arc::new(ClosedBroken))
        .build()
        .unwrap();
    let mock = MockProvider::new(MockConfig::default());
    let svc = stack(&layer, &mock);
    let err = call(&svc, req_for(Some("a"), &body("gpt-4.1", "hi", Some(5))))
        .await
        .unwrap_err();
    assert_eq!(
        gateway_error(&err).code().unwrap(),
        "state_store_unavailable"
    );
    assert_eq!(mock.calls("gpt-4.1"), 0);
}

/// A store answering from a fallback of its own (as a shared store does while its server is
/// unreachable): every reply is degraded.
#[derive(Default)]
struct Fallback(MemoryBudgetStore);
impl BudgetStore for Fallback {
    fn reserve(
        &self,
        id: ReservationId,
        s: &[ScopeLimit],
        a: MicroUsd,
        p: Periods,
    ) -> StoreFuture<Result<ReserveReply, StoreError>> {
        match self.0.reserve(id, s, a, p).into_ready() {
            Ok(Ok(r)) => StoreFuture::ready(Ok(ReserveReply::degraded(r.outcome))),
            Ok(Err(e)) => StoreFuture::ready(Err(e)),
            Err(f) => f,
        }
    }
    fn settle(
        &self,
        id: ReservationId,
        s: &[Arc<str>],
        p: Periods,
        a: MicroUsd,
    ) -> StoreFuture<Result<(), StoreError>> {
        self.0.settle(id, s, p, a)
    }
    fn spend(&self, s: &str, p: Periods) -> StoreFuture<Result<ScopeSpend, StoreError>> {
        self.0.spend(s, p)
    }
}

#[tokio::test]
async fn degraded_budget_answers_are_marked_on_success_and_refusal() {
    let mut cfg = CostRouterConfig::default();
    cfg.budgets.default = Some(BudgetLimit::daily(0.001));
    let (_secs, wall) = clock(JAN_31);
    let layer = CostRouterLayer::builder()
        .config(cfg)
        .wall_clock(wall)
        .budget_store(Arc::new(Fallback::default()))
        .build()
        .unwrap();
    let mock = MockProvider::new(MockConfig::default());
    let svc = stack(&layer, &mock);
    let b = body("gpt-4.1", "hi", Some(50)); // 430 reserved, 416 spent
    for _ in 0..2 {
        let resp = call(&svc, req_for(Some("acme"), &b)).await.unwrap();
        assert_eq!(resp.headers()["x-rampart-degraded"], "budget");
        assert_eq!(resp.headers()["x-rampart-cost-usd"], "0.000416");
    }
    let err = call(&svc, req_for(Some("acme"), &b)).await.unwrap_err();
    let e = gateway_error(&err);
    assert_eq!(e.code().unwrap(), "budget_exceeded");
    assert_eq!(e.headers()["x-rampart-degraded"], "budget");
    // Healthy answers carry no such header.
    let layer = CostRouterLayer::builder().build().unwrap();
    let svc = stack(&layer, &mock);
    let resp = call(&svc, req_for(Some("acme"), &b)).await.unwrap();
    assert!(resp.headers().get("x-rampart-degraded").is_none());
}

#[test]
fn concurrent_requests_race_for_the_last_dollar() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = CostRouterConfig::default();
        let limit: u64 = 10_000; // $0.01
        cfg.budgets.default = Some(BudgetLimit::daily(0.01));
        let layer = CostRouterLayer::from_config(cfg).unwrap();
        let mock = MockProvider::new(MockConfig {
            latency: rampart_mock::Latency::fixed(Duration::from_millis(5)),
            ..MockConfig::default()
        });
        let svc = stack(&layer, &mock);
        let handle = layer.handle();
        let b = body("gpt-4.1", "hi", Some(50)); // 430 reserved, 416 spent
        let max_in_flight = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let svc = svc.clone();
            let b = b.clone();
            let handle = handle.clone();
            let max_in_flight = max_in_flight.clone();
            tasks.push(tokio::spawn(async move {
                let r = call(&svc, req_for(Some("race"), &b)).await;
                // While this one is in flight, spent + reserved never exceeds the limit.
                let s = handle.budget("race").await.unwrap();
                assert!(s.day_spent + s.day_reserved <= limit, "{s:?}");
                max_in_flight.fetch_max(s.day_reserved, Ordering::SeqCst);
                match r {
                    Ok(resp) => {
                        let cost = resp.headers()["x-rampart-cost-usd"]
                            .to_str()
                            .unwrap()
                            .to_owned();
                        let _ = bytes(resp).await;
                        Some(cost)
                    }
                    Err(e) => {
                        assert_eq!(gateway_error(&e).code().unwrap(), "budget_exceeded");
                        None
                    }
                }
            }));
        }
        let mut served = 0u64;
        for t in tasks {
            if t.await.unwrap().is_some() {
                served += 1;
            }
        }
        let spent = handle.spend("race");
        let state = handle.budget("race").await.unwrap();
        assert_eq!(state.day_reserved, 0, "every reservation settled");
        assert_eq!(spent, served * 416);
        assert_eq!(state.day_spent, spent);
        // Never more than the limit: estimates (430) cover the real cost (416), and reservations
        // in flight count before anyone else is admitted.
        assert!(spent <= limit, "{spent}");
        // At least as many as fit when all reserve at once (430 each); never more than the real
        // costs allow (416 each, when settles free room for late starters).
        assert!(served >= limit / 430 && served <= limit / 416, "{served}");
        assert_eq!(mock.calls("gpt-4.1"), served);
    });
}

//! Budget decision latency, Redis against memory, in the same run: one reservation across a
//! tenant and the global scope (day and month windows) and its settle — what `CostRouterLayer`
//! does per request with budgets on. The Redis side is two round trips (one script each) to a
//! throw-away `redis-server` on loopback, started by the bench.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use divan::Bencher;
use rampart_cost_router::{
    BudgetStore, MemoryBudgetStore, Periods, ReservationId, ReserveOutcome, ScopeLimit,
};
use rampart_redis::testing::RedisServer;
use rampart_redis::{RedisBudgetConfig, RedisBudgetStore, RedisConfig, RedisState};

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn tenants(n: usize) -> Vec<(Vec<ScopeLimit>, Vec<Arc<str>>)> {
    (0..n)
        .map(|i| {
            let tenant: Arc<str> = format!("tenant:{i}").into();
            let limits = vec![
                ScopeLimit {
                    scope: tenant.clone(),
                    daily: Some(u64::MAX / 4),
                    monthly: Some(u64::MAX / 4),
                },
                ScopeLimit {
                    scope: "global".into(),
                    daily: None,
                    monthly: Some(u64::MAX / 4),
                },
            ];
            (limits, vec![tenant, "global".into()])
        })
        .collect()
}

fn reserve_settle(
    bencher: Bencher,
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn BudgetStore>,
    n: usize,
) {
    let tenants = tenants(n);
    let at = Periods::at(SystemTime::now());
    let next = AtomicUsize::new(0);
    bencher.bench_local(|| {
        let (limits, scopes) = &tenants[next.fetch_add(1, Ordering::Relaxed) % tenants.len()];
        rt.block_on(async {
            let id = ReservationId::random();
            let reply = store.reserve(id, limits, 430, at).await.unwrap();
            assert_eq!(reply.outcome, ReserveOutcome::Reserved);
            store.settle(id, scopes, at, 416).await.unwrap();
        });
    });
}

#[divan::bench(args = [1, 1000], sample_count = 100, sample_size = 20)]
fn reserve_settle_memory(bencher: Bencher, n: usize) {
    let rt = runtime();
    reserve_settle(bencher, &rt, Arc::new(MemoryBudgetStore::new()), n);
}

#[divan::bench(args = [1, 1000], sample_count = 100, sample_size = 20)]
fn reserve_settle_redis(bencher: Bencher, n: usize) {
    let rt = runtime();
    let (_server, store) = rt.block_on(async {
        let server = RedisServer::start().await.unwrap();
        let state = RedisState::new(RedisConfig {
            redis_url: server.url(),
            timeout: Duration::from_secs(1),
            ..RedisConfig::default()
        })
        .unwrap();
        let store = RedisBudgetStore::new(state, RedisBudgetConfig::default()).unwrap();
        (server, Arc::new(store))
    });
    reserve_settle(bencher, &rt, store, n);
}

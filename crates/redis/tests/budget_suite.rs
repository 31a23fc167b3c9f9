#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The budget store suite (`rampart_cost_router::testing`) against Redis: the same cases the
//! in-memory store passes, each on a fresh redis-server.

use std::sync::Arc;
use std::time::Duration;

use rampart_cost_router::BudgetStore;
use rampart_redis::testing::RedisServer;
use rampart_redis::{RedisBudgetConfig, RedisBudgetStore, RedisConfig, RedisState};

async fn redis() -> (Arc<dyn BudgetStore>, RedisServer) {
    let server = RedisServer::start().await.unwrap();
    let state = RedisState::new(RedisConfig {
        redis_url: server.url(),
        // Generous: the suite checks behaviour, not latency, on a busy test machine.
        timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    })
    .unwrap();
    let store = RedisBudgetStore::new(state, RedisBudgetConfig::default()).unwrap();
    (Arc::new(store), server)
}

rampart_cost_router::budget_store_suite!(redis);

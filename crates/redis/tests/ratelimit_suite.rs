//! The rate-limit store suite (`rampart_ratelimit::testing`, also run against the in-memory
//! store) against Redis: a throw-away redis-server per case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use rampart_ratelimit::RateLimitStore;
use rampart_redis::testing::RedisServer;
use rampart_redis::{RedisConfig, RedisRateLimitConfig, RedisRateLimitStore, RedisState};

async fn redis() -> (Arc<dyn RateLimitStore>, RedisServer) {
    let server = RedisServer::start().await.unwrap();
    let state = RedisState::new(RedisConfig {
        redis_url: server.url(),
        // Generous: these cases are about behaviour, not outages, on a busy machine.
        timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    })
    .unwrap();
    let store = RedisRateLimitStore::new(state, RedisRateLimitConfig::default()).unwrap();
    (Arc::new(store), server)
}

rampart_ratelimit::store_suite!(redis);

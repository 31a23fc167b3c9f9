#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The cache store suite (`rampart_cache::testing`) against Redis, each case on a fresh
//! redis-server: once with Redis alone (every read a round trip) and once with the memory tier
//! in front.

use std::sync::Arc;
use std::time::Duration;

use rampart_cache::CacheStore;
use rampart_redis::cache::MemoryTierConfig;
use rampart_redis::testing::RedisServer;
use rampart_redis::{RedisCacheConfig, RedisCacheStore, RedisConfig, RedisState};

async fn store(tier: bool) -> (Arc<dyn CacheStore>, RedisServer) {
    let server = RedisServer::start().await.unwrap();
    let state = RedisState::new(RedisConfig {
        redis_url: server.url(),
        // Generous: the suite checks behaviour, not latency, on a busy test machine.
        timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    })
    .unwrap();
    let config = RedisCacheConfig {
        memory: MemoryTierConfig {
            enabled: tier,
            ..MemoryTierConfig::default()
        },
        ..RedisCacheConfig::default()
    };
    (
        Arc::new(RedisCacheStore::new(state, config).unwrap()),
        server,
    )
}

mod redis_only {
    async fn make() -> (
        std::sync::Arc<dyn rampart_cache::CacheStore>,
        super::RedisServer,
    ) {
        super::store(false).await
    }
    rampart_cache::cache_store_suite!(make);
}

mod with_memory_tier {
    async fn make() -> (
        std::sync::Arc<dyn rampart_cache::CacheStore>,
        super::RedisServer,
    ) {
        super::store(true).await
    }
    rampart_cache::cache_store_suite!(make);
}

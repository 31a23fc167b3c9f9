#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The cache store suite (`rampart_cache::testing`) against the in-memory store; the Redis
//! store runs the same suite in `rampart-redis`.

use std::sync::Arc;
use std::time::Duration;

use rampart_cache::{CacheStore, MemoryStore};

async fn memory() -> (Arc<dyn CacheStore>, ()) {
    (
        Arc::new(MemoryStore::new(16 << 20, Duration::from_secs(3600))),
        (),
    )
}

rampart_cache::cache_store_suite!(memory);

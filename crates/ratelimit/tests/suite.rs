//! The store suite (`rampart_ratelimit::testing`) against the in-memory store; `rampart-redis`
//! runs the same suite against Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use rampart_ratelimit::{MemoryStore, RateLimitStore};

async fn memory() -> (Arc<dyn RateLimitStore>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

rampart_ratelimit::store_suite!(memory);

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! How the layer treats a store that fails or answers degraded: never a failed request, never
//! silent (`x-rampart-degraded: cache`), and the store's own policy (miss or bypass) decides.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rampart_cache::{
    CacheEntry, CacheKey, CacheLayer, CacheStore, Lookup, MemoryStore, StoreError, StoreFailure,
    StoreFuture, StoreStats,
};

/// Every lookup fails; puts are counted.
struct Down {
    policy: StoreFailure,
    puts: AtomicUsize,
}

impl CacheStore for Down {
    fn get<'a>(&'a self, _: &'a CacheKey) -> StoreFuture<'a, Lookup> {
        Box::pin(async { Err(StoreError("down".into())) })
    }
    fn put(&self, _: CacheKey, _: Arc<CacheEntry>) -> StoreFuture<'_, ()> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(StoreError("down".into())) })
    }
    fn remove<'a>(&'a self, _: &'a CacheKey) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(StoreError("down".into())) })
    }
    fn purge_namespace<'a>(&'a self, _: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(StoreError("down".into())) })
    }
    fn purge_all(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Err(StoreError("down".into())) })
    }
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
    fn error_policy(&self) -> StoreFailure {
        self.policy
    }
}

#[tokio::test]
async fn a_failing_store_is_a_miss_or_a_bypass_as_its_policy_says() {
    for (policy, status, stores) in [
        (StoreFailure::FailOpen, "miss", 1),
        (StoreFailure::FailClosed, "bypass", 0),
    ] {
        let store = Arc::new(Down {
            policy,
            puts: AtomicUsize::new(0),
        });
        let layer = CacheLayer::builder().store(store.clone()).build().unwrap();
        let s = setup(layer);
        let b = body("m1", "hello");
        for _ in 0..2 {
            let resp = call(&s.svc, req(&b, "acme")).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(self::status(&resp), status);
            assert_eq!(resp.headers()["x-rampart-degraded"], "cache");
            let _ = bytes(resp).await;
        }
        // Both requests went upstream (nothing could be served), and only a miss tries to
        // store its answer.
        assert_eq!(s.mock.calls("m1"), 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.puts.load(Ordering::SeqCst), 2 * stores, "{policy:?}");
    }
}

/// Answers from a memory store but says it did so without its shared state.
struct Fallback(MemoryStore);

impl CacheStore for Fallback {
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            let found = self.0.get(key).await?;
            Ok(Lookup::degraded(found.entry))
        })
    }
    fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> StoreFuture<'_, ()> {
        self.0.put(key, entry)
    }
    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, ()> {
        self.0.remove(key)
    }
    fn purge_namespace<'a>(&'a self, ns: &'a str) -> StoreFuture<'a, ()> {
        self.0.purge_namespace(ns)
    }
    fn purge_all(&self) -> StoreFuture<'_, ()> {
        self.0.purge_all()
    }
    fn stats(&self) -> StoreStats {
        self.0.stats()
    }
}

#[tokio::test]
async fn degraded_lookups_mark_misses_and_hits() {
    let store = Arc::new(Fallback(MemoryStore::new(1 << 20, Duration::from_secs(60))));
    let layer = CacheLayer::builder().store(store).build().unwrap();
    let s = setup(layer);
    let b = body("m1", "hello");
    let resp = call(&s.svc, req(&b, "acme")).await.unwrap();
    assert_eq!(status(&resp), "miss");
    assert_eq!(resp.headers()["x-rampart-degraded"], "cache");
    let _ = bytes(resp).await;
    let mut served = None;
    for _ in 0..50 {
        let resp = call(&s.svc, req(&b, "acme")).await.unwrap();
        if status(&resp) == "hit" {
            served = Some(resp);
            break;
        }
        let _ = bytes(resp).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hit = served.expect("a hit");
    assert_eq!(hit.headers()["x-rampart-degraded"], "cache");
    // A healthy store's answers carry no such header.
    let s = setup(CacheLayer::default());
    let resp = call(&s.svc, req(&b, "acme")).await.unwrap();
    assert!(resp.headers().get("x-rampart-degraded").is_none());
}

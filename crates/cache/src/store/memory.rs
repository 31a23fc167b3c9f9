//! [`MemoryStore`]: a moka cache bounded by bytes.

use std::sync::Arc;
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::{CacheStore, Lookup, StoreError, StoreFuture, StoreStats};
use crate::entry::CacheEntry;
use crate::key::CacheKey;

/// The in-memory store: entries weighed in bytes ([`CacheEntry::weight`]) under a byte bound,
/// least recently used evicted first. Entries also leave after `max_ttl` of wall-clock time (to
/// free memory); exact freshness is checked by the layer on the tokio clock.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<CacheKey, Arc<CacheEntry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .finish()
    }
}

impl MemoryStore {
    /// A store of at most `max_bytes`, whose entries live at most `max_ttl`.
    pub fn new(max_bytes: u64, max_ttl: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &CacheKey, v: &Arc<CacheEntry>| {
                u32::try_from(v.weight()).unwrap_or(u32::MAX)
            })
            .time_to_live(max_ttl)
            .eviction_policy(EvictionPolicy::lru())
            .support_invalidation_closures()
            .build();
        Self { cache }
    }

    fn sync_stats(&self) -> StoreStats {
        self.cache.run_pending_tasks();
        StoreStats {
            entries: self.cache.entry_count(),
            weighted_size: self.cache.weighted_size(),
        }
    }
}

impl CacheStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Lookup> {
        let v = self.cache.get(key);
        Box::pin(std::future::ready(Ok(Lookup::found(v))))
    }

    fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> StoreFuture<'_, ()> {
        self.cache.insert(key, entry);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, ()> {
        self.cache.invalidate(key);
        Box::pin(std::future::ready(Ok(())))
    }

    fn purge_namespace<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, ()> {
        let ns: Arc<str> = namespace.into();
        let r = self
            .cache
            .invalidate_entries_if(move |k, _| k.namespace() == &*ns)
            .map(|_| ())
            .map_err(|e| StoreError(e.to_string()));
        self.cache.run_pending_tasks();
        Box::pin(std::future::ready(r))
    }

    fn purge_all(&self) -> StoreFuture<'_, ()> {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
        Box::pin(std::future::ready(Ok(())))
    }

    fn stats(&self) -> StoreStats {
        self.sync_stats()
    }
}

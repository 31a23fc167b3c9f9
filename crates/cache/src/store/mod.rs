//! Where entries live: the [`CacheStore`] trait and the in-memory [`MemoryStore`] (the
//! default). A shared store (Redis) implements the same trait.

mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use memory::MemoryStore;

use crate::entry::CacheEntry;
use crate::key::CacheKey;

/// The future of a store operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store failed (a shared store unreachable, a bad entry). The layer then follows the store's
/// [`CacheStore::error_policy`]: a miss (default) or a bypass; it never fails the request.
#[derive(Debug, thiserror::Error)]
#[error("cache store error: {0}")]
pub struct StoreError(pub String);

/// Size figures of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Entries held (expired entries not yet evicted included).
    pub entries: u64,
    /// Their total weight in bytes.
    pub weighted_size: u64,
}

/// What a lookup found.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The entry under the key, if any (the layer checks its freshness and request).
    pub entry: Option<Arc<CacheEntry>>,
    /// Answered without the store's shared state (a shared store unreachable, answering from
    /// its memory tier or as a miss under its outage policy): the layer marks the response
    /// `x-rampart-degraded: cache`.
    pub degraded: bool,
}

impl Lookup {
    /// A lookup answered by the store's own state.
    pub fn found(entry: Option<Arc<CacheEntry>>) -> Self {
        Self {
            entry,
            degraded: false,
        }
    }

    /// A lookup answered without the store's shared state.
    pub fn degraded(entry: Option<Arc<CacheEntry>>) -> Self {
        Self {
            entry,
            degraded: true,
        }
    }
}

/// What the layer does when a store lookup fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Treat the request as a miss: call upstream, try to store the answer (the default).
    #[default]
    FailOpen,
    /// Bypass the cache for this request: no lookup, no single-flight, nothing stored
    /// (`x-rampart-cache: bypass`).
    FailClosed,
}

/// A cache store. Freshness (TTL, `max-age`) and the canonical-request comparison are checked by
/// the layer on every read, so a store may keep entries longer than their TTL; it must bound its
/// memory.
pub trait CacheStore: Send + Sync + 'static {
    /// The entry under `key`, if any.
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Lookup>;
    /// Stores `entry` under `key` (replacing any).
    fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> StoreFuture<'_, ()>;
    /// Removes the entry under `key`.
    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, ()>;
    /// Removes every entry of `namespace` (a tenant id or the shared namespace).
    fn purge_namespace<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, ()>;
    /// Removes every entry.
    fn purge_all(&self) -> StoreFuture<'_, ()>;
    /// Current size figures (a local estimate for a shared store).
    fn stats(&self) -> StoreStats;
    /// What the layer does when [`get`](Self::get) fails (errors are always marked
    /// `x-rampart-degraded: cache`). Default: treat as a miss.
    fn error_policy(&self) -> StoreFailure {
        StoreFailure::FailOpen
    }
}

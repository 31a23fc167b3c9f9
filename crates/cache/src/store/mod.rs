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

/// A store failed (a shared store unreachable, a bad entry). The layer then treats the request
/// as a miss and does not fail it.
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

/// A cache store. Freshness (TTL, `max-age`) and the canonical-request comparison are checked by
/// the layer on every read, so a store may keep entries longer than their TTL; it must bound its
/// memory.
pub trait CacheStore: Send + Sync + 'static {
    /// The entry under `key`, if any.
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Option<Arc<CacheEntry>>>;
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
}

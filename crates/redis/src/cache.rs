//! [`RedisCacheStore`]: the response cache shared by every gateway replica.
//!
//! Keys, per namespace (a tenant id or the shared namespace; `h`: 128 bits of the blake3 hash
//! of its name, so no tenant id can shape a key, and the hash tag of all its keys, so one
//! namespace is one cluster slot):
//!
//! - `<base>:cache:{<h>}:e:<hash>` — an entry (`hash`: the canonical request's blake3, hex),
//!   written with `PX` = its TTL. The value is the namespace generation it was written under
//!   (20 ASCII digits) followed by [`CacheEntry::encode`]: the TTL is stored, not the
//!   process-local insertion instant, and a reader rebuilds the entry's age from its `PTTL`.
//! - `<base>:cache:{<h>}:g` — the namespace's generation. An entry under an older generation is
//!   a miss, so purging a namespace is one `INCR` (O(1)); the old entries expire on their TTL.
//!   The generation is created with the first entry and always outlives every entry.
//!
//! A read is one round trip (a pipeline of `GET` generation, `GET` entry, `PTTL` entry); a write
//! one script (`SET .. PX`, the generation stamped in, the generation's TTL extended).
//! `purge_all` `SCAN`s for generation keys and bumps each (O(keys) to scan, O(namespaces) to
//! write; on a Redis Cluster it must run against every primary).
//!
//! An optional memory tier (moka, bounded by bytes, short TTL) answers repeated hits without a
//! round trip; it is filled by this replica's writes and its reads from Redis. Purges clear it
//! on this replica at once, on the others within its TTL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache as Tier;
use rampart_cache::{
    CacheEntry, CacheKey, CacheStore, Lookup, StoreError, StoreFailure, StoreFuture, StoreStats,
};
use redis::Script;
use serde::Deserialize;
use tokio::time::Instant;

use crate::budget::hashed;
use crate::{ConfigError, OutagePolicy, RedisState, Unavailable};

/// The name of the store in metrics (`rampart_store_degraded{store="cache"}`) and headers.
pub const CACHE_STORE: &str = "cache";

/// Bytes of the generation stamp in front of every value.
const GEN_LEN: usize = 20;

/// Generation keys bumped per `purge_all` round trip.
const SCAN_BATCH: usize = 500;

/// The in-memory tier in front of Redis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryTierConfig {
    /// Answer from the tier while Redis is up (under `local_fallback` the tier is also what
    /// serves while Redis is unavailable, enabled or not). Default `true`.
    pub enabled: bool,
    /// Bound of the tier in bytes ([`CacheEntry::weight`]). Default 16 MiB.
    pub max_bytes: u64,
    /// How long the tier keeps an entry (and so how long a purge on another replica may take to
    /// reach this one). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for MemoryTierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 16 << 20,
            ttl: Duration::from_secs(5),
        }
    }
}

/// How the Redis cache store behaves (`[state.cache]`, say).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisCacheConfig {
    /// While Redis is unavailable: `fail_open` (default; a miss, the memory tier still
    /// answers, nothing new is stored), `local_fallback` (the memory tier is the cache: read and
    /// written) or `fail_closed` (the cache is bypassed: no lookup, no single-flight, nothing
    /// stored; the memory tier is not used once Redis is known to be down).
    pub outage_policy: OutagePolicy,
    /// Largest entry stored in Redis, encoded; larger answers are not stored (anywhere) and are
    /// counted. Default 1 MiB.
    pub max_entry_bytes: u64,
    /// The memory tier.
    pub memory: MemoryTierConfig,
}

impl Default for RedisCacheConfig {
    fn default() -> Self {
        Self {
            outage_policy: OutagePolicy::FailOpen,
            max_entry_bytes: 1 << 20,
            memory: MemoryTierConfig::default(),
        }
    }
}

impl RedisCacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entry_bytes == 0 {
            return Err(ConfigError(
                "cache.max_entry_bytes must be greater than zero".to_owned(),
            ));
        }
        let needs_tier = self.memory.enabled || self.outage_policy == OutagePolicy::LocalFallback;
        if needs_tier && (self.memory.max_bytes == 0 || self.memory.ttl.is_zero()) {
            return Err(ConfigError(
                "cache.memory: max_bytes and ttl must be greater than zero".to_owned(),
            ));
        }
        Ok(())
    }
}

struct Inner {
    state: RedisState,
    config: RedisCacheConfig,
    /// `<base>:cache:`
    prefix: String,
    put: Script,
    purge: Script,
    /// Present when enabled, or as the `local_fallback` cache.
    tier: Option<Tier<CacheKey, Arc<CacheEntry>>>,
    oversize: AtomicU64,
}

/// Cache entries in Redis, shared by every replica, with an optional memory tier (see the
/// module docs for keys, purges and the tier).
///
/// Implements [`CacheStore`]; give it to `CacheLayer::builder().store(..)`. Its
/// [`OutagePolicy`] is the single source of truth while Redis is unavailable: lookups under
/// `fail_open` and `local_fallback` answer degraded (the layer marks the response
/// `x-rampart-degraded: cache`), under `fail_closed` they fail and the store declares
/// [`error_policy`](CacheStore::error_policy) `fail_closed` (the layer bypasses the cache, also
/// marked). Nothing has to be set on the layer. Single-flight stays the layer's, per replica.
#[derive(Clone)]
pub struct RedisCacheStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisCacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCacheStore")
            .field("prefix", &self.inner.prefix)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RedisCacheStore {
    /// A store on `state` (registered as `cache` for the degraded gauge).
    pub fn new(state: RedisState, config: RedisCacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        state.register_store(CACHE_STORE);
        let needs_tier =
            config.memory.enabled || config.outage_policy == OutagePolicy::LocalFallback;
        let tier = needs_tier.then(|| {
            Tier::builder()
                .max_capacity(config.memory.max_bytes)
                .weigher(|_k: &CacheKey, v: &Arc<CacheEntry>| {
                    u32::try_from(v.weight()).unwrap_or(u32::MAX)
                })
                .time_to_live(config.memory.ttl)
                .eviction_policy(EvictionPolicy::lru())
                .support_invalidation_closures()
                .build()
        });
        let prefix = format!("{}:cache:", state.key_base());
        Ok(Self {
            inner: Arc::new(Inner {
                state,
                config,
                prefix,
                put: Script::new(include_str!("cache/put.lua")),
                purge: Script::new(include_str!("cache/purge.lua")),
                tier,
                oversize: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RedisCacheConfig {
        &self.inner.config
    }

    /// Answers not stored because they were larger than `max_entry_bytes`.
    pub fn oversize_count(&self) -> u64 {
        self.inner.oversize.load(Ordering::Relaxed)
    }

    /// The Redis keys of `key`: its namespace's generation and the entry.
    pub fn redis_keys(&self, key: &CacheKey) -> [String; 2] {
        self.inner.keys(key)
    }
}

impl Inner {
    fn tag(&self, namespace: &str) -> String {
        format!("{}{{{}}}", self.prefix, hashed(namespace))
    }

    fn keys(&self, key: &CacheKey) -> [String; 2] {
        let tag = self.tag(key.namespace());
        [format!("{tag}:g"), format!("{tag}:e:{}", key.hex())]
    }

    /// The tier, when it answers now: enabled and not bypassed (`fail_closed` with Redis known
    /// to be down bypasses everything).
    fn front(&self) -> Option<&Tier<CacheKey, Arc<CacheEntry>>> {
        let bypassed = self.config.outage_policy == OutagePolicy::FailClosed && !self.state.is_up();
        self.tier
            .as_ref()
            .filter(|_| self.config.memory.enabled && !bypassed)
    }

    async fn fetch(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Unavailable> {
        let [g, e] = self.keys(key);
        let (generation, value, pttl): (Option<u64>, Option<Vec<u8>>, i64) = self
            .state
            .call(move |mut conn| async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(&g)
                    .cmd("GET")
                    .arg(&e)
                    .cmd("PTTL")
                    .arg(&e)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let Some(value) = value else {
            return Ok(None);
        };
        // -1: no TTL (never written so); -2: gone since the GET.
        if pttl < 0 || value.len() < GEN_LEN {
            return Ok(None);
        }
        let stamp = std::str::from_utf8(&value[..GEN_LEN])
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        if stamp != Some(generation.unwrap_or(0)) {
            // Written before a purge of its namespace.
            return Ok(None);
        }
        let remaining = Duration::from_millis(pttl.unsigned_abs());
        match CacheEntry::decode(&value[GEN_LEN..], remaining, Instant::now()) {
            Ok(entry) => Ok(Some(Arc::new(entry))),
            Err(err) => {
                tracing::debug!(error = %err, ?key, "unreadable cache entry in redis; a miss");
                Ok(None)
            }
        }
    }

    async fn store(&self, key: &CacheKey, entry: &CacheEntry) -> Result<bool, Unavailable> {
        let remaining = entry.remaining(Instant::now());
        if remaining.is_zero() {
            return Ok(false);
        }
        let mut value = Vec::with_capacity(GEN_LEN + entry.encoded_len());
        value.resize(GEN_LEN, b'0');
        entry.encode_into(&mut value);
        if value.len() as u64 > self.config.max_entry_bytes {
            self.oversize.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("rampart_redis_cache_oversize_total").increment(1);
            tracing::debug!(
                ?key,
                bytes = value.len(),
                "not cached in redis: over max_entry_bytes"
            );
            return Ok(false);
        }
        let [g, e] = self.keys(key);
        let ttl = u64::try_from(remaining.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let script = &self.put;
        self.state
            .call(move |mut conn| async move {
                script
                    .key(&g)
                    .key(&e)
                    .arg(value)
                    .arg(ttl)
                    .invoke_async::<u8>(&mut conn)
                    .await
            })
            .await?;
        Ok(true)
    }

    async fn bump(&self, generations: Vec<String>) -> Result<(), StoreError> {
        if generations.is_empty() {
            return Ok(());
        }
        let script = &self.purge;
        self.state
            .call(move |mut conn| async move {
                let mut inv = script.prepare_invoke();
                for k in &generations {
                    inv.key(k);
                }
                inv.invoke_async::<u64>(&mut conn).await
            })
            .await
            .map(|_| ())
            .map_err(|e| StoreError(e.to_string()))
    }
}

impl CacheStore for RedisCacheStore {
    fn get<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            let inner = &self.inner;
            if let Some(tier) = inner.front()
                && let Some(entry) = tier.get(key)
            {
                return Ok(Lookup::found(Some(entry)));
            }
            match inner.fetch(key).await {
                Ok(found) => {
                    if let (Some(entry), Some(tier)) = (&found, inner.front()) {
                        tier.insert(key.clone(), entry.clone());
                    }
                    Ok(Lookup::found(found))
                }
                Err(e) => match inner.config.outage_policy {
                    // The tier (when enabled) was asked already.
                    OutagePolicy::FailOpen => Ok(Lookup::degraded(None)),
                    OutagePolicy::LocalFallback => Ok(Lookup::degraded(
                        inner.tier.as_ref().and_then(|t| t.get(key)),
                    )),
                    OutagePolicy::FailClosed => Err(StoreError(e.to_string())),
                },
            }
        })
    }

    fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            match inner.store(&key, &entry).await {
                Ok(true) => {
                    if let Some(tier) = inner.front() {
                        tier.insert(key, entry);
                    }
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(e) => match inner.config.outage_policy {
                    OutagePolicy::LocalFallback => {
                        if entry.encoded_len() as u64 <= inner.config.max_entry_bytes
                            && let Some(tier) = &inner.tier
                        {
                            tier.insert(key, entry);
                        }
                        Ok(())
                    }
                    OutagePolicy::FailOpen => {
                        tracing::debug!(error = %e, "not cached: redis unavailable (fail_open)");
                        Ok(())
                    }
                    OutagePolicy::FailClosed => Err(StoreError(e.to_string())),
                },
            }
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            if let Some(tier) = &inner.tier {
                tier.invalidate(key);
            }
            let [_, e] = inner.keys(key);
            inner
                .state
                .call(move |mut conn| async move {
                    redis::cmd("DEL")
                        .arg(&e)
                        .query_async::<u64>(&mut conn)
                        .await
                })
                .await
                .map(|_| ())
                .map_err(|e| StoreError(e.to_string()))
        })
    }

    fn purge_namespace<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            if let Some(tier) = &inner.tier {
                let ns: Arc<str> = namespace.into();
                tier.invalidate_entries_if(move |k, _| k.namespace() == &*ns)
                    .map_err(|e| StoreError(e.to_string()))?;
                tier.run_pending_tasks();
            }
            inner
                .bump(vec![format!("{}:g", inner.tag(namespace))])
                .await
        })
    }

    fn purge_all(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            if let Some(tier) = &inner.tier {
                tier.invalidate_all();
                tier.run_pending_tasks();
            }
            let pattern = format!("{}{{*}}:g", inner.prefix);
            let mut cursor = 0u64;
            loop {
                let pattern = pattern.clone();
                let (next, keys): (u64, Vec<String>) = inner
                    .state
                    .call(move |mut conn| async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(SCAN_BATCH)
                            .query_async(&mut conn)
                            .await
                    })
                    .await
                    .map_err(|e| StoreError(e.to_string()))?;
                inner.bump(keys).await?;
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })
    }

    fn stats(&self) -> StoreStats {
        // Only the memory tier is local; Redis's share is not counted.
        match &self.inner.tier {
            Some(tier) => {
                tier.run_pending_tasks();
                StoreStats {
                    entries: tier.entry_count(),
                    weighted_size: tier.weighted_size(),
                }
            }
            None => StoreStats::default(),
        }
    }

    fn error_policy(&self) -> StoreFailure {
        // Lookups fail only under `fail_closed`; the other policies answer degraded.
        StoreFailure::FailClosed
    }
}

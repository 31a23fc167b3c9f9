//! Cache store latency, Redis against memory, in the same run: a hit (`get` of a stored entry,
//! decoded), a miss, and a `put`, for an answer of about 1 KiB; the Redis store with and
//! without its memory tier. The Redis side talks to a throw-away `redis-server` on loopback,
//! started by the bench.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use divan::Bencher;
use rampart_cache::testing::{entry, key};
use rampart_cache::{CacheEntry, CacheKey, CacheStore, MemoryStore};
use rampart_redis::cache::MemoryTierConfig;
use rampart_redis::testing::RedisServer;
use rampart_redis::{RedisCacheConfig, RedisCacheStore, RedisConfig, RedisState};

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

enum Kind {
    Memory,
    Redis,
    RedisTier,
}

struct Setup {
    rt: tokio::runtime::Runtime,
    _server: Option<RedisServer>,
    store: Arc<dyn CacheStore>,
}

fn setup(kind: Kind) -> Setup {
    let rt = runtime();
    let (server, store): (Option<RedisServer>, Arc<dyn CacheStore>) = match kind {
        Kind::Memory => (
            None,
            Arc::new(MemoryStore::new(64 << 20, Duration::from_secs(3600))),
        ),
        Kind::Redis | Kind::RedisTier => rt.block_on(async {
            let server = RedisServer::start().await.unwrap();
            let state = RedisState::new(RedisConfig {
                redis_url: server.url(),
                timeout: Duration::from_secs(1),
                ..RedisConfig::default()
            })
            .unwrap();
            let config = RedisCacheConfig {
                memory: MemoryTierConfig {
                    enabled: matches!(kind, Kind::RedisTier),
                    ..MemoryTierConfig::default()
                },
                ..RedisCacheConfig::default()
            };
            let store = RedisCacheStore::new(state, config).unwrap();
            (Some(server), Arc::new(store) as Arc<dyn CacheStore>)
        }),
    };
    Setup {
        rt,
        _server: server,
        store,
    }
}

/// `n` stored entries (about 1 KiB of answer each) and their keys.
fn fill(s: &Setup, n: usize) -> Vec<(CacheKey, Arc<CacheEntry>)> {
    let text = "lorem ipsum dolor sit amet ".repeat(40);
    let entries: Vec<_> = (0..n)
        .map(|i| {
            let q = format!("question {i}");
            (key("acme", &q), entry(&q, &text, Duration::from_secs(3600)))
        })
        .collect();
    s.rt.block_on(async {
        for (k, e) in &entries {
            s.store.put(k.clone(), e.clone()).await.unwrap();
        }
    });
    entries
}

fn get_hit(bencher: Bencher, kind: Kind) {
    let s = setup(kind);
    let entries = fill(&s, 100);
    let next = AtomicUsize::new(0);
    bencher.bench_local(|| {
        let (k, _) = &entries[next.fetch_add(1, Ordering::Relaxed) % entries.len()];
        s.rt.block_on(async { assert!(s.store.get(k).await.unwrap().entry.is_some()) });
    });
}

fn get_miss(bencher: Bencher, kind: Kind) {
    let s = setup(kind);
    let k = key("acme", "never stored");
    bencher.bench_local(|| {
        s.rt.block_on(async { assert!(s.store.get(&k).await.unwrap().entry.is_none()) });
    });
}

fn put(bencher: Bencher, kind: Kind) {
    let s = setup(kind);
    let entries = fill(&s, 100);
    let next = AtomicUsize::new(0);
    bencher.bench_local(|| {
        let (k, e) = &entries[next.fetch_add(1, Ordering::Relaxed) % entries.len()];
        s.rt.block_on(s.store.put(k.clone(), e.clone())).unwrap();
    });
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn get_hit_memory(bencher: Bencher) {
    get_hit(bencher, Kind::Memory);
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn get_hit_redis(bencher: Bencher) {
    get_hit(bencher, Kind::Redis);
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn get_hit_redis_with_memory_tier(bencher: Bencher) {
    get_hit(bencher, Kind::RedisTier);
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn get_miss_memory(bencher: Bencher) {
    get_miss(bencher, Kind::Memory);
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn get_miss_redis(bencher: Bencher) {
    get_miss(bencher, Kind::Redis);
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn put_memory(bencher: Bencher) {
    put(bencher, Kind::Memory);
}

#[divan::bench(sample_count = 100, sample_size = 20)]
fn put_redis(bencher: Bencher) {
    put(bencher, Kind::Redis);
}

#![doc = include_str!("../README.md")]

pub mod config;
pub mod entry;
mod flight;
pub mod key;
mod layer;
mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{CacheConfig, CacheRule, ConfigError, DEFAULT_IGNORED_FIELDS, EdgeLimits};
pub use entry::{CacheEntry, DecodeError};
pub use flight::CLIENT_STALL;
pub use key::{CacheKey, Canonical, KeyError, KeyRules};
pub use layer::{CacheHandle, CacheLayer, CacheLayerBuilder};
pub use service::Cache;
pub use store::{
    CacheStore, Lookup, MemoryStore, StoreError, StoreFailure, StoreFuture, StoreStats,
};

#![doc = include_str!("../README.md")]

pub mod budget;
pub mod cache;
mod policy;
pub mod ratelimit;
mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use budget::{RedisBudgetConfig, RedisBudgetStore};
pub use cache::{RedisCacheConfig, RedisCacheStore};
pub use policy::OutagePolicy;
pub use ratelimit::{RedisRateLimitConfig, RedisRateLimitStore};
pub use state::{ConfigError, RedisConfig, RedisState, SCHEMA_VERSION, Unavailable};

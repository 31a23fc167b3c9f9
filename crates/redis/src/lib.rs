#![doc = include_str!("../README.md")]

pub mod budget;
mod policy;
mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use budget::{RedisBudgetConfig, RedisBudgetStore};
pub use policy::OutagePolicy;
pub use state::{ConfigError, RedisConfig, RedisState, SCHEMA_VERSION, Unavailable};

#![doc = include_str!("../README.md")]

mod policy;
mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use policy::OutagePolicy;
pub use state::{ConfigError, RedisConfig, RedisState, SCHEMA_VERSION, Unavailable};

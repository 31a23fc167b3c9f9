#![doc = include_str!("../README.md")]

pub mod config;
pub mod error;
mod future;
pub mod key;
mod layer;
mod registry;
mod service;
mod state;

pub use config::CircuitBreakerConfig;
pub use error::ConfigError;
pub use future::ResponseFuture;
pub use key::{DEFAULT_KEY, KeyExtractor, TargetKey};
pub use layer::{CircuitBreakerBuilder, CircuitBreakerLayer};
pub use registry::{BreakerHandle, BreakerSnapshot, STATE_GAUGE, TRANSITIONS_COUNTER};
pub use service::CircuitBreaker;
pub use state::BreakerState;

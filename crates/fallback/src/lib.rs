#![doc = include_str!("../README.md")]

pub mod backoff;
pub mod budget;
pub mod config;
pub mod error;
mod layer;
pub mod resolve;
mod service;

pub use backoff::{FullJitter, Jitter, backoff_ceiling};
pub use budget::RetryBudget;
pub use config::{BackoffConfig, BudgetConfig, FallbackConfig, MAX_ATTEMPTS_CAP, StreamConfig};
pub use error::ConfigError;
pub use layer::{FallbackBuilder, FallbackLayer};
pub use resolve::{NoResolver, Resolver};
pub use service::{ATTEMPTS_COUNTER, BUDGET_EXHAUSTED_COUNTER, Fallback, ResponseFuture};

#![doc = include_str!("../README.md")]

mod body;
pub mod config;
mod sanitize;
mod service;

pub use body::BodyTimeout;
pub use config::{ConfigError, ProviderConfig, ProviderKind, Timeouts};
pub use service::{Upstream, UpstreamBuilder};

#![doc = include_str!("../README.md")]

pub mod anthropic;
mod body;
pub mod config;
mod sanitize;
mod service;

pub use body::BodyTimeout;
pub use config::{AnthropicConfig, ConfigError, ProviderConfig, ProviderKind, Timeouts};
pub use service::{Upstream, UpstreamBuilder};

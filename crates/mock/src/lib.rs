#![doc = include_str!("../README.md")]

pub mod answer;
mod anthropic;
pub mod config;
mod provider;
mod respond;
mod server;
mod service;

pub use answer::{
    Answer, DEFAULT_OUTPUT_TOKENS, MAX_CHOICES, MAX_OUTPUT_TOKENS, VOCABULARY, count_prompt_tokens,
};
pub use config::{Fault, Latency, MockApi, MockConfig, Stall};
pub use provider::{DEFAULT_MODELS, MockProvider, RecordedRequest};
pub use server::MockServer;
pub use service::{MAX_BODY_BYTES, MockFuture, MockService};

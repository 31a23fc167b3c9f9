#![doc = include_str!("../README.md")]

pub use rampart_core as core;
pub use rampart_core::{
    AuthLayer, Body, BoxChatService, BoxError, ChatRequest, Completion, CompletionReport, Edge,
    EdgeConfig, EdgeLayer, Error, ErrorKind, ErrorSource, Outcome, ResponseFacts, Target, Tenant,
    Verdict, VirtualKeys,
};

/// The upstream service (feature `upstream`, on by default).
#[cfg(feature = "upstream")]
pub use rampart_upstream as upstream;
#[cfg(feature = "upstream")]
pub use rampart_upstream::Upstream;

/// The per-target circuit breaker (feature `circuit-breaker`, on by default).
#[cfg(feature = "circuit-breaker")]
pub use rampart_circuit_breaker as circuit_breaker;
#[cfg(feature = "circuit-breaker")]
pub use rampart_circuit_breaker::CircuitBreakerLayer;

/// Keyed RPM, TPM and concurrency limits (feature `ratelimit`, on by default).
#[cfg(feature = "ratelimit")]
pub use rampart_ratelimit as ratelimit;
#[cfg(feature = "ratelimit")]
pub use rampart_ratelimit::RateLimitLayer;

/// Candidate chains, retries and the streaming commit point (feature `fallback`, on by default).
#[cfg(feature = "fallback")]
pub use rampart_fallback as fallback;
#[cfg(feature = "fallback")]
pub use rampart_fallback::FallbackLayer;

/// The exact-match response cache (feature `cache`, on by default).
#[cfg(feature = "cache")]
pub use rampart_cache as cache;
#[cfg(feature = "cache")]
pub use rampart_cache::CacheLayer;

/// Catalog, classification, routing strategies, budgets and spend (feature `cost-router`, on by
/// default).
#[cfg(feature = "cost-router")]
pub use rampart_cost_router as cost_router;
#[cfg(feature = "cost-router")]
pub use rampart_cost_router::CostRouterLayer;

/// The simulated provider (feature `mock`).
#[cfg(feature = "mock")]
pub use rampart_mock as mock;

/// Hedged requests and fan-out across models (feature `parallel`).
#[cfg(feature = "parallel")]
pub use rampart_parallel as parallel;
#[cfg(feature = "parallel")]
pub use rampart_parallel::{FanOutLayer, HedgeLayer};

/// Redis-backed shared state for several replicas (feature `redis`).
#[cfg(feature = "redis")]
pub use rampart_redis as redis;

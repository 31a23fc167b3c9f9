#![doc = include_str!("../README.md")]

mod body;
pub mod config;
pub mod error;
pub mod estimate;
pub mod key;
mod layer;
mod reservation;
mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{EdgeLimits, KeySource, Limits, QueueConfig, RateLimitConfig, StoreFailure};
pub use error::{ConfigError, format_reset};
#[cfg(feature = "tiktoken")]
pub use estimate::TiktokenEstimator;
pub use estimate::{BytesEstimator, TokenEstimator};
pub use key::{HeaderKey, KeyExtractor, TargetKey, TenantKey, TenantModelKey};
pub use layer::{RateLimitLayer, RateLimitLayerBuilder};
pub use rampart_core::BoxError;
pub use reservation::TokenReservation;
pub use service::{RateLimit, ResponseFuture};
pub use store::{
    Admission, BucketStatus, Decision, LimitKind, MemoryStore, Quota, Rate, RateLimitStore,
    Refusal, ReservationId, Snapshot, StoreError,
};

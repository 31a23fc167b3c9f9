#![doc = include_str!("../README.md")]

pub mod budget;
pub mod catalog;
pub mod classify;
pub mod config;
pub mod error;
mod layer;
mod router;
mod service;
pub mod strategy;
#[cfg(feature = "testing")]
pub mod testing;

pub use budget::{
    BudgetStore, MemoryBudgetStore, Periods, ReservationId, ReserveOutcome, ReserveReply,
    ScopeLimit, ScopeSpend, StoreError, StoreFuture, SystemClock, WallClock, Window,
};
pub use catalog::{Catalog, ModelInfo, Tier};
pub use classify::{
    Classification, Classifier, HeuristicClassifier, LlmClassifier, Prompt, Signals, TierFuture,
};
pub use config::{
    BudgetAction, BudgetLimit, BudgetsConfig, CostRouterConfig, ModelConfig, RouteConfig,
    RuleConfig, StoreFailure,
};
pub use error::ConfigError;
pub use layer::{CostRouterHandle, CostRouterLayer, CostRouterLayerBuilder};
pub use rampart_core::BoxError;
pub use service::{CostRouter, ResponseFuture};
pub use strategy::{Hints, LatencyTracker, Priority, Strategy};

#![doc = include_str!("../README.md")]

mod branch;
pub mod config;
pub mod error;
pub mod fanout;
mod future;
pub mod headers;
pub mod hedge;
mod merge;
mod ttfb;

pub use config::{
    FanOutConfig, FanOutRoute, HeaderFanOut, HedgeBudget, HedgeConfig, HedgePolicy,
    MAX_FANOUT_MODELS, MAX_HEDGES, ParallelConfig, Strategy,
};
pub use error::ConfigError;
pub use fanout::{FANOUT_CALLS_COUNTER, FANOUT_REQUESTS_COUNTER, FanOut, FanOutLayer, Pricer};
pub use future::ResponseFuture;
pub use headers::{X_RAMPART_FANOUT, X_RAMPART_FANOUT_STRATEGY, X_RAMPART_MODELS_CALLED};
pub use hedge::{HEDGES_COUNTER, Hedge, HedgeLayer};
pub use merge::{CALLS_FIELD, CHOICE_MODEL_FIELD};

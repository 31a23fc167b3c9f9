#![doc = include_str!("../README.md")]

pub mod body;
pub mod charge;
pub mod classify;
pub mod clock;
pub mod commit;
pub mod edge;
pub mod error;
pub mod facts;
pub mod headers;
pub mod metric;
pub mod openai;
pub mod pricing;
pub mod route;
pub mod settle;
pub mod sse;
pub mod tap;
pub mod tenant;

pub use body::{Body, BoxError};
pub use charge::{CancelCharge, CancelledCall, CancelledCalls};
pub use classify::{Verdict, classify_error, classify_report, classify_status};
pub use clock::{Clock, TokioClock};
pub use edge::{BoxChatService, Edge, EdgeConfig, EdgeLayer, chat_request, ensure_chat_request};
pub use error::{Error, ErrorKind, ErrorSource, error_response};
pub use facts::{Completion, CompletionReport, Outcome, ResponseFacts, Target};
pub use openai::{ChatRequest, RequestError, Usage};
pub use pricing::{MicroUsd, Price};
pub use route::{Candidate, RouteDecision};
pub use settle::{SettleHook, SettleHooks};
pub use tenant::{AuthLayer, Tenant, VirtualKeys};

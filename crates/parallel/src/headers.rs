//! The headers this crate reads and writes.

use http::HeaderName;

/// Response: every model the layer called for this request, in the order the calls started
/// (hedging: the primary, then each hedge; fan-out: the configured order), comma-separated.
pub const X_RAMPART_MODELS_CALLED: HeaderName = HeaderName::from_static("x-rampart-models-called");
/// Request: the models to fan out to, comma-separated (when the header is enabled).
pub const X_RAMPART_FANOUT: HeaderName = HeaderName::from_static("x-rampart-fanout");
/// Request: the fan-out strategy (`fastest`, `cheapest`, `all`) for this request.
pub const X_RAMPART_FANOUT_STRATEGY: HeaderName =
    HeaderName::from_static("x-rampart-fanout-strategy");

//! Header names that are part of Rampart's public contract.

use http::HeaderName;

/// The model that served the answer.
pub const X_RAMPART_MODEL: HeaderName = HeaderName::from_static("x-rampart-model");
/// The provider (its configured name) that served the answer.
pub const X_RAMPART_PROVIDER: HeaderName = HeaderName::from_static("x-rampart-provider");
/// Why that model was chosen.
pub const X_RAMPART_ROUTE: HeaderName = HeaderName::from_static("x-rampart-route");
/// Cost of the request in USD.
pub const X_RAMPART_COST_USD: HeaderName = HeaderName::from_static("x-rampart-cost-usd");
/// `hit`, `miss` or `bypass`.
pub const X_RAMPART_CACHE: HeaderName = HeaderName::from_static("x-rampart-cache");
/// Upstream attempts made.
pub const X_RAMPART_ATTEMPTS: HeaderName = HeaderName::from_static("x-rampart-attempts");
/// On errors: which part of the gateway produced it.
pub const X_RAMPART_ERROR_SOURCE: HeaderName = HeaderName::from_static("x-rampart-error-source");
/// Shared stores running under a fallback policy.
pub const X_RAMPART_DEGRADED: HeaderName = HeaderName::from_static("x-rampart-degraded");
/// Request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Retry delay in milliseconds (OpenAI's extension of `Retry-After`).
pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
/// Request hint: `low`, `medium`, `high`.
pub const X_RAMPART_PRIORITY: HeaderName = HeaderName::from_static("x-rampart-priority");
/// Request hint: highest acceptable price, USD per million output tokens.
pub const X_RAMPART_MAX_PRICE: HeaderName = HeaderName::from_static("x-rampart-max-price");
/// Request hint: latency budget in milliseconds.
pub const X_RAMPART_LATENCY_BUDGET_MS: HeaderName =
    HeaderName::from_static("x-rampart-latency-budget-ms");
/// Per-request cache TTL in seconds.
pub const X_RAMPART_CACHE_TTL: HeaderName = HeaderName::from_static("x-rampart-cache-ttl");

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

/// Sets `name` to `value` unless it already holds exactly that, so a header several layers
/// write (`x-rampart-model`: the upstream, the fallback, the router) is allocated once.
/// Returns `false`, leaving the map as it was, when `value` is not a valid header value.
pub fn insert_str(headers: &mut http::HeaderMap, name: HeaderName, value: &str) -> bool {
    if headers
        .get(&name)
        .is_some_and(|v| v.as_bytes() == value.as_bytes())
    {
        return true;
    }
    match http::HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
            true
        }
        Err(_) => false,
    }
}

/// A count as a header value; counts below ten (attempts, calls) cost no allocation.
pub fn count_value(n: u64) -> http::HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match usize::try_from(n).ok().and_then(|i| DIGITS.get(i)) {
        Some(d) => http::HeaderValue::from_static(d),
        None => http::HeaderValue::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn insert_str_keeps_an_equal_value_and_replaces_a_different_one() {
        let mut h = HeaderMap::new();
        assert!(insert_str(&mut h, X_RAMPART_MODEL.clone(), "gpt-4.1"));
        assert_eq!(h[&X_RAMPART_MODEL], "gpt-4.1");
        assert!(insert_str(&mut h, X_RAMPART_MODEL.clone(), "gpt-4.1"));
        assert!(insert_str(&mut h, X_RAMPART_MODEL.clone(), "claude"));
        assert_eq!(h[&X_RAMPART_MODEL], "claude");
        assert_eq!(h.get_all(&X_RAMPART_MODEL).iter().count(), 1);
        assert!(!insert_str(&mut h, X_RAMPART_MODEL.clone(), "bad\nvalue"));
        assert_eq!(h[&X_RAMPART_MODEL], "claude");
    }

    #[test]
    fn count_values() {
        for n in [0u64, 1, 9, 10, 12345] {
            assert_eq!(count_value(n), HeaderValue::from(n));
        }
    }
}

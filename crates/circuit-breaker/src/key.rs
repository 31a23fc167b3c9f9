//! Which breaker a request belongs to: [`KeyExtractor`] and the default [`TargetKey`].

use http::Request;
use rampart_core::{Body, Target, chat_request};

/// The key used when the extractor finds none.
pub const DEFAULT_KEY: &str = "default";

/// Picks the breaker key of a request. `None` means the [`DEFAULT_KEY`] (`"default"`).
///
/// Closures `Fn(&Request<Body>) -> Option<String>` are extractors:
///
/// ```
/// use rampart_circuit_breaker::CircuitBreakerLayer;
///
/// # fn main() -> Result<(), rampart_circuit_breaker::ConfigError> {
/// let layer = CircuitBreakerLayer::builder()
///     .key_extractor(|req: &http::Request<rampart_core::Body>| {
///         req.headers()
///             .get("x-upstream")
///             .and_then(|v| v.to_str().ok())
///             .map(str::to_owned)
///     })
///     .build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of `req`, or `None` for the default key.
    fn key(&self, req: &Request<Body>) -> Option<String>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&Request<Body>) -> Option<String> + Send + Sync + 'static,
{
    fn key(&self, req: &Request<Body>) -> Option<String> {
        self(req)
    }
}

/// The default extractor: the target `provider/model` from a [`Target`] request extension
/// (set by a router or a fallback), else the requested `model` of the parsed request
/// ([`chat_request`]), else none (the [`DEFAULT_KEY`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetKey;

impl KeyExtractor for TargetKey {
    fn key(&self, req: &Request<Body>) -> Option<String> {
        if let Some(target) = req.extensions().get::<Target>() {
            let mut key = String::with_capacity(target.provider.len() + target.model.len() + 1);
            key.push_str(&target.provider);
            key.push('/');
            key.push_str(&target.model);
            return Some(key);
        }
        chat_request(req).map(|chat| chat.model().to_owned())
    }
}

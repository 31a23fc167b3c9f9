//! Key extractors: which bucket a request is counted in.
//!
//! A [`KeyExtractor`] maps a request to a key, or to `None` to let the request through
//! unlimited. Closures `Fn(&Request<Body>, &ChatRequest) -> Option<K>` (with `K: Into<Arc<str>>`,
//! e.g. `String` or `&'static str`) are extractors. The built-ins are chosen in config with
//! [`KeySource`].

use std::sync::Arc;

use http::{HeaderName, Request};
use rampart_core::{Body, ChatRequest, Target, Tenant};

use crate::config::KeySource;
use crate::error::ConfigError;

/// Maps a request to its rate-limit key.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of `req` (whose parsed body is `chat`); `None`: not limited.
    fn key(&self, req: &Request<Body>, chat: &ChatRequest) -> Option<Arc<str>>;
}

impl<F, K> KeyExtractor for F
where
    F: Fn(&Request<Body>, &ChatRequest) -> Option<K> + Send + Sync + 'static,
    K: Into<Arc<str>>,
{
    fn key(&self, req: &Request<Body>, chat: &ChatRequest) -> Option<Arc<str>> {
        self(req, chat).map(Into::into)
    }
}

/// The model a request is for: the [`Target`] extension's model when present (set by a router
/// or fallback), else the request's `model`. Model overrides and output estimates use it.
pub fn request_model<'a>(req: &'a Request<Body>, chat: &'a ChatRequest) -> &'a str {
    match req.extensions().get::<Target>() {
        Some(t) => &t.model,
        None => chat.model(),
    }
}

/// `"{a}/{b}"`, built in one allocation (no formatter: this runs for every request).
fn slash_key(a: &str, b: &str) -> Arc<str> {
    let mut s = String::with_capacity(a.len() + 1 + b.len());
    s.push_str(a);
    s.push('/');
    s.push_str(b);
    s.into()
}

fn tenant_id(req: &Request<Body>) -> &str {
    req.extensions()
        .get::<Tenant>()
        .map_or("default", Tenant::id)
}

/// Key: the tenant id ([`Tenant`] extension), `default` when absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantKey;

impl KeyExtractor for TenantKey {
    fn key(&self, req: &Request<Body>, _chat: &ChatRequest) -> Option<Arc<str>> {
        // The tenant's own `Arc<str>`: no allocation per request.
        Some(match req.extensions().get::<Tenant>() {
            Some(t) => t.shared_id().clone(),
            None => Arc::from("default"),
        })
    }
}

/// Key: `"{tenant}/{model}"` (model as in [`request_model`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantModelKey;

impl KeyExtractor for TenantModelKey {
    fn key(&self, req: &Request<Body>, chat: &ChatRequest) -> Option<Arc<str>> {
        Some(slash_key(tenant_id(req), request_model(req, chat)))
    }
}

/// Key: the [`Target`] extension as `"{provider}/{model}"`, else the request's `model`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetKey;

impl KeyExtractor for TargetKey {
    fn key(&self, req: &Request<Body>, chat: &ChatRequest) -> Option<Arc<str>> {
        Some(match req.extensions().get::<Target>() {
            // `provider/model`, as `Target`'s Display writes it, without the formatter.
            Some(t) => slash_key(&t.provider, &t.model),
            None => chat.model().into(),
        })
    }
}

/// Key: a request header's value; requests without it (or with a non-UTF-8 value) share the key
/// `default`.
#[derive(Debug, Clone)]
pub struct HeaderKey(pub HeaderName);

impl KeyExtractor for HeaderKey {
    fn key(&self, req: &Request<Body>, _chat: &ChatRequest) -> Option<Arc<str>> {
        let v = req
            .headers()
            .get(&self.0)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("default");
        Some(v.into())
    }
}

impl KeySource {
    /// The extractor for this source.
    pub fn extractor(&self) -> Result<Arc<dyn KeyExtractor>, ConfigError> {
        Ok(match self {
            KeySource::Tenant => Arc::new(TenantKey),
            KeySource::TenantModel => Arc::new(TenantModelKey),
            KeySource::Target => Arc::new(TargetKey),
            KeySource::Header(name) => Arc::new(HeaderKey(
                HeaderName::try_from(name.as_str())
                    .map_err(|_| ConfigError::BadHeader(name.clone()))?,
            )),
        })
    }
}

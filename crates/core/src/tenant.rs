//! Caller identity: the [`Tenant`] request extension and virtual keys.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Who is calling: a request extension set by authentication, read by limits, budgets and the
/// cache (which isolates entries per tenant).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// A tenant with this id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }
    /// The tenant id (safe to log and to use as a metric label).
    pub fn id(&self) -> &str {
        &self.0
    }
    /// The tenant id as a shared string (a cheap clone for map keys).
    pub fn shared_id(&self) -> &Arc<str> {
        &self.0
    }
    /// The single tenant of open development mode.
    pub fn anonymous() -> Self {
        Self::new("default")
    }
}

/// Virtual keys: each maps to a tenant. Only SHA-256 digests are held, and a presented key is
/// compared against every digest in constant time.
#[derive(Clone, Default)]
pub struct VirtualKeys {
    /// Tenants by the SHA-256 digest of their key. Looking a presented key up by its digest
    /// leaks nothing useful through timing: learning which digests exist would need a SHA-256
    /// preimage. One lookup per request, however many keys are configured.
    keys: Arc<HashMap<[u8; 32], Tenant>>,
}

impl std::fmt::Debug for VirtualKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualKeys")
            .field("count", &self.keys.len())
            .finish()
    }
}

/// Why a key digest could not be used.
#[derive(Debug, thiserror::Error)]
#[error("expected a SHA-256 digest as 64 hex characters")]
pub struct BadDigest;

impl VirtualKeys {
    /// No keys: open development mode.
    pub fn none() -> Self {
        Self::default()
    }

    /// Builds from `(sha256 hex digest, tenant)` pairs.
    pub fn from_digests<'a>(
        entries: impl IntoIterator<Item = (&'a str, Tenant)>,
    ) -> Result<Self, BadDigest> {
        let mut keys = HashMap::new();
        for (hex_digest, tenant) in entries {
            let mut d = [0u8; 32];
            hex::decode_to_slice(hex_digest.trim(), &mut d).map_err(|_| BadDigest)?;
            keys.insert(d, tenant);
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    /// The hex SHA-256 digest of a key, as stored in config.
    pub fn digest(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    /// Whether keys are configured (else: open development mode).
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no keys are configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The tenant for an `Authorization` header. In development mode (no keys) every caller is
    /// [`Tenant::anonymous`]. Errors never echo the key.
    pub fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<Tenant, Error> {
        if self.keys.is_empty() {
            return Ok(Tenant::anonymous());
        }
        let presented = authorization
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::invalid_api_key(true))?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.keys
            .get(&digest)
            .cloned()
            .ok_or_else(|| Error::invalid_api_key(false))
    }
}

/// Authenticates each request with [`VirtualKeys`], sets the [`Tenant`] extension, records the
/// tenant id in the current span's `tenant` field (when it has one) and removes the client's
/// `Authorization` header; refuses with 401 (`invalid_api_key`).
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    keys: VirtualKeys,
}

impl AuthLayer {
    /// Authenticates with `keys` (none: development mode, every caller is the anonymous tenant).
    pub fn new(keys: VirtualKeys) -> Self {
        Self { keys }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    keys: VirtualKeys,
}

impl<S, B> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>>,
    S::Error: Into<crate::BoxError>,
{
    type Response = S::Response;
    type Error = crate::BoxError;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<S::Response, crate::BoxError>>,
        futures_util::future::ErrInto<S::Future, crate::BoxError>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        use futures_util::TryFutureExt;
        let auth = req.headers_mut().remove(http::header::AUTHORIZATION);
        match self.keys.authenticate(auth.as_ref()) {
            Ok(tenant) => {
                // Fills the `tenant` field of the caller's request span, if it declares one
                // (full_gateway's observer does); a no-op otherwise.
                tracing::Span::current().record("tenant", tenant.id());
                req.extensions_mut().insert(tenant);
                futures_util::future::Either::Right(self.inner.call(req).err_into())
            }
            Err(e) => futures_util::future::Either::Left(std::future::ready(Err(e.into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_tenants() {
        let d = VirtualKeys::digest("sk-acme");
        let keys = VirtualKeys::from_digests([(d.as_str(), Tenant::new("acme"))]).unwrap();
        let ok = keys
            .authenticate(Some(&HeaderValue::from_static("Bearer sk-acme")))
            .unwrap();
        assert_eq!(ok.id(), "acme");
        let bad = keys
            .authenticate(Some(&HeaderValue::from_static("Bearer sk-nope")))
            .unwrap_err();
        assert_eq!(bad.status(), 401);
        assert!(!bad.message().contains("sk-nope"));
        assert!(keys.authenticate(None).is_err());
        assert!(VirtualKeys::from_digests([("zz", Tenant::new("x"))]).is_err());
        assert_eq!(
            VirtualKeys::none().authenticate(None).unwrap(),
            Tenant::anonymous()
        );
    }

    #[tokio::test]
    async fn auth_layer_sets_tenant_and_strips_the_key() {
        use tower::{Layer, ServiceExt};
        let d = VirtualKeys::digest("sk-acme");
        let keys = VirtualKeys::from_digests([(d.as_str(), Tenant::new("acme"))]).unwrap();
        let svc =
            AuthLayer::new(keys).layer(tower::service_fn(|req: http::Request<()>| async move {
                assert!(req.headers().get(http::header::AUTHORIZATION).is_none());
                Ok::<_, crate::BoxError>(req.extensions().get::<Tenant>().cloned())
            }));
        let req = http::Request::builder()
            .header("authorization", "Bearer sk-acme")
            .body(())
            .unwrap();
        let tenant = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(tenant.unwrap().id(), "acme");
        let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
        assert_eq!(crate::error::find_error(&err).unwrap().status(), 401);
    }
}

//! [`CircuitBreaker`]: the service built by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use rampart_core::{Body, BoxError, Error};
use tower_service::Service;

use crate::future::{Admission, ResponseFuture};
use crate::key::DEFAULT_KEY;
use crate::registry::{BreakerHandle, Shared};
use crate::state::Admit;

/// A circuit breaker around `S`, one breaker per key.
///
/// `poll_ready` only forwards to `S`; admission is decided in `call`. A refused request gets
/// `Err(`[`Error::circuit_open`]`)` at once, without `S` being called.
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("config", &self.shared.policy.config)
            .finish()
    }
}

impl<S> CircuitBreaker<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The operator's handle on the breakers (shared with the layer and every clone).
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request<Body>> for CircuitBreaker<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let key = self.shared.extractor.key(&req);
        let Some(breaker) = self
            .shared
            .breaker(key.as_deref().unwrap_or(DEFAULT_KEY), true)
        else {
            // Past `max_keys`: not tracked.
            return ResponseFuture::untracked(self.inner.call(req));
        };
        let now = self.shared.policy.now();
        let (generation, probe) = match breaker.admit(now) {
            Admit::Untracked => return ResponseFuture::untracked(self.inner.call(req)),
            Admit::Refuse {
                retry_after,
                cooldown,
            } => {
                let key = key.unwrap_or_else(|| DEFAULT_KEY.to_owned());
                let error = if cooldown {
                    Error::cooling_down(key, retry_after)
                } else {
                    Error::circuit_open(key, retry_after)
                };
                return ResponseFuture::refused(error.into());
            }
            Admit::Call { generation } => (generation, None),
            Admit::Probe { generation, id } => (generation, Some(id)),
        };
        // The guard exists before the inner call, so a probe's permit is freed even if the
        // call unwinds.
        let admission = Admission {
            breaker,
            generation,
            probe,
            started: now,
            done: false,
        };
        ResponseFuture::tracked(self.inner.call(req), admission)
    }
}

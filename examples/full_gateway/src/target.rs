//! Resolves the requested model to its target before the per-target layers.
//!
//! The per-target layers (circuit breaker, and later the per-target rate limit) key on the
//! `Target` request extension: provider + model. Until a router sets it, this layer sets it from
//! the model catalog, and refuses unknown models with a 404 before any per-target state is
//! created for a client-chosen name.

use std::future::Ready;
use std::task::{Context, Poll};

use futures_util::future::{Either, ErrInto, TryFutureExt};
use http::Request;
use rampart_core::{Body, BoxError, Error, Target, chat_request};
use rampart_upstream::Upstream;
use tower::{Layer, Service};

/// Builds [`ResolveTarget`].
#[derive(Clone, Debug)]
pub struct ResolveTargetLayer {
    upstream: Upstream,
}

impl ResolveTargetLayer {
    /// Resolves with the models `upstream` serves.
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }
}

impl<S> Layer<S> for ResolveTargetLayer {
    type Service = ResolveTarget<S>;
    fn layer(&self, inner: S) -> ResolveTarget<S> {
        ResolveTarget {
            inner,
            upstream: self.upstream.clone(),
        }
    }
}

/// Sets the `Target` extension from the requested model (unless already set).
#[derive(Clone, Debug)]
pub struct ResolveTarget<S> {
    inner: S,
    upstream: Upstream,
}

impl<S> Service<Request<Body>> for ResolveTarget<S>
where
    S: Service<Request<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<Ready<Result<S::Response, BoxError>>, ErrInto<S::Future, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if req.extensions().get::<Target>().is_none() {
            let Some(chat) = chat_request(&req) else {
                let err = Error::internal("ResolveTarget needs the edge adapter's parsed request");
                return Either::Left(std::future::ready(Err(err.into())));
            };
            match self.upstream.target(chat.model()) {
                Some(target) => {
                    let target = target.clone();
                    req.extensions_mut().insert(target);
                }
                None => {
                    let err = Error::model_not_found(chat.model(), self.upstream.model_names());
                    return Either::Left(std::future::ready(Err(err.into())));
                }
            }
        }
        Either::Right(self.inner.call(req).err_into())
    }
}

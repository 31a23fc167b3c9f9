//! [`ResponseFuture`]: the future of both parallel layers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use rampart_core::{Body, BoxError};

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

pin_project! {
    /// The future of [`Hedge`](crate::Hedge) and [`FanOut`](crate::FanOut): the inner future
    /// itself for a request the layer leaves alone (no allocation), a boxed one for a request
    /// it calls in parallel.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Direct { #[pin] fut: F },
        Parallel { fut: BoxFuture },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn direct(fut: F) -> Self {
        Self {
            kind: Kind::Direct { fut },
        }
    }

    pub(crate) fn boxed(fut: BoxFuture) -> Self {
        Self {
            kind: Kind::Parallel { fut },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Direct { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Parallel { fut } => fut.as_mut().poll(cx),
        }
    }
}

//! A body wrapper that holds a concurrency permit until the body ends or is dropped, for inner
//! services whose responses carry no `ResponseFacts`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use rampart_core::{Body, BoxError};

use crate::reservation::Permit;

pub(crate) struct PermitBody {
    inner: Body,
    permit: Option<Permit>,
}

impl PermitBody {
    /// Wraps `body`; releases at once if it is already at its end.
    pub(crate) fn wrap(body: Body, permit: Permit) -> Body {
        if http_body::Body::is_end_stream(&body) {
            drop(permit);
            return body;
        }
        Body::new(PermitBody {
            inner: body,
            permit: Some(permit),
        })
    }
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.permit = None,
            // hyper stops polling once Content-Length bytes are written: release at the end of
            // the data, not at a final poll that may never come.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.permit = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

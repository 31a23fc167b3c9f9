//! The upstream response body with its idle and total deadlines.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use rampart_core::{Body, BoxError};
use tokio::time::{Instant, Sleep};

/// A body that fails when the upstream is silent for longer than `idle`, or when the whole call
/// passes its `deadline`.
pub(crate) struct DeadlineBody {
    inner: Body,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    done: bool,
}

impl DeadlineBody {
    pub(crate) fn new(inner: Body, idle: Duration, deadline: Instant) -> Self {
        Self {
            inner,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            done: false,
        }
    }
}

/// The upstream went silent or ran out of time mid-body.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    /// No data for the idle timeout.
    #[error("the upstream sent no data for {0:?}")]
    Idle(Duration),
    /// The total timeout passed.
    #[error("the upstream call exceeded its total timeout")]
    Total,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let idle = this.idle;
                this.idle_timer.as_mut().reset(Instant::now() + idle);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout::Total))));
                }
                if this.idle_timer.as_mut().poll(cx).is_ready() {
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout::Idle(this.idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! The response future, and how an admitted call's outcome reaches its breaker: at once for
//! errors and error statuses, when the body ends (through the response's
//! [`Completion`](rampart_core::Completion)) for a 2xx.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;
use rampart_core::error::find_error;
use rampart_core::tap::{TapOptions, is_event_stream, tap_body};
use rampart_core::{
    Body, BoxError, Completion, CompletionReport, Error, ResponseFacts, Verdict, classify_error,
    classify_report, classify_status,
};
use tokio::time::Instant;

use crate::registry::Breaker;
use crate::state::Event;

/// A call admitted by a breaker. Recording its outcome consumes it; dropping it unrecorded
/// (the future or the body dropped, a callback never run) frees a probe's permit.
pub(crate) struct Admission {
    pub breaker: Arc<Breaker>,
    pub generation: u64,
    pub probe: Option<u64>,
    pub started: Instant,
    pub done: bool,
}

impl Admission {
    fn finish(mut self, event: Event) {
        self.done = true;
        self.breaker.record(self.generation, self.probe, event);
    }

    fn is_slow(&self, ttfb: Duration) -> bool {
        self.breaker
            .policy()
            .config
            .slow_call_threshold
            .is_some_and(|threshold| ttfb > threshold)
    }

    fn finish_report(self, report: &CompletionReport, ttfb: Duration) {
        let event = match classify_report(report) {
            Verdict::Success => {
                let first_byte = report.first_byte.map_or(ttfb, |fb| fb.max(ttfb));
                Event::Success {
                    slow: self.is_slow(first_byte),
                }
            }
            Verdict::Failure => Event::Failure { slow: false },
            Verdict::RateLimited { retry_after } => Event::RateLimited { retry_after },
            Verdict::Ignored => Event::Ignored,
        };
        self.finish(event);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // A closed-state call that never ended says nothing; a probe must give its permit back.
        if !self.done && self.probe.is_some() {
            self.done = true;
            self.breaker
                .record(self.generation, self.probe, Event::Ignored);
        }
    }
}

/// How an error returned instead of a response counts.
fn error_event(err: &BoxError) -> Event {
    if find_error(err).is_some_and(Error::is_refusal) {
        return Event::Ignored;
    }
    match classify_error(err) {
        Verdict::Failure => Event::Failure { slow: false },
        Verdict::RateLimited { retry_after } => Event::RateLimited { retry_after },
        Verdict::Success | Verdict::Ignored => Event::Ignored,
    }
}

fn observe(
    admission: Admission,
    result: Result<Response<Body>, BoxError>,
) -> Result<Response<Body>, BoxError> {
    match result {
        Err(err) => {
            admission.finish(error_event(&err));
            Err(err)
        }
        Ok(resp) => Ok(observe_response(admission, resp)),
    }
}

fn observe_response(admission: Admission, resp: Response<Body>) -> Response<Body> {
    let facts = resp.extensions().get::<ResponseFacts>();
    match classify_status(resp.status(), resp.headers()) {
        Verdict::Success => {
            if let Some(facts) = facts {
                // The outcome is known when the body ends (a stream may still break).
                let ttfb = facts.ttfb;
                facts
                    .completion
                    .on_complete(move |report| admission.finish_report(report, ttfb));
                return resp;
            }
            // A foreign inner service without response facts: tap the body ourselves so that
            // the end of a stream is still observed.
            let ttfb = admission
                .breaker
                .policy()
                .now()
                .saturating_duration_since(admission.started);
            let completion = Completion::started_at(admission.started);
            let (parts, body) = resp.into_parts();
            let options = TapOptions {
                sse: is_event_stream(&parts.headers),
                status: parts.status,
                hide_usage_chunk: false,
            };
            let body = tap_body(body, completion.clone(), options);
            completion.on_complete(move |report| admission.finish_report(report, ttfb));
            Response::from_parts(parts, body)
        }
        Verdict::Failure => {
            let slow = facts.is_some_and(|f| admission.is_slow(f.ttfb));
            admission.finish(Event::Failure { slow });
            resp
        }
        Verdict::RateLimited { retry_after } => {
            admission.finish(Event::RateLimited { retry_after });
            resp
        }
        Verdict::Ignored => {
            admission.finish(Event::Ignored);
            resp
        }
    }
}

pin_project! {
    /// The future of [`CircuitBreaker`](crate::CircuitBreaker): a refusal ready at once, or the
    /// inner service's future whose outcome is recorded.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Refused { error: Option<BoxError> },
        Untracked { #[pin] future: F },
        Tracked { #[pin] future: F, admission: Option<Admission> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn refused(error: BoxError) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
        }
    }

    pub(crate) fn untracked(future: F) -> Self {
        Self {
            kind: Kind::Untracked { future },
        }
    }

    pub(crate) fn tracked(future: F, admission: Admission) -> Self {
        Self {
            kind: Kind::Tracked {
                future,
                admission: Some(admission),
            },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Refused { .. } => "refused",
            Kind::Untracked { .. } => "untracked",
            Kind::Tracked { .. } => "tracked",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
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
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "circuit breaker future polled after completion".into()))),
            KindProj::Untracked { future } => future.poll(cx).map_err(Into::into),
            KindProj::Tracked { future, admission } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                Poll::Ready(match admission.take() {
                    Some(admission) => observe(admission, result),
                    None => result,
                })
            }
        }
    }
}

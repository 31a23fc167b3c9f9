//! What a response was and how it ended: [`ResponseFacts`] and the [`Completion`] handle.
//!
//! The upstream (or [`crate::tap::tap_response`] for a foreign service) attaches `ResponseFacts`
//! to every response. Its `completion` is resolved exactly once, when the body ends, fails or is
//! dropped; layers that must act at the end of a stream (release a permit, settle tokens,
//! record a breaker outcome, fill the cache, account spend) register a callback with
//! [`Completion::on_complete`] instead of wrapping the body again.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::openai::Usage;

/// The target that served (or is to serve) a request: a provider and a model on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The provider's configured name.
    pub provider: Arc<str>,
    /// The model as clients name it (the alias in the catalog).
    pub model: Arc<str>,
}

impl Target {
    /// A target.
    pub fn new(provider: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// How a response body ended. The first outcome recorded wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body ended cleanly: a JSON answer, or a stream with `[DONE]` or a finish reason.
    Complete,
    /// The upstream sent an error (an error status, an SSE error event, or a failing body).
    UpstreamError(String),
    /// The stream ended without `[DONE]` or a finish reason.
    Cut,
    /// The client went away before the end.
    ClientGone,
    /// The gateway dropped the body on purpose (e.g. a failed attempt a fallback discards).
    Abandoned,
}

/// What is known when the body ends.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionReport {
    /// How it ended.
    pub outcome: Outcome,
    /// The usage the provider reported, if any.
    pub usage: Option<Usage>,
    /// The finish reason of the (first) choice, if seen.
    pub finish_reason: Option<String>,
    /// Whether a stream's `data: [DONE]` was seen.
    pub saw_done: bool,
    /// Body bytes seen.
    pub bytes: u64,
    /// Time from the start of the upstream call to the first body byte.
    pub first_byte: Option<Duration>,
    /// Time from the start of the upstream call to the end.
    pub elapsed: Duration,
}

impl CompletionReport {
    /// A report with only an outcome.
    pub fn bare(outcome: Outcome) -> Self {
        Self {
            outcome,
            usage: None,
            finish_reason: None,
            saw_done: false,
            bytes: 0,
            first_byte: None,
            elapsed: Duration::ZERO,
        }
    }

    /// A complete answer (cacheable shape): clean end with a finish reason, and `[DONE]` for
    /// streams.
    pub fn is_complete_answer(&self, stream: bool) -> bool {
        self.outcome == Outcome::Complete
            && self.finish_reason.is_some()
            && (!stream || self.saw_done)
    }
}

type Callback = Box<dyn FnOnce(&CompletionReport) + Send>;

/// Callbacks waiting for the end. Most responses have one or two observers; the first is kept
/// inline so registering it allocates only the boxed closure.
#[derive(Default)]
struct Pending {
    first: Option<Callback>,
    rest: Vec<Callback>,
}

enum State {
    Pending(Pending),
    Done(Arc<CompletionReport>),
}

struct Inner {
    state: Mutex<State>,
    notify: Notify,
    started: Instant,
}

/// A handle that resolves once when a response body ends. Cheap to clone; every clone observes
/// the same resolution.
#[derive(Clone)]
pub struct Completion {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("report", &self.report())
            .finish()
    }
}

impl Default for Completion {
    fn default() -> Self {
        Self::new()
    }
}

impl Completion {
    /// A pending handle whose clock starts now.
    pub fn new() -> Self {
        Self::started_at(Instant::now())
    }

    /// A pending handle whose clock started at `started`.
    pub fn started_at(started: Instant) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::Pending(Pending::default())),
                notify: Notify::new(),
                started,
            }),
        }
    }

    /// When the upstream call started.
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Callbacks run outside the lock, so a poisoned lock only means a panic elsewhere;
        // the state itself is always consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` when the body ends (at once if it already has). Callbacks run inline on the
    /// task that ends the body: keep them short and non-blocking.
    pub fn on_complete(&self, f: impl FnOnce(&CompletionReport) + Send + 'static) {
        let mut state = self.lock();
        match &mut *state {
            State::Pending(p) if p.first.is_none() => p.first = Some(Box::new(f)),
            State::Pending(p) => p.rest.push(Box::new(f)),
            State::Done(report) => {
                let report = report.clone();
                drop(state);
                f(&report);
            }
        }
    }

    /// Records the end. Returns `false` (and changes nothing) if already resolved.
    pub fn resolve(&self, report: CompletionReport) -> bool {
        let report = Arc::new(report);
        let callbacks = {
            let mut state = self.lock();
            match &mut *state {
                State::Done(_) => return false,
                State::Pending(cbs) => {
                    let cbs = std::mem::take(cbs);
                    *state = State::Done(report.clone());
                    cbs
                }
            }
        };
        for cb in callbacks.first.into_iter().chain(callbacks.rest) {
            cb(&report);
        }
        self.inner.notify.notify_waiters();
        true
    }

    /// Marks the body as dropped on purpose by the gateway (e.g. a discarded attempt).
    pub fn abandon(&self) -> bool {
        let mut r = CompletionReport::bare(Outcome::Abandoned);
        r.elapsed = self.inner.started.elapsed();
        self.resolve(r)
    }

    /// Marks the attempt as failed (e.g. no first token in time) before it is dropped.
    pub fn fail(&self, reason: impl Into<String>) -> bool {
        let mut r = CompletionReport::bare(Outcome::UpstreamError(reason.into()));
        r.elapsed = self.inner.started.elapsed();
        self.resolve(r)
    }

    /// The report, once resolved.
    pub fn report(&self) -> Option<Arc<CompletionReport>> {
        match &*self.lock() {
            State::Done(r) => Some(r.clone()),
            State::Pending(_) => None,
        }
    }

    /// Whether the handle has resolved.
    pub fn is_resolved(&self) -> bool {
        matches!(&*self.lock(), State::Done(_))
    }

    /// Waits for the end.
    pub async fn wait(&self) -> Arc<CompletionReport> {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.report() {
                return r;
            }
            notified.await;
        }
    }
}

/// Facts about a response, attached as a response extension by the upstream (or the core tap).
#[derive(Debug, Clone)]
pub struct ResponseFacts {
    /// The target that served it.
    pub target: Target,
    /// The model name the provider was asked for (after mapping).
    pub upstream_model: Arc<str>,
    /// Time from the start of the upstream call to its response headers.
    pub ttfb: Duration,
    /// Whether the body is an SSE stream.
    pub stream: bool,
    /// Resolves when the body ends.
    pub completion: Completion,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn resolves_once_and_runs_callbacks() {
        let c = Completion::new();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        c.on_complete(move |r| {
            assert_eq!(r.outcome, Outcome::Complete);
            h.fetch_add(1, Ordering::SeqCst);
        });
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait().await.outcome.clone() }
        });
        tokio::task::yield_now().await;
        assert!(c.resolve(CompletionReport::bare(Outcome::Complete)));
        assert!(!c.resolve(CompletionReport::bare(Outcome::ClientGone)));
        assert!(!c.abandon());
        assert_eq!(waiter.await.unwrap(), Outcome::Complete);
        // Registered after the end: runs at once.
        let h = hits.clone();
        c.on_complete(move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}

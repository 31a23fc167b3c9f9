//! Single-flight and the fill task.
//!
//! Every miss that may be stored runs its upstream call in a spawned task (the *fill task*),
//! which reads the upstream body to its end, forwarding each frame to the client through a
//! bounded channel and assembling the answer as it passes. The call therefore survives its client
//! leaving. A client that reads slowly slows the fill to its pace (like any proxy, and memory stays
//! bounded); a client that stops reading for [`CLIENT_STALL`] is given up on (its body ends with
//! an error) and the fill goes on without it.
//!
//! Concurrent identical misses (same namespace and canonical hash) share one fill: the first is
//! the leader, the others wait on a `watch` channel, bounded by `flight_timeout`, for the
//! outcome:
//!
//! - a complete answer: each waiter replays it in its own shape (JSON or SSE) as a hit — for a
//!   streamed miss, waiters get the answer once the stream has ended, then all at once;
//! - an error (the inner service's error, a non-2xx answer, or a 2xx that did not complete): each
//!   waiter gets the same status and body (an upstream error body, or the OpenAI-shaped error of
//!   the gateway); nothing is stored;
//! - nothing within the timeout (or the fill task vanished): the waiter goes upstream itself
//!   (and fills the entry too, without joining a flight).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use rampart_core::headers::{
    X_RAMPART_CACHE, X_RAMPART_MODEL, X_RAMPART_PROVIDER, X_RAMPART_ROUTE,
};
use rampart_core::tap::is_event_stream;
use rampart_core::{Body, BoxError, Error, ErrorKind, ResponseFacts, error_response};
use tokio::sync::{mpsc, oneshot, watch};

use crate::entry::{Assembler, CacheEntry};
use crate::key::CacheKey;
use crate::layer::Shared;

/// Largest error body shared with waiters.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What a flight ends with.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// A complete answer (stored, unless too large or `ttl = 0`).
    Entry(Arc<CacheEntry>),
    /// The error every waiter gets.
    Error(Arc<ErrorReply>),
}

/// An error response that can be given to many clients.
pub(crate) struct ErrorReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl ErrorReply {
    fn from_response(resp: Response<Body>) -> Self {
        let (parts, body) = resp.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: body.to_bytes().unwrap_or_default(),
        }
    }

    fn from_error(e: &BoxError) -> Self {
        Self::from_response(error_response(e))
    }

    fn broken() -> Self {
        Self::from_response(
            Error::new(
                ErrorKind::UpstreamBroken,
                "The upstream answer this request shared ended before it was complete.",
            )
            .to_response(),
        )
    }

    /// The response for one waiter.
    pub(crate) fn response(&self) -> Response<Body> {
        let mut resp = Response::new(Body::from_bytes(self.body.clone()));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        resp
    }
}

type Slot = watch::Receiver<Option<Outcome>>;

/// The flights in progress.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<CacheKey, (u64, Slot)>>,
    next: AtomicU64,
}

/// Joining a flight: lead it, or wait for it.
pub(crate) enum Join {
    Leader(FlightGuard),
    Waiter(Slot),
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, (u64, Slot)>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leads the flight of `key`, or joins the one in progress.
    pub(crate) fn join(self: &Arc<Self>, key: &CacheKey) -> Join {
        let mut map = self.lock();
        if let Some((_, rx)) = map.get(key) {
            return Join::Waiter(rx.clone());
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), (id, rx));
        Join::Leader(FlightGuard {
            flights: self.clone(),
            key: key.clone(),
            id,
            tx,
            removed: false,
        })
    }

    /// Flights in progress.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The leader's side of a flight. Dropped without an outcome (the fill task vanished), it
/// removes the flight and its waiters go upstream themselves.
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: CacheKey,
    id: u64,
    tx: watch::Sender<Option<Outcome>>,
    removed: bool,
}

impl FlightGuard {
    fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        let mut map = self.flights.lock();
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }

    /// Ends the flight: later requests no longer join it (they find the entry in the store, or
    /// lead a new flight), and every waiter gets `outcome`.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.remove();
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Waits for a flight's outcome; `None` when it did not come within `timeout`.
pub(crate) async fn wait(mut slot: Slot, timeout: Duration) -> Option<Outcome> {
    match tokio::time::timeout(timeout, slot.wait_for(Option::is_some)).await {
        Ok(Ok(v)) => v.clone(),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// What the fill task stores.
pub(crate) struct Fill {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: CacheKey,
    pub(crate) canonical: Bytes,
    /// `None`: do not store (the answer still goes to the waiters).
    pub(crate) ttl: Option<Duration>,
    pub(crate) flight: Option<FlightGuard>,
}

/// Runs `call` in the fill task and returns the client's response (`x-rampart-cache: miss`).
pub(crate) async fn fill<F, E>(call: F, fill: Fill) -> Result<Response<Body>, BoxError>
where
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    let (tx, rx) = oneshot::channel();
    tokio::spawn(drive(call, tx, fill));
    match rx.await {
        Ok(r) => r,
        Err(_) => Err(Error::internal("the cache fill task ended without an answer").into()),
    }
}

type Head = oneshot::Sender<Result<Response<Body>, BoxError>>;

async fn drive<F, E>(call: F, head: Head, fill: Fill)
where
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    let Fill {
        shared,
        key,
        canonical,
        ttl,
        flight,
    } = fill;
    let resp = match call.await {
        Ok(r) => r,
        Err(e) => {
            let e: BoxError = e.into();
            if let Some(f) = flight {
                f.finish(Outcome::Error(Arc::new(ErrorReply::from_error(&e))));
            }
            let _ = head.send(Err(e));
            return;
        }
    };
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .insert(X_RAMPART_CACHE, HeaderValue::from_static("miss"));
    if !parts.status.is_success() {
        let Some(f) = flight else {
            let _ = head.send(Ok(Response::from_parts(parts, body)));
            return;
        };
        // Waiters get the same answer: read the (small) error body once.
        let resp = match body.collect_limited(MAX_ERROR_BODY).await {
            Ok(bytes) => {
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, Body::from_bytes(bytes))
            }
            Err(_) => {
                let mut r = ErrorReply::broken().response();
                r.headers_mut()
                    .insert(X_RAMPART_CACHE, HeaderValue::from_static("miss"));
                r
            }
        };
        let (p, b) = resp.into_parts();
        let reply = Arc::new(ErrorReply {
            status: p.status,
            headers: p.headers.clone(),
            body: b.to_bytes().unwrap_or_default(),
        });
        f.finish(Outcome::Error(reply));
        let _ = head.send(Ok(Response::from_parts(p, b)));
        return;
    }

    // An answer a budget downgraded is not what this request asks for in general: serve it,
    // share it with the waiters, but do not keep it.
    let downgraded = parts
        .headers
        .get(X_RAMPART_ROUTE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|r| r.contains("downgraded="));
    let ttl = if downgraded { None } else { ttl };
    let facts = parts.extensions.get::<ResponseFacts>().cloned();
    let sse = is_event_stream(&parts.headers);
    let model = parts.headers.get(X_RAMPART_MODEL).cloned().or_else(|| {
        facts
            .as_ref()
            .and_then(|f| HeaderValue::from_str(&f.target.model).ok())
    });
    let route = parts.headers.get(X_RAMPART_ROUTE).cloned();
    let provider = parts.headers.get(X_RAMPART_PROVIDER).cloned().or_else(|| {
        facts
            .as_ref()
            .and_then(|f| HeaderValue::from_str(&f.target.provider).ok())
    });
    let (tx, rx) = mpsc::channel(FORWARD_BUFFER);
    let mut tx = Some(tx);
    let stalled = Arc::new(AtomicBool::new(false));
    let ended = http_body::Body::is_end_stream(&body);
    let client_body = ChannelBody {
        rx,
        stalled: stalled.clone(),
        done: ended,
        hint: http_body::Body::size_hint(&body),
    };
    let _ = head.send(Ok(Response::from_parts(parts, Body::new(client_body))));

    let limit = usize::try_from(shared.max_entry_bytes).unwrap_or(usize::MAX);
    let mut asm = Assembler::new(sse, limit);
    let mut body = body;
    let mut ok = true;
    if !ended {
        loop {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    ok = false;
                    forward(&mut tx, &stalled, Err(e)).await;
                    break;
                }
                Some(Ok(frame)) => {
                    let last = http_body::Body::is_end_stream(&body);
                    let data = frame.data_ref().cloned();
                    // The client first; a client that left is no reason to stop.
                    forward(&mut tx, &stalled, Ok((frame, last))).await;
                    if let Some(d) = data {
                        asm.push(&d);
                    }
                    if last {
                        break;
                    }
                }
            }
        }
    }
    drop(tx);
    // The tap (inside `body`) has resolved by now: at the end, on the error, or on this drop.
    drop(body);
    let report = facts.as_ref().and_then(|f| f.completion.report());
    let complete = ok && report.as_ref().is_none_or(|r| r.is_complete_answer(sse));
    let usage = report.and_then(|r| r.usage.clone());
    let answer = if complete { asm.finish(usage) } else { None };
    let Some((completion, json)) = answer else {
        tracing::debug!(?key, "not cached: the answer did not complete");
        if let Some(f) = flight {
            f.finish(Outcome::Error(Arc::new(ErrorReply::broken())));
        }
        return;
    };
    let now = shared.clock.now();
    let entry = Arc::new(
        CacheEntry::new(
            canonical,
            completion,
            json,
            now,
            ttl.unwrap_or(Duration::ZERO),
        )
        .with_served_by(model, provider)
        .with_route(route),
    );
    if ttl.is_some() && entry.weight() <= shared.max_entry_bytes {
        if let Err(e) = shared.store.put(key.clone(), entry.clone()).await {
            tracing::warn!(error = %e, "cache store refused an entry");
        }
    } else {
        tracing::debug!(?key, "not cached: ttl 0 or larger than max_entry_bytes");
    }
    if let Some(f) = flight {
        f.finish(Outcome::Entry(entry));
    }
}

type Item = Result<(Frame<Bytes>, bool), BoxError>;

/// Frames buffered for a client that reads more slowly than the upstream sends.
const FORWARD_BUFFER: usize = 256;

/// How long the fill waits for a client that stopped reading before going on without it.
pub const CLIENT_STALL: Duration = Duration::from_secs(30);

/// The client stopped reading for [`CLIENT_STALL`]; its answer was cut.
#[derive(Debug, thiserror::Error)]
#[error("the client stopped reading; the response was cut")]
struct ClientStalled;

/// Sends `item` to the client, waiting at most [`CLIENT_STALL`] for room. A client that left or
/// stalled is dropped (`tx` becomes `None`); a stalled one is flagged so that its body ends with an
/// error after the frames already buffered, never silently.
async fn forward(tx: &mut Option<mpsc::Sender<Item>>, stalled: &AtomicBool, item: Item) {
    let stall = {
        let Some(sender) = tx.as_ref() else {
            return;
        };
        match tokio::time::timeout(CLIENT_STALL, sender.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(item);
                return;
            }
            Ok(Err(_)) => false,
            Err(_) => true,
        }
    };
    if stall {
        tracing::debug!("cache fill: the client stopped reading; going on without it");
        stalled.store(true, Ordering::Release);
    }
    *tx = None;
}

struct ChannelBody {
    rx: mpsc::Receiver<Item>,
    stalled: Arc<AtomicBool>,
    done: bool,
    hint: SizeHint,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                if self.stalled.load(Ordering::Acquire) {
                    return Poll::Ready(Some(Err(Box::new(ClientStalled))));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok((frame, last)))) => {
                self.done = last;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

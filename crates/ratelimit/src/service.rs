//! [`RateLimit`]: the service of [`RateLimitLayer`](crate::RateLimitLayer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use rampart_core::error::find_error;
use rampart_core::headers::X_RAMPART_DEGRADED;
use rampart_core::{
    Body, BoxError, ChatRequest, Error, ResponseFacts, chat_request, ensure_chat_request,
};
use tokio::time::Instant;
use tower_service::Service;

use crate::body::PermitBody;
use crate::config::StoreFailure;
use crate::error::{insert_ratelimit_headers, refused, store_unavailable, too_large};
use crate::key::request_model;
use crate::layer::Shared;
use crate::reservation::{Permit, Ticket, TokenReservation};
use crate::store::{Admission, Decision, LimitKind, Quota, Snapshot, StoreError};

/// The future of [`RateLimit::call`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// The rate-limiting service. `poll_ready` only forwards; admission happens in `call`.
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for RateLimit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("scope", &self.shared.scope)
            .finish()
    }
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        // Use the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        // Fast path: a parsed request and a store that decides synchronously — everything is
        // decided here, and the future only awaits the inner call.
        let Some(chat) = chat_request(&req).cloned() else {
            return Box::pin(slow(shared, inner, req));
        };
        let plan = match plan(&shared, &req, &chat) {
            Plan::Bypass => return Box::pin(forward(inner.call(req))),
            Plan::Limit(plan) => plan,
        };
        if plan.tokens_over_burst() {
            if let Some(snapshot) = peek_now(&shared, &plan) {
                return Box::pin(std::future::ready(Err(oversized(
                    &shared, &plan, &snapshot,
                ))));
            }
            return Box::pin(slow(shared, inner, req));
        }
        match shared
            .store
            .try_acquire(&plan.key, &plan.quota, plan.tokens)
        {
            Some(Ok(Decision::Admitted(admission))) => {
                shared.store_answered();
                let (req, guard) = Guard::admit(&shared, plan, Admitted::Yes(admission), req);
                Box::pin(complete(inner.call(req), guard))
            }
            Some(Ok(Decision::Refused(refusal))) if shared.max_wait.is_zero() => {
                shared.store_answered();
                Box::pin(std::future::ready(Err(reject(&shared, &plan, &refusal))))
            }
            Some(Err(e)) => match on_store_error(&shared, e) {
                Ok(admitted) => {
                    let (req, guard) = Guard::admit(&shared, plan, admitted, req);
                    Box::pin(complete(inner.call(req), guard))
                }
                Err(e) => Box::pin(std::future::ready(Err(e.into()))),
            },
            // Queue mode, or a store that must be asked asynchronously.
            _ => Box::pin(slow(shared, inner, req)),
        }
    }
}

/// What to charge for a request.
struct LimitPlan {
    key: Arc<str>,
    quota: Quota,
    tokens: u64,
}

impl LimitPlan {
    fn tokens_over_burst(&self) -> bool {
        self.quota.tokens.is_some_and(|r| self.tokens > r.burst)
    }
}

enum Plan {
    /// No key, or nothing limited for it.
    Bypass,
    Limit(LimitPlan),
}

fn plan(shared: &Shared, req: &Request<Body>, chat: &ChatRequest) -> Plan {
    let Some(key) = shared.extractor.key(req, chat) else {
        return Plan::Bypass;
    };
    let model = request_model(req, chat);
    let quota = shared.quota(&key, model);
    if quota.is_unlimited() {
        return Plan::Bypass;
    }
    let tokens = if quota.tokens.is_some() {
        shared.estimate(chat, model)
    } else {
        0
    };
    Plan::Limit(LimitPlan { key, quota, tokens })
}

/// Admission outcome.
enum Admitted {
    /// Charged (the buckets after the charge, and the reservation).
    Yes(Admission),
    /// The store failed and the policy is `fail_open`: nothing charged.
    Degraded,
}

/// What an admitted request holds until its response ends.
struct Guard {
    admitted: Admitted,
    /// Ends the admission when dropped (releasing the slot, if one was taken).
    permit: Option<Permit>,
    /// Whether the admission holds a concurrency slot (the permit must last until the body ends).
    holds_slot: bool,
    reservation: Option<TokenReservation>,
    /// The admission, to give the request unit back when the request never reached an upstream.
    ticket: Option<Arc<Ticket>>,
    /// Whether to set the `x-ratelimit-*` headers ([`RateLimitLayerBuilder::response_headers`]).
    headers: bool,
}

impl Guard {
    /// Takes the permit and the reservation, and puts the reservation in the request.
    fn admit(
        shared: &Shared,
        plan: LimitPlan,
        admitted: Admitted,
        mut req: Request<Body>,
    ) -> (Request<Body>, Guard) {
        let Admitted::Yes(admission) = &admitted else {
            return (
                req,
                Guard {
                    admitted,
                    permit: None,
                    holds_slot: false,
                    reservation: None,
                    ticket: None,
                    headers: shared.response_headers,
                },
            );
        };
        let ticket = Ticket::new(
            shared.store.clone(),
            plan.key,
            admission.id,
            &plan.quota,
            plan.tokens,
        );
        let reservation = plan.quota.tokens.map(|_| {
            let r = TokenReservation::new(ticket.clone());
            rampart_core::SettleHooks::add_to(&mut req, r.settle_hook());
            req.extensions_mut().insert(r.clone());
            r
        });
        (
            req,
            Guard {
                admitted,
                permit: Some(Permit::new(ticket.clone())),
                holds_slot: plan.quota.concurrency.is_some(),
                reservation,
                ticket: Some(ticket),
                headers: shared.response_headers,
            },
        )
    }

    /// Hands the permit and the reservation over to the response (or lets them go on an error).
    fn finish(self, result: Result<Response<Body>, BoxError>) -> Result<Response<Body>, BoxError> {
        let Guard {
            admitted,
            permit,
            holds_slot,
            reservation,
            ticket,
            headers,
        } = self;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                // A refusal below (open breaker, another limiter, a budget) or the gateway's own
                // error (unknown model, bad request, internal) never reached an upstream: the
                // request and its tokens are given back. Upstream failures stay charged.
                let never_sent = find_error(&e).is_some_and(|e| {
                    e.is_refusal() || e.source_tag() == rampart_core::ErrorSource::Gateway
                });
                if never_sent {
                    if let Some(r) = &reservation {
                        r.settle(0);
                    }
                    if let Some(t) = &ticket {
                        t.refund_request();
                    }
                }
                // The admission ends (permit dropped); any other reservation stays charged.
                return Err(e);
            }
        };
        // An upstream that answered with an error status bills no tokens.
        if !resp.status().is_success()
            && let Some(r) = &reservation
        {
            r.settle(0);
        }
        drop(ticket);
        let degraded = match &admitted {
            Admitted::Yes(a) => {
                if headers {
                    insert_ratelimit_headers(resp.headers_mut(), &a.snapshot);
                }
                a.degraded
            }
            Admitted::Degraded => true,
        };
        if degraded {
            resp.headers_mut()
                .append(X_RAMPART_DEGRADED, HeaderValue::from_static("ratelimit"));
        }
        // Without a slot or a reservation to settle, the admission ends now (the permit drops
        // at the end of this function).
        if let Some(facts) = resp.extensions().get::<ResponseFacts>() {
            if holds_slot || reservation.is_some() {
                facts.completion.on_complete(move |report| {
                    if let Some(r) = reservation {
                        match &report.usage {
                            Some(usage) => {
                                r.settle(usage.total_tokens);
                            }
                            // No usage (a cut stream, an error): keep the reservation.
                            None => {
                                r.keep();
                            }
                        }
                    }
                    drop(permit);
                });
            }
        } else if let Some(permit) = permit.filter(|_| holds_slot) {
            // No completion handle: the body holds the slot. The reservation stays charged.
            let (parts, body) = resp.into_parts();
            resp = Response::from_parts(parts, PermitBody::wrap(body, permit));
        }
        Ok(resp)
    }
}

async fn forward<F, E>(fut: F) -> Result<Response<Body>, BoxError>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    fut.await.map_err(Into::into)
}

/// Awaits the inner call. Dropping this future drops the guard: the slot is released and the
/// reservation stays charged (the upstream may have done the work).
async fn complete<F, E>(fut: F, guard: Guard) -> Result<Response<Body>, BoxError>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    let result = fut.await.map_err(Into::into);
    guard.finish(result)
}

/// The general path: parses the request when needed, asks the store asynchronously, waits in
/// queue mode.
async fn slow<S>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    let (req, chat) = match chat_request(&req).cloned() {
        Some(chat) => (req, chat),
        None => ensure_chat_request(req, shared.edge).await?,
    };
    let plan = match plan(&shared, &req, &chat) {
        Plan::Bypass => return inner.call(req).await.map_err(Into::into),
        Plan::Limit(plan) => plan,
    };
    if plan.tokens_over_burst() {
        let snapshot = peek(&shared, &plan).await;
        return Err(oversized(&shared, &plan, &snapshot));
    }
    let admitted = admit(&shared, &plan).await?;
    let (req, guard) = Guard::admit(&shared, plan, admitted, req);
    complete(inner.call(req), guard).await
}

/// A probe of the token bucket that charges nothing (for the headers of an oversized refusal).
fn probe(plan: &LimitPlan) -> Quota {
    Quota {
        requests: None,
        tokens: plan.quota.tokens,
        concurrency: None,
    }
}

fn probe_snapshot(decision: Result<Decision, StoreError>) -> Snapshot {
    match decision {
        Ok(Decision::Admitted(a)) => Snapshot {
            requests: None,
            tokens: a.snapshot.tokens,
        },
        Ok(Decision::Refused(r)) => r.snapshot,
        Err(_) => Snapshot::default(),
    }
}

fn peek_now(shared: &Shared, plan: &LimitPlan) -> Option<Snapshot> {
    let probe = probe(plan);
    shared
        .store
        .try_acquire(&plan.key, &probe, 0)
        .map(probe_snapshot)
}

async fn peek(shared: &Shared, plan: &LimitPlan) -> Snapshot {
    let probe = probe(plan);
    shared
        .store
        .peek(&plan.key, &probe)
        .await
        .unwrap_or_default()
}

fn oversized(shared: &Shared, plan: &LimitPlan, snapshot: &Snapshot) -> BoxError {
    count_rejection(&shared.scope);
    let burst = plan.quota.tokens.map_or(0, |r| r.burst);
    too_large(&shared.scope, plan.tokens, burst, snapshot).into()
}

fn reject(shared: &Shared, plan: &LimitPlan, refusal: &crate::store::Refusal) -> BoxError {
    count_rejection(&shared.scope);
    tracing::debug!(scope = %shared.scope, kind = ?refusal.kind, "rate limited");
    let e = refused(
        &shared.scope,
        refusal,
        &plan.quota,
        plan.tokens,
        shared.concurrency_retry_after,
    );
    if refusal.degraded {
        return e
            .with_header(X_RAMPART_DEGRADED, HeaderValue::from_static("ratelimit"))
            .into();
    }
    e.into()
}

async fn admit(shared: &Shared, plan: &LimitPlan) -> Result<Admitted, BoxError> {
    let deadline = (!shared.max_wait.is_zero()).then(|| Instant::now() + shared.max_wait);
    loop {
        match shared
            .store
            .acquire(&plan.key, &plan.quota, plan.tokens)
            .await
        {
            Ok(Decision::Admitted(admission)) => {
                shared.store_answered();
                return Ok(Admitted::Yes(admission));
            }
            Ok(Decision::Refused(refusal)) => {
                shared.store_answered();
                if let Some(deadline) = deadline {
                    let now = Instant::now();
                    let until = match refusal.retry_after {
                        // The refill alone comes too late: refuse now rather than hold the
                        // client for nothing.
                        Some(w) if refusal.kind != LimitKind::Concurrency && now + w > deadline => {
                            None
                        }
                        Some(w) => Some((now + w).min(deadline)),
                        None => Some(deadline),
                    };
                    if let Some(until) = until.filter(|_| now < deadline) {
                        shared.store.wait(&plan.key, &refusal, until).await;
                        continue;
                    }
                }
                return Err(reject(shared, plan, &refusal));
            }
            Err(e) => return on_store_error(shared, e).map_err(Into::into),
        }
    }
}

/// A store error, under the layer's policy (the store's own, when it has one). Logged once per
/// transition into failure (and once on recovery), counted every time.
fn on_store_error(shared: &Shared, e: StoreError) -> Result<Admitted, Error> {
    metrics::counter!("rampart_ratelimit_store_errors_total", "scope" => shared.scope.clone())
        .increment(1);
    let first = !shared.store_failing.swap(true, Ordering::AcqRel);
    match shared.on_store_error {
        StoreFailure::FailOpen => {
            if first {
                tracing::warn!(scope = %shared.scope, error = %e, "rate limit store failing; admitting (fail_open) until it answers");
            }
            Ok(Admitted::Degraded)
        }
        StoreFailure::FailClosed => {
            if first {
                tracing::warn!(scope = %shared.scope, error = %e, "rate limit store failing; refusing (fail_closed) until it answers");
            }
            Err(store_unavailable(e))
        }
    }
}

fn count_rejection(scope: &str) {
    metrics::counter!("rampart_ratelimit_rejections_total", "scope" => scope.to_owned())
        .increment(1);
}

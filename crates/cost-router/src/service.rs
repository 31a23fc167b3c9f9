//! [`CostRouter`]: the service of [`CostRouterLayer`](crate::CostRouterLayer).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use rampart_core::charge::prompt_charge;
use rampart_core::error::ErrorSource;
use rampart_core::headers::{
    X_RAMPART_COST_USD, X_RAMPART_DEGRADED, X_RAMPART_MODEL, X_RAMPART_ROUTE, insert_str,
};
use rampart_core::pricing::{format_usd, usd_value};
use rampart_core::tap::tap_response;
use rampart_core::{
    Body, BoxError, CancelCharge, CancelledCalls, CompletionReport, Error, ErrorKind, MicroUsd,
    Price, ResponseFacts, Tenant, chat_request, ensure_chat_request,
};
use tokio::time::Instant;
use tower_service::Service;

use crate::budget::{Periods, Reservation, ReservationId, ReserveOutcome, Window};
use crate::classify::Prompt;
use crate::config::{BudgetAction, StoreFailure};
use crate::layer::{Shared, decision};
use crate::router::{Compiled, GLOBAL_SCOPE, Needs, Plan, Requested, Runtime, match_rule};
use crate::strategy::{Hints, Priority};

/// The future of [`CostRouter::call`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// The routing service. `poll_ready` only forwards; the decision is made in `call`.
pub struct CostRouter<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for CostRouter<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CostRouter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostRouter")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> CostRouter<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<Request<Body>> for CostRouter<S>
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
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(route(self.shared.clone(), inner, req))
    }
}

/// Picks the candidates: explicit model (+ fallbacks), or route → rules → tier → strategy.
pub(crate) async fn decide(
    shared: &Shared,
    cfg: &Compiled,
    prompt: &Prompt<'_>,
    needs: &Needs,
    hints: &Hints,
) -> Result<Plan, Error> {
    let rt = Runtime {
        latency: &shared.latency,
        seq: &shared.seq,
    };
    match cfg.lookup(prompt.chat().model())? {
        Requested::Model(i) => cfg.plan_model(i, needs, hints),
        Requested::Route(mut route) => {
            let mut forced = None;
            if !cfg.rules.is_empty() {
                let texts = prompt.texts();
                if let Some(rule) = match_rule(&cfg.rules, &texts) {
                    if let Some(r) = rule.route.as_deref().and_then(|n| cfg.route(n)) {
                        route = r;
                    }
                    forced = rule.tier;
                }
            }
            let tier = match forced {
                Some(t) => Some(t),
                None if route.classify && hints.priority == Priority::Medium => {
                    Some(shared.classifier.classify(prompt).resolve().await)
                }
                None => None,
            };
            cfg.plan_route(route, tier, needs, hints, &rt)
        }
    }
}

fn budget_error(
    status: http::StatusCode,
    scope: &str,
    window: Window,
    needed: MicroUsd,
    left: MicroUsd,
) -> Error {
    let period = match window {
        Window::Day => "daily",
        Window::Month => "monthly",
    };
    let who = if scope == GLOBAL_SCOPE {
        "The gateway's".to_owned()
    } else {
        format!(
            "Tenant '{}'s",
            scope.strip_prefix("tenant:").unwrap_or(scope)
        )
    };
    Error::new(
        ErrorKind::BudgetExceeded { status },
        format!(
            "{who} {period} spend budget is exhausted: {} USD left, this request needs about {} USD.",
            format_usd(left),
            format_usd(needed)
        ),
    )
}

/// `x-rampart-degraded: budget`.
const DEGRADED: HeaderValue = HeaderValue::from_static("budget");

/// What [`reserve`] settled on.
struct Reserved {
    plan: Plan,
    reservation: Option<Arc<Reservation>>,
    estimate: MicroUsd,
    /// The budget was decided without the store's shared state (its outage policy applied).
    degraded: bool,
}

/// Reserves the estimate of the plan's primary; downgrades or refuses at the limit.
async fn reserve(
    shared: &Shared,
    cfg: &Compiled,
    mut plan: Plan,
    needs: &Needs,
    hints: &Hints,
    tenant: &str,
) -> Result<Reserved, Error> {
    let primary = plan
        .models
        .first()
        .and_then(|&i| cfg.catalog.at(i))
        .ok_or_else(|| Error::internal("the router produced no candidate"))?;
    let estimate = needs.estimate(primary);
    let Some((scopes, policy)) = cfg.budgets.scopes(tenant) else {
        return Ok(Reserved {
            plan,
            reservation: None,
            estimate,
            degraded: false,
        });
    };
    let at = Periods::at(shared.clock.now());
    let id = ReservationId::random();
    let keys: Vec<Arc<str>> = scopes.iter().map(|s| s.scope.clone()).collect();
    let on_error = shared
        .store
        .error_policy()
        .unwrap_or(cfg.budgets.on_store_error);
    let store_failed = |e: crate::budget::StoreError| -> Result<(), Error> {
        metrics::counter!("rampart_budget_store_errors_total").increment(1);
        match on_error {
            StoreFailure::FailOpen => {
                tracing::warn!(error = %e, "budget store failed; serving without a reservation (fail_open)");
                Ok(())
            }
            StoreFailure::FailClosed => Err(Error::new(
                ErrorKind::StoreUnavailable {
                    source: ErrorSource::Budget,
                },
                "The budget store is unavailable; retry later.",
            )
            .with_header(X_RAMPART_DEGRADED, DEGRADED)
            .with_cause(e)),
        }
    };
    let unreserved = |plan| Reserved {
        plan,
        reservation: None,
        estimate,
        degraded: true,
    };
    let reply = match shared.store.reserve(id, &scopes, estimate, at).await {
        Ok(r) => r,
        Err(e) => return store_failed(e).map(|_| unreserved(plan)),
    };
    let mut degraded = reply.degraded;
    let (scope, window, mut remaining) = match reply.outcome {
        ReserveOutcome::Reserved => {
            let r = Reservation::new(shared.store.clone(), id, keys, at, estimate);
            return Ok(Reserved {
                plan,
                reservation: Some(Arc::new(r)),
                estimate,
                degraded,
            });
        }
        ReserveOutcome::Refused {
            scope,
            window,
            remaining,
        } => (scope, window, remaining),
    };
    if policy.action == BudgetAction::Downgrade {
        for (i, cost) in cfg.downgrade_candidates(needs, hints) {
            if cost > remaining {
                break;
            }
            // A refused reservation holds nothing: the id can be tried again.
            match shared.store.reserve(id, &scopes, cost, at).await {
                Ok(reply) => {
                    degraded |= reply.degraded;
                    match reply.outcome {
                        ReserveOutcome::Reserved => {
                            metrics::counter!("rampart_budget_rejections_total", "action" => "downgrade")
                                .increment(1);
                            plan.models = vec![i];
                            plan.route.push_str(";downgraded=budget");
                            let r = Reservation::new(shared.store.clone(), id, keys, at, cost);
                            return Ok(Reserved {
                                plan,
                                reservation: Some(Arc::new(r)),
                                estimate: cost,
                                degraded,
                            });
                        }
                        ReserveOutcome::Refused { remaining: r, .. } => remaining = r,
                    }
                }
                Err(e) => return store_failed(e).map(|_| unreserved(plan)),
            }
        }
    }
    metrics::counter!("rampart_budget_rejections_total", "action" => "refuse").increment(1);
    let err = budget_error(policy.status, &scope, window, estimate, remaining);
    Err(if degraded {
        err.with_header(X_RAMPART_DEGRADED, DEGRADED)
    } else {
        err
    })
}

async fn route<S>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let (mut req, chat) = match chat_request(&req).cloned() {
        Some(chat) => (req, chat),
        None => ensure_chat_request(req, shared.edge).await?,
    };
    let cfg = shared.config.load_full();
    let hints = Hints::from_headers(req.headers())?;
    let prompt = Prompt::new(&chat);
    let needs = Needs::of(&chat, prompt.estimated_tokens(), cfg.default_output_tokens);
    let plan = decide(&shared, &cfg, &prompt, &needs, &hints).await?;
    let tenant = req
        .extensions()
        .get::<Tenant>()
        .cloned()
        .unwrap_or_else(Tenant::anonymous);
    let Reserved {
        plan,
        reservation,
        estimate,
        degraded,
    } = reserve(&shared, &cfg, plan, &needs, &hints, tenant.id()).await?;
    let decision = decision(&cfg, &plan)?;
    let primary = decision
        .primary()
        .map(|c| c.target.clone())
        .ok_or_else(|| Error::internal("the router produced no candidate"))?;
    if *primary.model != *chat.model() {
        req.extensions_mut()
            .insert(Arc::new(chat.with_model(&primary.model)));
    }
    let route_header = match &*decision.route {
        "explicit" => Some(HeaderValue::from_static("explicit")),
        route => HeaderValue::from_str(route).ok(),
    };
    req.extensions_mut().insert(primary.clone());
    req.extensions_mut().insert(decision);

    // A parallel layer above (a fan-out) may cancel this call (it lost): it is then charged
    // its prompt estimate at the primary's input price.
    let cell = req.extensions().get::<CancelCharge>().cloned();
    let cancel_cost = match (&cell, cfg.catalog.get(&primary.model)) {
        (Some(_), Some(m)) => prompt_charge(&m.price, chat.estimate_prompt_tokens()),
        _ => 0,
    };
    let on_cancel = cell.clone().map(|cell| OnCancel {
        cost: cancel_cost,
        cell,
        shared: shared.clone(),
        tenant: tenant.shared_id().clone(),
        model: primary.model.clone(),
    });

    let started = Instant::now();
    // Until a response head arrives nothing has been served: if the client leaves while the
    // call (and any fallback retries) is still running, the reservation is released, not
    // charged (unless a parallel layer asked for the cancel charge above).
    let unserved = ReleaseUnlessServed {
        reservation: reservation.clone(),
        on_cancel,
    };
    let resp = match inner.call(req).await {
        Ok(r) => r,
        Err(e) => {
            unserved.served();
            // Nothing was served: release the reservation.
            if let Some(r) = &reservation {
                r.settle(0);
            }
            return Err(e.into());
        }
    };
    unserved.served();
    // Calls a layer below (a hedge) cancelled on the way to this answer: each is charged its
    // prompt estimate at its model's input price (the primary's when the catalog lacks it).
    let extras: Vec<(Arc<str>, MicroUsd)> = resp
        .extensions()
        .get::<CancelledCalls>()
        .map(|calls| {
            calls
                .0
                .iter()
                .map(|c| {
                    let price = cfg
                        .catalog
                        .get(&c.model)
                        .or_else(|| cfg.catalog.get(&primary.model))
                        .map_or(0, |m| prompt_charge(&m.price, c.prompt_tokens));
                    (c.model.clone(), price)
                })
                .collect()
        })
        .unwrap_or_default();
    let extra: MicroUsd = extras.iter().map(|(_, c)| *c).sum();
    let resp = match resp.extensions().get::<ResponseFacts>() {
        Some(_) => resp,
        None => {
            let model = primary.model.clone();
            tap_response(resp, primary.clone(), model, started, false)
        }
    };
    let (mut parts, body) = resp.into_parts();
    let Some(facts) = parts.extensions.get::<ResponseFacts>().cloned() else {
        return Err(Error::internal("response facts missing after tap").into());
    };
    let success = parts.status.is_success();
    if success {
        shared.latency.observe(&facts.target, facts.ttfb);
    }
    if let Some(v) = route_header {
        parts.headers.insert(X_RAMPART_ROUTE, v);
    }
    if degraded {
        parts.headers.append(X_RAMPART_DEGRADED, DEGRADED);
    }
    // Usually already set to this value below (upstream, fallback): kept without allocating.
    insert_str(&mut parts.headers, X_RAMPART_MODEL, &facts.target.model);
    let price = cfg.catalog.get(&facts.target.model).map(|m| m.price);
    let charge = Charge {
        success,
        price,
        estimate,
        cancel_cost,
    };
    {
        let shared = shared.clone();
        let tenant = tenant.shared_id().clone();
        let model = facts.target.model.clone();
        let reservation = reservation.clone();
        facts.completion.on_complete(move |report| {
            let cancelled = cell.as_ref().is_some_and(CancelCharge::is_cancelled);
            let cost = charge.of(report, cancelled);
            let total = cost.saturating_add(extra);
            if let Some(r) = &reservation {
                r.settle(total);
            }
            record_spend(&shared, &tenant, &model, cost);
            for (m, c) in &extras {
                record_spend(&shared, &tenant, m, *c);
            }
            if let Some(cell) = &cell {
                cell.add(total);
            }
        });
    }
    drop(reservation);
    if !success {
        parts.headers.insert(X_RAMPART_COST_USD, usd_value(extra));
        return Ok(Response::from_parts(parts, body));
    }
    if facts.stream {
        // The cost is known only at the end: it goes to the spend totals and metrics.
        return Ok(Response::from_parts(parts, body));
    }
    match buffer(body, cfg.max_json_body_bytes).await? {
        Buffered::Full(bytes) => {
            if let Some(report) = facts.completion.report() {
                let cost = charge.of(&report, false).saturating_add(extra);
                parts.headers.insert(X_RAMPART_COST_USD, usd_value(cost));
            }
            parts.headers.remove(http::header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, Body::from_bytes(bytes)))
        }
        Buffered::Partial(body) => Ok(Response::from_parts(parts, body)),
    }
}

/// Adds `cost` to the spend totals and `rampart_cost_microdollars_total`.
fn record_spend(shared: &Shared, tenant: &Arc<str>, model: &Arc<str>, cost: MicroUsd) {
    if cost == 0 {
        return;
    }
    shared.spend.record(tenant, model, cost);
    metrics::counter!(
        "rampart_cost_microdollars_total",
        // Arc clones: labels without a string allocation per request.
        "tenant" => metrics::SharedString::from(Arc::clone(tenant)),
        "model" => metrics::SharedString::from(Arc::clone(model))
    )
    .increment(cost);
}

/// How a finished response is charged.
#[derive(Debug, Clone, Copy)]
struct Charge {
    success: bool,
    price: Option<Price>,
    estimate: MicroUsd,
    /// The prompt estimate at the primary's input price: the charge of a call cancelled by a
    /// parallel layer above.
    cancel_cost: MicroUsd,
}

impl Charge {
    /// Error statuses cost nothing; reported usage is priced at the served model's price; a
    /// response without usage (cut, client gone, unknown served model) costs the estimate
    /// (the reservation is kept as spent), or its prompt estimate when a parallel layer above
    /// `cancelled` it.
    fn of(&self, report: &CompletionReport, cancelled: bool) -> MicroUsd {
        if !self.success {
            return 0;
        }
        match (&report.usage, self.price) {
            (Some(usage), Some(price)) => price.cost(usage),
            _ if cancelled => self.cancel_cost,
            _ => self.estimate,
        }
    }
}

enum Buffered {
    Full(Bytes),
    Partial(Body),
}

/// Reads a JSON body whole when it is at most `limit` bytes; else returns a body that replays
/// what was read followed by the rest.
async fn buffer(mut body: Body, limit: usize) -> Result<Buffered, BoxError> {
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Ok(Buffered::Partial(body));
    }
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            total += data.len();
            chunks.push_back(data);
            if total > limit {
                return Ok(Buffered::Partial(Body::new(Prefixed {
                    chunks,
                    rest: body,
                })));
            }
        }
    }
    Ok(Buffered::Full(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop_front().unwrap_or_default(),
        _ => {
            let mut b = BytesMut::with_capacity(total);
            for c in chunks {
                b.extend_from_slice(&c);
            }
            b.freeze()
        }
    }))
}

/// Chunks already read, then the rest of the body.
struct Prefixed {
    chunks: VecDeque<Bytes>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(c) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// The charge of a call dropped before its answer, asked for with [`CancelCharge`].
struct OnCancel {
    cell: CancelCharge,
    cost: MicroUsd,
    shared: Arc<Shared>,
    tenant: Arc<str>,
    model: Arc<str>,
}

/// Settles a budget reservation when dropped before [`served`](Self::served): the request
/// ended (the client left, or a parallel layer dropped it) before any response head. The
/// reservation is released, or settled to the prompt charge when a parallel layer cancelled the
/// call ([`CancelCharge`]).
struct ReleaseUnlessServed {
    reservation: Option<Arc<Reservation>>,
    on_cancel: Option<OnCancel>,
}

impl ReleaseUnlessServed {
    fn served(mut self) {
        self.reservation = None;
        self.on_cancel = None;
    }
}

impl Drop for ReleaseUnlessServed {
    fn drop(&mut self) {
        // Charged only when the parallel layer cancelled the call (not when the client left).
        let on_cancel = self.on_cancel.take().filter(|c| c.cell.is_cancelled());
        let cost = on_cancel.as_ref().map_or(0, |c| c.cost);
        if let Some(r) = self.reservation.take() {
            r.settle(cost);
        }
        if let Some(c) = on_cancel {
            record_spend(&c.shared, &c.tenant, &c.model, c.cost);
            c.cell.add(c.cost);
        }
    }
}

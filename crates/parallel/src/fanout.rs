//! [`FanOutLayer`]: one request to several models at once, under one deadline; a strategy picks
//! the answer.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use rampart_core::classify::retry_after;
use rampart_core::commit::CommitConfig;
use rampart_core::error::find_error;
use rampart_core::headers::{X_RAMPART_ATTEMPTS, X_RAMPART_COST_USD, X_RAMPART_ROUTE};
use rampart_core::openai::ErrorBody;
use rampart_core::pricing::format_usd;
use rampart_core::{
    Body, BoxError, CancelCharge, ChatRequest, EdgeConfig, Error, ErrorKind, MicroUsd, Price,
    ResponseFacts, RouteDecision, SettleHooks, Target, chat_request, ensure_chat_request,
};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::branch::{
    abandon, branch_request, call, error_headers, reported_attempts, reported_cost,
};
use crate::config::{FanOutConfig, Strategy};
use crate::error::ConfigError;
use crate::future::ResponseFuture;
use crate::headers::{X_RAMPART_FANOUT, X_RAMPART_FANOUT_STRATEGY, X_RAMPART_MODELS_CALLED};
use crate::merge;

/// The counter of fan-out requests, labelled `strategy` and `outcome` (`ok`, `error`).
pub const FANOUT_REQUESTS_COUNTER: &str = "rampart_fanout_requests_total";
/// The counter of fan-out calls, labelled `outcome`: `success`, `failure`, `cancelled` (dropped
/// when another answer won), `timeout` (dropped at the deadline).
pub const FANOUT_CALLS_COUNTER: &str = "rampart_fanout_calls_total";

/// The largest error body read from a failed call, for its message and code.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Gives the price of a model, for `cheapest` when an answer carries no `x-rampart-cost-usd`
/// (no router below). Closures `Fn(&str) -> Option<Price>` are pricers.
pub trait Pricer: Send + Sync + 'static {
    /// The price of `model`, if known.
    fn price(&self, model: &str) -> Option<Price>;
}

impl<F> Pricer for F
where
    F: Fn(&str) -> Option<Price> + Send + Sync + 'static,
{
    fn price(&self, model: &str) -> Option<Price> {
        self(model)
    }
}

/// State built once per layer, shared by every service and clone.
#[derive(Clone)]
struct Shared {
    config: Arc<FanOutConfig>,
    known: Arc<[String]>,
    pricer: Option<Arc<dyn Pricer>>,
    commit: CommitConfig,
}

/// Fan-out: a request whose `model` names a fan-out route (or that sends `x-rampart-fanout:
/// m1,m2` when the header is enabled) is sent to every model of the route at once, each call a
/// request of its own through the inner stack; the strategy picks the answer. See the crate docs.
///
/// Every other request passes through untouched.
#[derive(Clone)]
pub struct FanOutLayer {
    shared: Shared,
}

impl std::fmt::Debug for FanOutLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Default for FanOutLayer {
    /// No route, header disabled: every request passes through.
    fn default() -> Self {
        Self::build(FanOutConfig::default())
    }
}

impl FanOutLayer {
    /// A layer with `config`, validated ([`FanOutConfig::validate`]).
    pub fn from_config(config: FanOutConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: FanOutConfig) -> Self {
        Self {
            shared: Shared {
                commit: config.stream.into(),
                config: Arc::new(config),
                known: Arc::from(Vec::new()),
                pricer: None,
            },
        }
    }

    /// The models requests may name in `x-rampart-fanout` (when `header.models` is empty), e.g.
    /// the gateway's catalog. Refuses a route naming another model.
    pub fn known_models<I, M>(mut self, models: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        let known: Vec<String> = models.into_iter().map(Into::into).collect();
        self.shared.config.validate_models(&known)?;
        self.shared.known = known.into();
        Ok(self)
    }

    /// Prices models for `cheapest` when an answer does not report its cost.
    pub fn pricer(mut self, pricer: impl Pricer) -> Self {
        self.shared.pricer = Some(Arc::new(pricer));
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &FanOutConfig {
        &self.shared.config
    }
}

impl<S> Layer<S> for FanOutLayer {
    type Service = FanOut<S>;

    fn layer(&self, inner: S) -> FanOut<S> {
        FanOut {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`FanOutLayer`].
pub struct FanOut<S> {
    inner: S,
    shared: Shared,
}

impl<S: Clone> Clone for FanOut<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for FanOut<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A fan-out to run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The route's name, or `header`.
    pub(crate) name: Arc<str>,
    pub(crate) models: Vec<Arc<str>>,
    pub(crate) strategy: Strategy,
    pub(crate) deadline: Duration,
}

fn bad_header(name: &http::HeaderName, message: String) -> Error {
    Error::invalid_request("invalid_header", message).with_param(name.as_str())
}

impl Shared {
    /// The request's fan-out, if any; `Err` for a header naming too many or unknown models.
    fn plan(&self, headers: &HeaderMap, chat: &ChatRequest) -> Result<Option<Plan>, Error> {
        let c = &self.config;
        let header = if c.header.enabled {
            headers.get(&X_RAMPART_FANOUT)
        } else {
            None
        };
        let mut plan = match header {
            Some(v) => self.header_plan(v)?,
            None => match c.routes.get(chat.model()) {
                Some(r) => Plan {
                    name: chat.model().into(),
                    models: r.models.iter().map(|m| Arc::from(m.as_str())).collect(),
                    strategy: r.strategy,
                    deadline: r.deadline.unwrap_or(c.deadline),
                },
                None => return Ok(None),
            },
        };
        if let Some(v) = headers.get(&X_RAMPART_FANOUT_STRATEGY) {
            plan.strategy = v.to_str().ok().and_then(Strategy::parse).ok_or_else(|| {
                bad_header(
                    &X_RAMPART_FANOUT_STRATEGY,
                    "x-rampart-fanout-strategy must be fastest, cheapest or all.".to_owned(),
                )
            })?;
        }
        if chat.is_stream() && plan.strategy != Strategy::Fastest {
            return Err(Error::invalid_request(
                "unsupported_value",
                format!(
                    "The fan-out strategy '{}' cannot be streamed: it waits for every answer. Use 'fastest', or send \"stream\": false.",
                    plan.strategy.as_str()
                ),
            )
            .with_param("stream"));
        }
        Ok(Some(plan))
    }

    fn header_plan(&self, v: &HeaderValue) -> Result<Plan, Error> {
        let c = &self.config;
        let text = v.to_str().map_err(|_| {
            bad_header(
                &X_RAMPART_FANOUT,
                "x-rampart-fanout must be a comma-separated list of models.".to_owned(),
            )
        })?;
        let mut models: Vec<Arc<str>> = Vec::new();
        for m in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if !models.iter().any(|x| &**x == m) {
                models.push(m.into());
            }
        }
        if models.is_empty() || models.len() > c.header.max_models {
            return Err(bad_header(
                &X_RAMPART_FANOUT,
                format!(
                    "x-rampart-fanout names {} models; it takes 1 to {}.",
                    models.len(),
                    c.header.max_models
                ),
            ));
        }
        let allowed: &[String] = if c.header.models.is_empty() {
            &self.known
        } else {
            &c.header.models
        };
        if !allowed.is_empty()
            && let Some(m) = models.iter().find(|m| !allowed.iter().any(|a| a == &***m))
        {
            return Err(
                Error::model_not_found(m, allowed.iter().map(String::as_str))
                    .with_param(X_RAMPART_FANOUT.as_str()),
            );
        }
        Ok(Plan {
            name: "header".into(),
            models,
            strategy: c.header.strategy,
            deadline: c.deadline,
        })
    }
}

impl<S> Service<Request<Body>> for FanOut<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(chat) = chat_request(&req).cloned() else {
            // Not parsed by an edge adapter: parse once, then decide.
            let shared = self.shared.clone();
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::boxed(Box::pin(async move {
                let (req, chat) = ensure_chat_request(req, EdgeConfig::default()).await?;
                match shared.plan(req.headers(), &chat)? {
                    None => inner.call(req).await.map_err(Into::into),
                    Some(plan) => run(inner, shared, req, chat, plan).await,
                }
            }));
        };
        match self.shared.plan(req.headers(), &chat) {
            Ok(None) => ResponseFuture::direct(self.inner.call(req)),
            Err(e) => ResponseFuture::boxed(Box::pin(async move { Err(Box::new(e) as BoxError) })),
            Ok(Some(plan)) => {
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                ResponseFuture::boxed(Box::pin(run(inner, shared, req, chat, plan)))
            }
        }
    }
}

/// Why a call did not give an answer.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    pub(crate) status: StatusCode,
    pub(crate) code: Option<String>,
    pub(crate) message: String,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) attempts: Option<u32>,
    pub(crate) cost: Option<MicroUsd>,
}

impl Failure {
    fn from_error(e: &BoxError) -> Self {
        let attempts = error_headers(e).and_then(reported_attempts);
        match find_error(e) {
            Some(err) => Self {
                kind: err.kind().clone(),
                status: err.status(),
                code: err.code().map(Cow::into_owned),
                message: err.message().to_owned(),
                retry_after: err.retry_after(),
                attempts,
                cost: None,
            },
            None => {
                tracing::warn!(target: "rampart::parallel", error = %e, "fan-out call failed");
                let timeout = e.is::<tower::timeout::error::Elapsed>();
                let kind = if timeout {
                    ErrorKind::UpstreamTimeout
                } else {
                    ErrorKind::UpstreamConnect
                };
                let err = Error::new(kind.clone(), "");
                Self {
                    status: err.status(),
                    code: err.code().map(Cow::into_owned),
                    kind,
                    message: if timeout {
                        "The upstream did not answer in time.".to_owned()
                    } else {
                        "The upstream could not be reached.".to_owned()
                    },
                    retry_after: None,
                    attempts,
                    cost: None,
                }
            }
        }
    }

    pub(crate) fn timeout(deadline: Duration) -> Self {
        Self {
            kind: ErrorKind::UpstreamTimeout,
            status: StatusCode::GATEWAY_TIMEOUT,
            code: Some("upstream_timeout".to_owned()),
            message: format!("No answer before the fan-out deadline ({deadline:?})."),
            retry_after: None,
            attempts: None,
            cost: None,
        }
    }

    /// The same failure with what a router below charged for it (none when zero).
    pub(crate) fn charged(mut self, micros: MicroUsd) -> Self {
        if micros > 0 {
            self.cost = Some(micros);
        }
        self
    }

    pub(crate) fn broken(message: String, headers: &HeaderMap) -> Self {
        Self {
            kind: ErrorKind::UpstreamBroken,
            status: StatusCode::BAD_GATEWAY,
            code: Some("upstream_error".to_owned()),
            message,
            retry_after: None,
            attempts: reported_attempts(headers),
            cost: reported_cost(headers),
        }
    }

    /// A non-2xx answer: its status, and the message and code of its OpenAI error body.
    async fn from_response(resp: Response<Body>) -> Self {
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        let parsed = body
            .collect_limited(MAX_ERROR_BODY)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<ErrorBody>(&b).ok());
        let (kind_name, code, message) = match parsed {
            Some(b) => (Some(b.error.kind), b.error.code, b.error.message),
            None => (
                None,
                None,
                format!("The upstream answered HTTP {}.", status.as_u16()),
            ),
        };
        Self {
            kind: ErrorKind::UpstreamStatus {
                status,
                kind: kind_name,
                code: code.clone(),
            },
            status,
            code,
            message,
            retry_after: retry_after(&parts.headers),
            attempts: reported_attempts(&parts.headers),
            cost: reported_cost(&parts.headers),
        }
    }
}

/// How one call ended.
pub(crate) enum Outcome {
    /// A 2xx answer (a stream at its first content chunk; for `cheapest` and `all`, read whole).
    Success(Response<Body>),
    /// No answer.
    Failed(Failure),
    /// Dropped because another answer won; what a router below charged for it (its prompt
    /// estimate, see [`CancelCharge`]).
    Cancelled(MicroUsd),
    /// Dropped at the deadline; what a router below charged for it.
    TimedOut(MicroUsd),
}

type BranchFuture = Pin<Box<dyn Future<Output = (usize, Outcome)> + Send>>;

fn branch<S>(
    idx: usize,
    svc: S,
    ready: bool,
    req: Request<Body>,
    commit: CommitConfig,
    read_whole: Option<usize>,
) -> BranchFuture
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    Box::pin(async move {
        let outcome = match call(svc, ready, req, commit).await {
            Err(e) => Outcome::Failed(Failure::from_error(&e)),
            Ok(resp) if !resp.status().is_success() => {
                Outcome::Failed(Failure::from_response(resp).await)
            }
            Ok(resp) => match read_whole {
                None => Outcome::Success(resp),
                Some(limit) => {
                    let (parts, body) = resp.into_parts();
                    match body.collect_limited(limit).await {
                        Ok(bytes) => {
                            Outcome::Success(Response::from_parts(parts, Body::from_bytes(bytes)))
                        }
                        Err(e) => Outcome::Failed(Failure::broken(
                            format!("The answer could not be read whole: {e}."),
                            &parts.headers,
                        )),
                    }
                }
            },
        };
        (idx, outcome)
    })
}

fn count_call(outcome: &Outcome) {
    let label = match outcome {
        Outcome::Success(_) => "success",
        Outcome::Failed(_) => "failure",
        Outcome::Cancelled(_) => "cancelled",
        Outcome::TimedOut(_) => "timeout",
    };
    metrics::counter!(FANOUT_CALLS_COUNTER, "outcome" => label).increment(1);
}

/// What every call reported, summed: `x-rampart-cost-usd` and `x-rampart-attempts`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) cost: Option<MicroUsd>,
    pub(crate) attempts: Option<u32>,
}

impl Totals {
    fn add(&mut self, cost: Option<MicroUsd>, attempts: Option<u32>) {
        if let Some(c) = cost {
            self.cost = Some(self.cost.unwrap_or(0).saturating_add(c));
        }
        if let Some(a) = attempts {
            self.attempts = Some(self.attempts.unwrap_or(0).saturating_add(a));
        }
    }

    pub(crate) fn of(outcomes: &[Outcome]) -> Self {
        let mut t = Self::default();
        for o in outcomes {
            match o {
                Outcome::Success(r) => {
                    t.add(reported_cost(r.headers()), reported_attempts(r.headers()))
                }
                Outcome::Failed(f) => t.add(f.cost, f.attempts),
                // Charged by a router below although it never answered.
                Outcome::Cancelled(c) | Outcome::TimedOut(c) => {
                    if *c > 0 {
                        t.add(Some(*c), None);
                    }
                }
            }
        }
        t
    }
}

/// The headers every fan-out answer carries: the models called, the route, and (for a JSON
/// answer) the summed cost and attempts.
pub(crate) fn decorate(headers: &mut HeaderMap, plan: &Plan, totals: Totals, json: bool) {
    if let Some(v) = crate::branch::models_value(&plan.models) {
        headers.insert(X_RAMPART_MODELS_CALLED, v);
    }
    let route = format!("fanout:{}:{}", plan.name, plan.strategy.as_str());
    if let Ok(v) = HeaderValue::from_str(&route) {
        headers.insert(X_RAMPART_ROUTE, v);
    }
    if let Some(a) = totals.attempts {
        headers.insert(X_RAMPART_ATTEMPTS, HeaderValue::from(a));
    }
    if json
        && let Some(c) = totals.cost
        && let Ok(v) = HeaderValue::from_str(&format_usd(c))
    {
        headers.insert(X_RAMPART_COST_USD, v);
    }
}

/// The cost of an answer read whole: what it reports, else its usage at the pricer's price.
fn cost_of(resp: &Response<Body>, pricer: Option<&dyn Pricer>, model: &str) -> Option<MicroUsd> {
    if let Some(c) = reported_cost(resp.headers()) {
        return Some(c);
    }
    let facts = resp.extensions().get::<ResponseFacts>();
    let served = facts.map_or(model, |f| &*f.target.model);
    let price = pricer?.price(served)?;
    let report = facts?.completion.report()?;
    report.usage.as_ref().map(|u| price.cost(u))
}

async fn run<S>(
    first: S,
    shared: Shared,
    req: Request<Body>,
    chat: Arc<ChatRequest>,
    plan: Plan,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let started = Instant::now();
    let deadline = started + plan.deadline;
    let (mut parts, _body) = req.into_parts();
    strip(&mut parts);
    let read_whole = (plan.strategy != Strategy::Fastest).then_some(shared.config.max_body_bytes);

    let template = first.clone();
    let mut first = Some(first);
    let mut pending: FuturesUnordered<BranchFuture> = FuturesUnordered::new();
    // Each call asks a router below to charge its prompt if it is dropped before answering.
    let charges: Vec<CancelCharge> = plan.models.iter().map(|_| CancelCharge::new()).collect();
    for (i, model) in plan.models.iter().enumerate() {
        let mut req = branch_request(&parts, &chat, model);
        if let Some(c) = charges.get(i) {
            req.extensions_mut().insert(c.clone());
        }
        let (svc, ready) = match first.take() {
            Some(s) => (s, true),
            None => (template.clone(), false),
        };
        pending.push(branch(i, svc, ready, req, shared.commit, read_whole));
    }

    let mut outcomes: Vec<Option<Outcome>> = plan.models.iter().map(|_| None).collect();
    let mut winner: Option<(usize, Response<Body>)> = None;
    loop {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some((i, outcome))) => {
                count_call(&outcome);
                match outcome {
                    Outcome::Success(resp) if plan.strategy == Strategy::Fastest => {
                        winner = Some((i, resp));
                        break;
                    }
                    o => {
                        if let Some(slot) = outcomes.get_mut(i) {
                            *slot = Some(o);
                        }
                    }
                }
            }
        }
    }
    // Dropping the calls still running closes their upstream connections; a router below
    // charges each its prompt estimate (they reached their providers).
    let won = winner.as_ref().map(|(i, _)| *i);
    for (i, (slot, charge)) in outcomes.iter().zip(&charges).enumerate() {
        if slot.is_none() && won != Some(i) {
            charge.cancel();
        }
    }
    drop(pending);
    let cancelled = winner.is_some();
    let mut outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .zip(&charges)
        .enumerate()
        .map(|(i, (o, charge))| {
            o.unwrap_or_else(|| {
                // The winner's cost is in its own headers.
                let charged = if won == Some(i) { 0 } else { charge.charged() };
                let o = if cancelled {
                    Outcome::Cancelled(charged)
                } else {
                    Outcome::TimedOut(charged)
                };
                // The winner was counted as a success.
                if won != Some(i) {
                    count_call(&o);
                }
                o
            })
        })
        .collect();

    let result = match (plan.strategy, winner) {
        (_, Some((i, mut resp))) => {
            let mut t = Totals::of(&outcomes);
            t.add(
                reported_cost(resp.headers()),
                reported_attempts(resp.headers()),
            );
            let json = !resp
                .extensions()
                .get::<ResponseFacts>()
                .is_some_and(|f| f.stream);
            tracing::debug!(target: "rampart::parallel", winner = %plan.models.get(i).map_or("", |m| m), "fan-out: fastest answer");
            decorate(resp.headers_mut(), &plan, t, json);
            Ok(resp)
        }
        (Strategy::Cheapest, None) => {
            let pricer = shared.pricer.as_deref();
            let best = outcomes
                .iter()
                .enumerate()
                .filter_map(|(i, o)| match o {
                    Outcome::Success(r) => {
                        let model = plan.models.get(i).map_or("", |m| m);
                        Some((cost_of(r, pricer, model).unwrap_or(MicroUsd::MAX), i))
                    }
                    _ => None,
                })
                .min();
            match best {
                Some((_, i)) => {
                    let totals = Totals::of(&outcomes);
                    let chosen = std::mem::replace(&mut outcomes[i], Outcome::Cancelled(0));
                    match chosen {
                        Outcome::Success(mut resp) => {
                            decorate(resp.headers_mut(), &plan, totals, true);
                            Ok(resp)
                        }
                        _ => Err(merge::all_failed(&plan, &outcomes)),
                    }
                }
                None => Err(merge::all_failed(&plan, &outcomes)),
            }
        }
        (Strategy::All, None) => merge::all(&plan, &mut outcomes, started),
        (Strategy::Fastest, None) => Err(merge::all_failed(&plan, &outcomes)),
    };
    for o in &outcomes {
        if let Outcome::Success(r) = o {
            abandon(r);
        }
    }
    metrics::counter!(
        FANOUT_REQUESTS_COUNTER,
        "strategy" => plan.strategy.as_str(),
        "outcome" => if result.is_ok() { "ok" } else { "error" }
    )
    .increment(1);
    result.map_err(|e| Box::new(e) as BoxError)
}

/// What a call must not inherit from the fanned-out request: the fan-out headers (no call fans
/// out again), any routing already decided, and the token settle hooks of limiters above (one
/// call's cache hit must not settle the whole fan-out's reservation; the limiter settles it from
/// the answer returned).
fn strip(parts: &mut Parts) {
    parts.headers.remove(X_RAMPART_FANOUT);
    parts.headers.remove(X_RAMPART_FANOUT_STRATEGY);
    parts.extensions.remove::<Target>();
    parts.extensions.remove::<RouteDecision>();
    parts.extensions.remove::<SettleHooks>();
}

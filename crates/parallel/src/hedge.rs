//! [`HedgeLayer`]: after a delay, start the next candidate too; the first success wins and the
//! other calls are dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::request::Parts;
use http::{Request, Response};
use rampart_core::commit::CommitConfig;
use rampart_core::{
    Body, BoxError, CancelledCall, CancelledCalls, Candidate, ChatRequest, ResponseFacts,
    RouteDecision, Target, chat_request,
};
use rampart_fallback::RetryBudget;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::branch::{abandon, branch_request, call, is_success, with_models_called};
use crate::config::{HedgeConfig, HedgePolicy};
use crate::error::ConfigError;
use crate::future::ResponseFuture;
use crate::ttfb::Latencies;

/// The counter of hedging events, labelled `event`: `started` (a hedge call began), `won` (a
/// hedge's answer was returned), `lost` (the primary answered first after a hedge began),
/// `budget_exhausted` (a hedge was due but the retry budget was spent).
pub const HEDGES_COUNTER: &str = "rampart_hedges_total";

/// State built once per layer, shared by every service and clone.
#[derive(Clone)]
struct Shared {
    config: Arc<HedgeConfig>,
    any_policy: bool,
    budget: Arc<RetryBudget>,
    latencies: Arc<Latencies>,
    commit: CommitConfig,
}

/// Hedged requests: a request that a policy matches is sent to its first candidate; if no
/// success has come after the policy's delay, the next candidate is called too (while the retry
/// budget allows), and so on up to `max_hedges`. The first success is returned — for a stream,
/// the first to send a content chunk — and every other call is dropped, which closes its
/// upstream connection. See the crate docs.
///
/// Candidates come from the request's [`RouteDecision`] (put there by a router); a request
/// without one, with a single candidate, without a parsed [`ChatRequest`], or matched by no
/// policy passes through untouched.
#[derive(Clone)]
pub struct HedgeLayer {
    shared: Shared,
}

impl std::fmt::Debug for HedgeLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Default for HedgeLayer {
    /// No policy: every request passes through.
    fn default() -> Self {
        Self::build(HedgeConfig::default())
    }
}

impl HedgeLayer {
    /// A layer with `config`, validated ([`HedgeConfig::validate`]).
    pub fn from_config(config: HedgeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    /// A layer whose requests are all hedged by `policy` (and a default budget).
    pub fn with_policy(policy: HedgePolicy) -> Result<Self, ConfigError> {
        Self::from_config(HedgeConfig {
            default: Some(policy),
            ..HedgeConfig::default()
        })
    }

    fn build(config: HedgeConfig) -> Self {
        let any_policy =
            config.default.is_some() || !config.routes.is_empty() || !config.models.is_empty();
        Self {
            shared: Shared {
                budget: Arc::new(RetryBudget::new(config.budget.into())),
                latencies: Arc::new(Latencies::new(config.samples)),
                commit: config.stream.into(),
                any_policy,
                config: Arc::new(config),
            },
        }
    }

    /// The same layer withdrawing hedges from `budget` (e.g. one shared with other layers).
    pub fn retry_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.shared.budget = budget;
        self
    }

    /// The retry budget hedges withdraw from.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.shared.budget
    }

    /// The configuration in force.
    pub fn config(&self) -> &HedgeConfig {
        &self.shared.config
    }

    /// The `percentile` of `target`'s observed time to first byte (JSON: the response head;
    /// `stream`: the first content chunk), when at least `min_samples` were observed.
    pub fn observed(
        &self,
        target: &Target,
        stream: bool,
        percentile: f64,
        min_samples: usize,
    ) -> Option<Duration> {
        self.shared
            .latencies
            .percentile(target, stream, percentile, min_samples)
    }

    /// Observations of `target`'s time to first byte held (JSON or `stream`).
    pub fn samples(&self, target: &Target, stream: bool) -> usize {
        self.shared.latencies.count(target, stream)
    }

    /// The delay after which a request to `target` would be hedged under `policy`.
    pub fn delay(&self, policy: &HedgePolicy, target: &Target, stream: bool) -> Duration {
        self.shared.delay(policy, target, stream)
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The route name in a decision's route: `explicit`, `auto`, or a group's name.
fn route_name(route: &str) -> &str {
    let route = route.split(';').next().unwrap_or(route);
    match route.split_once(':') {
        Some(("group", rest)) => rest.split(':').next().unwrap_or(rest),
        Some((kind, _)) => kind,
        None => route,
    }
}

/// What a hedged request needs.
struct Plan {
    policy: HedgePolicy,
    candidates: Arc<[Candidate]>,
    route: Arc<str>,
    chat: Arc<ChatRequest>,
}

impl Shared {
    fn policy(&self, decision: &RouteDecision) -> Option<HedgePolicy> {
        let c = &self.config;
        c.routes
            .get(route_name(&decision.route))
            .or_else(|| {
                decision
                    .primary()
                    .and_then(|p| c.models.get(&*p.target.model))
            })
            .or(c.default.as_ref())
            .copied()
    }

    fn plan(&self, req: &Request<Body>) -> Option<Plan> {
        if !self.any_policy {
            return None;
        }
        let decision = req.extensions().get::<RouteDecision>()?;
        if decision.candidates.len() < 2 {
            return None;
        }
        let chat = chat_request(req)?;
        let policy = self.policy(decision)?;
        Some(Plan {
            policy,
            candidates: decision.candidates.clone(),
            route: decision.route.clone(),
            chat: chat.clone(),
        })
    }

    fn delay(&self, policy: &HedgePolicy, target: &Target, stream: bool) -> Duration {
        match policy.percentile {
            None => policy.delay,
            Some(p) => self
                .latencies
                .percentile(target, stream, p, policy.min_samples)
                .map_or(policy.delay, |d| d.max(policy.min_delay)),
        }
    }
}

/// The service of [`HedgeLayer`].
pub struct Hedge<S> {
    inner: S,
    shared: Shared,
}

impl<S: Clone> Clone for Hedge<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Hedge<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for Hedge<S>
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
        match self.shared.plan(&req) {
            None => ResponseFuture::direct(self.inner.call(req)),
            Some(plan) => {
                // The ready service makes the primary call; hedges use fresh clones.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::boxed(Box::pin(run(ready, self.shared.clone(), req, plan)))
            }
        }
    }
}

/// One branch's end.
struct Done {
    idx: usize,
    target: Target,
    elapsed: Duration,
    result: Result<Response<Body>, BoxError>,
}

type BranchFuture = Pin<Box<dyn Future<Output = Done> + Send>>;

fn branch<S>(
    idx: usize,
    target: Target,
    svc: S,
    ready: bool,
    req: Request<Body>,
    commit: CommitConfig,
) -> BranchFuture
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    Box::pin(async move {
        let started = Instant::now();
        let result = call(svc, ready, req, commit).await;
        Done {
            idx,
            target,
            elapsed: started.elapsed(),
            result,
        }
    })
}

/// The request of the hedge to candidate `i`: the model rewritten, its `Target`, and a decision
/// holding the candidates from `i` on (a fallback below moves along them, not back).
fn hedge_request(
    parts: &Parts,
    chat: &Arc<ChatRequest>,
    candidates: &[Candidate],
    i: usize,
    route: &Arc<str>,
) -> Option<Request<Body>> {
    let c = candidates.get(i)?;
    let mut req = branch_request(parts, chat, &c.target.model);
    req.extensions_mut().insert(c.target.clone());
    let decision = RouteDecision::new(candidates.get(i..)?.to_vec(), route.clone())?;
    req.extensions_mut().insert(decision);
    Some(req)
}

/// Lists the calls dropped when `result` won (`in_flight`: every other call still running) in
/// its [`CancelledCalls`], each with the request's prompt estimate, for a router above to
/// charge at the model's input price: they reached their providers, which bill the prompt.
fn charge_cancelled(
    result: Result<Response<Body>, BoxError>,
    in_flight: &[(usize, Arc<str>)],
    chat: &ChatRequest,
) -> Result<Response<Body>, BoxError> {
    let mut resp = result?;
    if in_flight.is_empty() {
        return Ok(resp);
    }
    let prompt_tokens = chat.estimate_prompt_tokens();
    let calls = in_flight.iter().map(|(_, model)| CancelledCall {
        model: model.clone(),
        prompt_tokens,
    });
    match resp.extensions_mut().get_mut::<CancelledCalls>() {
        Some(listed) => listed.0.extend(calls),
        None => {
            resp.extensions_mut()
                .insert(CancelledCalls(calls.collect()));
        }
    }
    Ok(resp)
}

fn count(event: &'static str) {
    metrics::counter!(HEDGES_COUNTER, "event" => event).increment(1);
}

// A transient value on the stack; boxing the large variant would allocate per event.
#[allow(clippy::large_enum_variant)]
enum Event {
    Done(Option<Done>),
    Hedge,
}

async fn run<S>(
    first: S,
    shared: Shared,
    req: Request<Body>,
    plan: Plan,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let Plan {
        policy,
        candidates,
        route,
        chat,
    } = plan;
    let stream = chat.is_stream();
    let Some(primary) = candidates.first().map(|c| c.target.clone()) else {
        let mut first = first;
        return first.call(req).await.map_err(Into::into);
    };
    shared.budget.deposit();
    let delay = shared.delay(&policy, &primary, stream);
    let max = (policy.max_hedges as usize).min(candidates.len().saturating_sub(1));

    let (parts, body) = req.into_parts();
    let template = first.clone();
    let mut called: Vec<Arc<str>> = vec![primary.model.clone()];
    // The calls still running, by index: the ones dropped when another wins are charged.
    let mut in_flight: Vec<(usize, Arc<str>)> = vec![(0, primary.model.clone())];
    let mut pending: FuturesUnordered<BranchFuture> = FuturesUnordered::new();
    pending.push(branch(
        0,
        primary,
        first,
        true,
        Request::from_parts(parts.clone(), body),
        shared.commit,
    ));
    let mut next = 1usize;
    let mut hedge_at = (max > 0).then(|| Instant::now() + delay);
    let mut failures: Vec<(usize, Result<Response<Body>, BoxError>)> = Vec::new();

    loop {
        let at = hedge_at;
        let timer = async move {
            match at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        let event = tokio::select! {
            biased;
            done = pending.next() => Event::Done(done),
            () = timer => Event::Hedge,
        };
        match event {
            Event::Done(None) => break,
            Event::Done(Some(done)) => {
                in_flight.retain(|(i, _)| *i != done.idx);
                if is_success(&done.result) {
                    let served = done
                        .result
                        .as_ref()
                        .ok()
                        .and_then(|r| r.extensions().get::<ResponseFacts>())
                        .map_or(done.target, |f| f.target.clone());
                    shared.latencies.record(&served, stream, done.elapsed);
                    if called.len() > 1 {
                        count(if done.idx == 0 { "lost" } else { "won" });
                    }
                    // Dropping the other calls closes their upstream connections.
                    drop(pending);
                    for (_, r) in failures {
                        if let Ok(resp) = r {
                            abandon(&resp);
                        }
                    }
                    let result = charge_cancelled(done.result, &in_flight, &chat);
                    return with_models_called(result, &called);
                }
                failures.push((done.idx, done.result));
                if pending.is_empty() {
                    // Failures are the fallback's business: no hedge starts after every call
                    // in flight has failed.
                    break;
                }
            }
            Event::Hedge => {
                let candidate = candidates.get(next).map(|c| c.target.clone());
                let req = hedge_request(&parts, &chat, &candidates, next, &route);
                let (Some(target), Some(req)) = (candidate, req) else {
                    hedge_at = None;
                    continue;
                };
                if !shared.budget.try_withdraw() {
                    count("budget_exhausted");
                    tracing::debug!(target: "rampart::parallel", "hedge retry budget exhausted");
                    hedge_at = None;
                    continue;
                }
                tracing::debug!(target: "rampart::parallel", hedge = %target, after = ?delay, "hedging");
                called.push(target.model.clone());
                in_flight.push((next, target.model.clone()));
                pending.push(branch(
                    next,
                    target,
                    template.clone(),
                    false,
                    req,
                    shared.commit,
                ));
                count("started");
                next += 1;
                hedge_at = (next <= max).then(|| Instant::now() + delay);
            }
        }
    }
    // Every call failed: answer with the primary's outcome (it carries its fallback's attempts).
    let pick = failures.iter().position(|(i, _)| *i == 0).unwrap_or(0);
    if pick >= failures.len() {
        return Err(Box::new(rampart_core::Error::internal(
            "hedge: no call was made",
        )));
    }
    let (_, chosen) = failures.swap_remove(pick);
    for (_, r) in failures {
        if let Ok(resp) = r {
            abandon(&resp);
        }
    }
    with_models_called(chosen, &called)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names() {
        assert_eq!(route_name("explicit"), "explicit");
        assert_eq!(route_name("auto:simple:cheapest"), "auto");
        assert_eq!(route_name("group:fast:medium:lowest_latency"), "fast");
        assert_eq!(
            route_name("auto:complex:cheapest;downgraded=budget"),
            "auto"
        );
    }
}

//! [`Fallback`]: the service, and the attempt loop behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Extensions, HeaderValue, Request, Response, StatusCode, header};
use rampart_core::classify::{Verdict, classify_error, classify_status, retry_after};
use rampart_core::commit::{CommitConfig, commit_stream};
use rampart_core::error::{find_error, retry_after_secs};
use rampart_core::headers::{
    RETRY_AFTER_MS, X_RAMPART_ATTEMPTS, X_RAMPART_MODEL, count_value, insert_str,
};
use rampart_core::metric::LabelledCounter;
use rampart_core::{
    Body, BoxError, Candidate, ChatRequest, EdgeConfig, Error, ErrorKind, ResponseFacts,
    RouteDecision, Target, ensure_chat_request,
};
use serde::Deserialize;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use crate::backoff::backoff_ceiling;
use crate::layer::Shared;

/// The counter of attempts, labelled `outcome`: `success`, `failure`, `rate_limited`,
/// `skipped` (refused by a per-target layer, no attempt spent), `client_error` (answered and
/// not retried), `context_length` (a `400 context_length_exceeded`).
pub const ATTEMPTS_COUNTER: &str = "rampart_fallback_attempts_total";
/// The counter of retries refused because the retry budget was spent.
pub const BUDGET_EXHAUSTED_COUNTER: &str = "rampart_retry_budget_exhausted_total";

/// The largest upstream error body read to look for `context_length_exceeded`.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The future of a [`Fallback`] call (boxed).
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// The fallback service: tries the request's candidates in order, retrying with backoff,
/// within one deadline, a number of attempts and a shared retry budget. See the crate docs
/// for the rules and for what is returned when every candidate fails.
pub struct Fallback<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Fallback<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Fallback<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S> Fallback<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request<Body>> for Fallback<S>
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
        // The ready service makes the first attempt; later attempts use fresh clones.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(run(ready, self.shared.clone(), req))
    }
}

/// One candidate of a request.
struct Step {
    /// The model alias (what `x-rampart-model` says).
    alias: Arc<str>,
    /// Where to send it; `None`: no `Target` extension, the inner resolves the alias.
    target: Option<Target>,
    /// Context window, when known.
    window: Option<u64>,
    /// The request with the model rewritten, made on first use.
    chat: Option<Arc<ChatRequest>>,
}

impl Step {
    fn from_candidate(c: &Candidate) -> Self {
        Self {
            alias: c.target.model.clone(),
            target: Some(c.target.clone()),
            window: c.context_window,
            chat: None,
        }
    }

    fn untargeted(alias: &str) -> Self {
        Self {
            alias: alias.into(),
            target: None,
            window: None,
            chat: None,
        }
    }
}

/// The candidates of a request: the router's decision, else the requested model (resolved, or
/// the request's own `Target`, or untargeted) followed by its static chain.
fn plan(shared: &Shared, ext: &Extensions, chat: &ChatRequest) -> Vec<Step> {
    if let Some(d) = ext.get::<RouteDecision>()
        && !d.candidates.is_empty()
    {
        return d.candidates.iter().map(Step::from_candidate).collect();
    }
    let model = chat.model();
    let resolve = |m: &str| {
        shared
            .resolver
            .resolve(m)
            .map_or_else(|| Step::untargeted(m), |c| Step::from_candidate(&c))
    };
    let primary = match shared.resolver.resolve(model) {
        Some(c) => Step::from_candidate(&c),
        None => match ext.get::<Target>() {
            Some(t) => Step {
                alias: t.model.clone(),
                target: Some(t.clone()),
                window: None,
                chat: None,
            },
            None => Step::untargeted(model),
        },
    };
    let mut steps = vec![primary];
    if let Some(chain) = shared.config.chains.get(model) {
        for m in chain {
            let step = resolve(m);
            let dup = steps
                .iter()
                .any(|s| s.alias == step.alias && s.target == step.target);
            if !dup {
                steps.push(step);
            }
        }
    }
    steps
}

/// The next candidate after `i` with a context window larger than `i`'s.
fn larger_window(steps: &[Step], i: usize) -> Option<usize> {
    let current = steps.get(i)?.window?;
    steps
        .iter()
        .enumerate()
        .skip(i + 1)
        .find(|(_, s)| s.window.is_some_and(|w| w > current))
        .map(|(j, _)| j)
}

/// The request of one attempt: same head and extensions, the parsed request with the model
/// rewritten, the candidate's `Target`, and the raw body bytes.
fn build_request(parts: &Parts, chat: &Arc<ChatRequest>, step: &mut Step) -> Request<Body> {
    let step_chat = step
        .chat
        .get_or_insert_with(|| {
            if *step.alias == *chat.model() {
                chat.clone()
            } else {
                Arc::new(chat.with_model(&step.alias))
            }
        })
        .clone();
    let mut parts = parts.clone();
    parts.extensions.insert(step_chat);
    match &step.target {
        Some(t) => {
            parts.extensions.insert(t.clone());
        }
        None => {
            parts.extensions.remove::<Target>();
        }
    }
    Request::from_parts(parts, Body::from_bytes(chat.raw().clone()))
}

/// `rampart_fallback_attempts_total`, by outcome.
pub(crate) fn attempts_counter() -> LabelledCounter<6> {
    LabelledCounter::new(
        ATTEMPTS_COUNTER,
        "outcome",
        [
            "success",
            "failure",
            "rate_limited",
            "client_error",
            "context_length",
            "skipped",
        ],
    )
}

/// Marks a response the fallback will not return, so observers see `Abandoned`.
fn abandon(resp: &Response<Body>) {
    if let Some(f) = resp.extensions().get::<ResponseFacts>() {
        f.completion.abandon();
    }
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Adds `x-rampart-attempts` and `x-rampart-model` to a response.
fn decorate(mut resp: Response<Body>, attempts: u32, alias: &str) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(X_RAMPART_ATTEMPTS, count_value(u64::from(attempts)));
    // Usually the upstream already set this very value: kept without a new allocation.
    insert_str(h, X_RAMPART_MODEL, alias);
    resp
}

/// Adds the same headers to a core error (other errors are returned unchanged).
fn attach(e: BoxError, attempts: u32, alias: Option<&str>) -> BoxError {
    match e.downcast::<Error>() {
        Ok(err) => Box::new(with_headers(*err, attempts, alias)),
        Err(e) => e,
    }
}

fn with_headers(err: Error, attempts: u32, alias: Option<&str>) -> Error {
    let err = err.with_header(X_RAMPART_ATTEMPTS, count_value(u64::from(attempts)));
    match alias.and_then(header_value) {
        Some(v) => err.with_header(X_RAMPART_MODEL, v),
        None => err,
    }
}

fn deadline_error() -> BoxError {
    Box::new(Error::new(
        ErrorKind::UpstreamTimeout,
        "The upstream did not answer before the request's deadline.",
    ))
}

/// One call to the inner service, bounded by the deadline.
async fn call_inner<S>(
    svc: S,
    ready: bool,
    req: Request<Body>,
    deadline: Instant,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let fut = async move {
        let mut svc = svc;
        if !ready {
            ServiceExt::<Request<Body>>::ready(&mut svc)
                .await
                .map_err(Into::into)?;
        }
        svc.call(req).await.map_err(Into::into)
    };
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(deadline_error()),
    }
}

/// What one attempt came to.
enum Outcome {
    /// Refused by a per-target layer before any upstream call.
    Refused(BoxError),
    /// Served (a stream past its commit point).
    Served(Response<Body>),
    /// Answered and not to be retried (other 4xx, errors that say nothing about the upstream).
    Final(Result<Response<Body>, BoxError>),
    /// A `400 context_length_exceeded` (body buffered).
    ContextLength(Response<Body>),
    /// The upstream failed (5xx, connect error, timeout, a stream broken before content).
    Failed {
        status: StatusCode,
        retry_after: Option<Duration>,
        summary: String,
        cause: String,
    },
    /// The upstream answered 429.
    RateLimited {
        retry_after: Option<Duration>,
        answer: Result<Response<Body>, BoxError>,
    },
}

fn failed_from_error(e: &BoxError) -> Outcome {
    let core = find_error(e);
    Outcome::Failed {
        status: core
            .map(Error::status)
            .filter(StatusCode::is_server_error)
            .unwrap_or(StatusCode::BAD_GATEWAY),
        retry_after: core.and_then(Error::retry_after),
        // A core error's message is client-facing; a foreign error's may name hosts.
        summary: core.map_or_else(
            || "the upstream could not be reached".to_owned(),
            |c| c.message().to_owned(),
        ),
        cause: e.to_string(),
    }
}

#[derive(Deserialize)]
struct LooseErrorBody {
    error: Option<LooseError>,
}

#[derive(Deserialize)]
struct LooseError {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    kind: Option<serde_json::Value>,
}

fn is_context_length(body: &[u8]) -> bool {
    const CODE: &str = "context_length_exceeded";
    serde_json::from_slice::<LooseErrorBody>(body)
        .ok()
        .and_then(|b| b.error)
        .is_some_and(|e| {
            e.code.as_ref().and_then(|v| v.as_str()) == Some(CODE)
                || e.kind.as_ref().and_then(|v| v.as_str()) == Some(CODE)
        })
}

/// Buffers a small error body (the response is rebuilt around the bytes).
async fn buffer(resp: Response<Body>, deadline: Instant) -> (Response<Body>, Option<Bytes>) {
    let (parts, body) = resp.into_parts();
    if let Some(b) = body.to_bytes() {
        return (Response::from_parts(parts, body), Some(b));
    }
    let status = parts.status;
    match tokio::time::timeout_at(deadline, body.collect_limited(MAX_ERROR_BODY)).await {
        Ok(Ok(b)) => (
            Response::from_parts(parts, Body::from_bytes(b.clone())),
            Some(b),
        ),
        _ => {
            let err = Error::new(
                ErrorKind::UpstreamStatus {
                    status,
                    kind: None,
                    code: None,
                },
                "The upstream rejected the request.",
            );
            (Response::from_parts(parts, Body::json(&err.body())), None)
        }
    }
}

/// Classifies one attempt with the shared classifier; holds streams until their commit point.
async fn classify(
    result: Result<Response<Body>, BoxError>,
    commit: CommitConfig,
    deadline: Instant,
    context_length: bool,
) -> Outcome {
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            if find_error(&e).is_some_and(Error::is_refusal) {
                return Outcome::Refused(e);
            }
            return match classify_error(&e) {
                Verdict::Failure => failed_from_error(&e),
                Verdict::RateLimited { retry_after } => Outcome::RateLimited {
                    retry_after,
                    answer: Err(e),
                },
                Verdict::Success | Verdict::Ignored => Outcome::Final(Err(e)),
            };
        }
    };
    let status = resp.status();
    match classify_status(status, resp.headers()) {
        Verdict::Success => {
            let started = resp
                .extensions()
                .get::<ResponseFacts>()
                .map_or_else(Instant::now, |f| f.completion.started());
            let commit = CommitConfig {
                first_token_timeout: commit
                    .first_token_timeout
                    .min(deadline.saturating_duration_since(started)),
                ..commit
            };
            match commit_stream(resp, commit).await {
                Ok(resp) => Outcome::Served(resp),
                Err(e) => failed_from_error(&(Box::new(e) as BoxError)),
            }
        }
        Verdict::Failure => {
            let ra = retry_after(resp.headers());
            abandon(&resp);
            Outcome::Failed {
                status,
                retry_after: ra,
                summary: format!("HTTP {}", status.as_u16()),
                cause: format!("upstream answered HTTP {}", status.as_u16()),
            }
        }
        Verdict::RateLimited { retry_after } => Outcome::RateLimited {
            retry_after,
            answer: Ok(resp),
        },
        Verdict::Ignored if context_length && status == StatusCode::BAD_REQUEST => {
            let (resp, bytes) = buffer(resp, deadline).await;
            if bytes.as_deref().is_some_and(is_context_length) {
                Outcome::ContextLength(resp)
            } else {
                Outcome::Final(Ok(resp))
            }
        }
        Verdict::Ignored => Outcome::Final(Ok(resp)),
    }
}

/// The last attempted outcome that may become the answer.
enum Last {
    Failed {
        status: StatusCode,
        summary: String,
        cause: String,
        alias: Arc<str>,
    },
    RateLimited {
        answer: Result<Response<Body>, BoxError>,
        alias: Arc<str>,
    },
    ClientError {
        resp: Response<Body>,
        alias: Arc<str>,
    },
}

impl Last {
    fn discard(self) {
        match self {
            Last::RateLimited { answer: Ok(r), .. } | Last::ClientError { resp: r, .. } => {
                abandon(&r);
            }
            Last::Failed { .. } | Last::RateLimited { .. } => {}
        }
    }
}

/// What a request has gone through so far.
#[derive(Default)]
struct Tally {
    attempts: u32,
    last: Option<Last>,
    /// The smallest `Retry-After` seen (responses and refusals).
    min_retry_after: Option<Duration>,
    /// The most informative refusal: the smallest `Retry-After`, else the first.
    refusal: Option<(BoxError, Option<Duration>)>,
}

impl Tally {
    fn note_retry_after(&mut self, ra: Option<Duration>) {
        if let Some(ra) = ra {
            self.min_retry_after = Some(self.min_retry_after.map_or(ra, |m| m.min(ra)));
        }
    }

    fn set_last(&mut self, last: Last) {
        if let Some(old) = self.last.replace(last) {
            old.discard();
        }
    }

    fn discard(&mut self) {
        if let Some(old) = self.last.take() {
            old.discard();
        }
    }

    fn refused(&mut self, e: BoxError) {
        let ra = find_error(&e).and_then(Error::retry_after);
        self.note_retry_after(ra);
        let better = match (&self.refusal, ra) {
            (None, _) => true,
            (Some((_, None)), Some(_)) => true,
            (Some((_, Some(old))), Some(new)) => new < *old,
            (Some(_), None) => false,
        };
        if better {
            self.refusal = Some((e, ra));
        }
    }

    /// The answer when no attempt succeeded; see the crate docs.
    fn finish(self) -> Result<Response<Body>, BoxError> {
        let attempts = self.attempts;
        if attempts == 0
            && let Some((e, _)) = self.refusal
        {
            return Err(attach(e, 0, None));
        }
        match self.last {
            Some(Last::ClientError { resp, alias }) => Ok(decorate(resp, attempts, &alias)),
            Some(Last::RateLimited {
                answer: Ok(mut resp),
                alias,
            }) => {
                if let Some(ra) = self.min_retry_after {
                    let h = resp.headers_mut();
                    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(ra)));
                    h.insert(
                        RETRY_AFTER_MS,
                        HeaderValue::from(u64::try_from(ra.as_millis()).unwrap_or(u64::MAX)),
                    );
                }
                Ok(decorate(resp, attempts, &alias))
            }
            Some(Last::RateLimited {
                answer: Err(e),
                alias,
            }) => {
                let e: BoxError = match e.downcast::<Error>() {
                    Ok(err) => {
                        let err = match self.min_retry_after {
                            Some(ra) => err.with_retry_after(ra),
                            None => *err,
                        };
                        Box::new(err)
                    }
                    Err(e) => e,
                };
                Err(attach(e, attempts, Some(&alias)))
            }
            Some(Last::Failed {
                status,
                summary,
                cause,
                alias,
            }) => Err(Box::new(all_failed(
                status,
                attempts,
                &summary,
                cause,
                self.min_retry_after,
                Some(&alias),
            ))),
            None => Err(Box::new(all_failed(
                StatusCode::BAD_GATEWAY,
                attempts,
                "no candidate could be tried",
                "no candidate could be tried".to_owned(),
                self.min_retry_after,
                None,
            ))),
        }
    }
}

fn all_failed(
    status: StatusCode,
    attempts: u32,
    summary: &str,
    cause: String,
    retry_after: Option<Duration>,
    alias: Option<&str>,
) -> Error {
    let plural = if attempts == 1 { "" } else { "s" };
    let err = Error::new(
        ErrorKind::AllCandidatesFailed { status, attempts },
        format!(
            "The request failed after {attempts} upstream attempt{plural}; the last error: {summary}"
        ),
    )
    .with_cause(cause);
    let err = match retry_after {
        Some(ra) => err.with_retry_after(ra),
        None => err,
    };
    with_headers(err, attempts, alias)
}

/// Whether another attempt on the same candidate may start after `delay`.
fn may_retry(shared: &Shared, tally: &Tally, deadline: Instant, delay: Duration) -> bool {
    if tally.attempts >= shared.config.max_attempts {
        return false;
    }
    if Instant::now() + delay >= deadline {
        return false;
    }
    withdraw(shared)
}

fn withdraw(shared: &Shared) -> bool {
    if shared.budget.try_withdraw() {
        true
    } else {
        metrics::counter!(BUDGET_EXHAUSTED_COUNTER).increment(1);
        tracing::debug!(target: "rampart::fallback", "retry budget exhausted");
        false
    }
}

/// The delay before the `retry`-th retry (from 0) on the same candidate.
fn delay(shared: &Shared, retry: u32, upstream: Option<Duration>) -> Duration {
    let b = shared.config.backoff;
    let ceiling = backoff_ceiling(b.base, b.cap, retry);
    let d = shared.jitter.jitter(ceiling).min(ceiling);
    upstream.map_or(d, |ra| d.max(ra))
}

async fn run<S>(
    first: S,
    shared: Arc<Shared>,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let deadline = Instant::now() + shared.config.deadline;
    let (req, chat) = match ensure_chat_request(req, EdgeConfig::default()).await {
        Ok(v) => v,
        Err(e) => return Err(Box::new(with_headers(e, 0, None))),
    };
    let (parts, _body) = req.into_parts();
    let mut steps = plan(&shared, &parts.extensions, &chat);
    shared.budget.deposit();

    let template = first.clone();
    let mut first = Some(first);
    let mut tally = Tally::default();
    let mut i = 0usize;
    // Retries made on candidate `i`.
    let mut retries = 0u32;
    // Whether the next call has been paid for from the retry budget.
    let mut paid = false;
    let config = &shared.config;

    while let Some(step) = steps.get_mut(i) {
        if tally.attempts >= config.max_attempts || Instant::now() >= deadline {
            break;
        }
        if tally.attempts > 0 && !paid {
            if !withdraw(&shared) {
                break;
            }
            paid = true;
        }
        let req = build_request(&parts, &chat, step);
        let alias = step.alias.clone();
        let (svc, ready) = match first.take() {
            Some(s) => (s, true),
            None => (template.clone(), false),
        };
        let result = call_inner(svc, ready, req, deadline).await;
        let larger = if config.context_length_fallback {
            larger_window(&steps, i)
        } else {
            None
        };
        let outcome = classify(result, shared.commit, deadline, larger.is_some()).await;
        let was_paid = std::mem::take(&mut paid);
        let is_last = i + 1 >= steps.len();
        match outcome {
            Outcome::Refused(e) => {
                if was_paid {
                    shared.budget.refund();
                }
                shared.attempts.increment("skipped");
                tracing::debug!(target: "rampart::fallback", candidate = %alias, error = %e, "candidate refused; skipped");
                tally.refused(e);
                i += 1;
                retries = 0;
            }
            Outcome::Served(resp) => {
                tally.attempts += 1;
                shared.attempts.increment("success");
                tally.discard();
                return Ok(decorate(resp, tally.attempts, &alias));
            }
            Outcome::Final(answer) => {
                tally.attempts += 1;
                shared.attempts.increment("client_error");
                tally.discard();
                return match answer {
                    Ok(resp) => Ok(decorate(resp, tally.attempts, &alias)),
                    Err(e) => Err(attach(e, tally.attempts, Some(&alias))),
                };
            }
            Outcome::ContextLength(resp) => {
                tally.attempts += 1;
                shared.attempts.increment("context_length");
                let Some(j) = larger else {
                    tally.discard();
                    return Ok(decorate(resp, tally.attempts, &alias));
                };
                tracing::debug!(target: "rampart::fallback", candidate = %alias, "context length exceeded; moving to a larger window");
                tally.set_last(Last::ClientError { resp, alias });
                i = j;
                retries = 0;
            }
            Outcome::Failed {
                status,
                retry_after,
                summary,
                cause,
            } => {
                tally.attempts += 1;
                shared.attempts.increment("failure");
                tracing::debug!(target: "rampart::fallback", candidate = %alias, %status, %cause, "attempt failed");
                tally.note_retry_after(retry_after);
                tally.set_last(Last::Failed {
                    status,
                    summary,
                    cause,
                    alias,
                });
                if retries < config.retries_per_candidate || is_last {
                    let wait = delay(&shared, retries, retry_after);
                    if !is_last && Instant::now() + wait >= deadline {
                        // This candidate's wait does not fit; the next one needs none.
                        i += 1;
                        retries = 0;
                        continue;
                    }
                    if !may_retry(&shared, &tally, deadline, wait) {
                        break;
                    }
                    paid = true;
                    tokio::time::sleep(wait).await;
                    retries += 1;
                } else {
                    i += 1;
                    retries = 0;
                }
            }
            Outcome::RateLimited {
                retry_after,
                answer,
            } => {
                tally.attempts += 1;
                shared.attempts.increment("rate_limited");
                tracing::debug!(target: "rampart::fallback", candidate = %alias, ?retry_after, "rate limited upstream");
                tally.note_retry_after(retry_after);
                tally.set_last(Last::RateLimited { answer, alias });
                if is_last {
                    let wait = delay(&shared, retries, retry_after);
                    if !may_retry(&shared, &tally, deadline, wait) {
                        break;
                    }
                    paid = true;
                    tokio::time::sleep(wait).await;
                    retries += 1;
                } else {
                    i += 1;
                    retries = 0;
                }
            }
        }
    }
    tally.finish()
}
